# A real deployment of Strata on AWS: a cluster of three brokers (each a
# metadata voter, each partition on three of them by default) in an existing
# VPC, named broker-<id>.<dns_domain> in an existing Route 53 private zone,
# their tier bucket, and an internal bootstrap load balancer.
#
#   cp terraform.tfvars.example terraform.tfvars   # then edit it
#   terraform init && terraform apply
#
# docs/deploy.md walks through it.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project = "strata"
    }
  }
}

module "strata" {
  source = "../../modules/strata-cluster"

  name       = var.name
  vpc_id     = var.vpc_id
  subnet_ids = var.subnet_ids

  broker_count         = var.broker_count
  instance_type        = var.instance_type
  data_volume_size_gib = var.data_volume_size_gib

  # The brokers reach each other's controller listeners by these names.
  route53_zone_id = var.route53_zone_id
  dns_domain      = var.dns_domain

  strata_artifact_url    = var.strata_artifact_url
  strata_artifact_sha256 = var.strata_artifact_sha256

  client_cidrs = var.client_cidrs
  admin_cidrs  = var.admin_cidrs

  # Listener security (docs/deploy.md, "Security"): clients on a SASL_SSL
  # listener on 9094, TLS certificate and SCRAM passwords from Secrets
  # Manager, and the ACL authorizer.
  # tls = {
  #   enabled                = true
  #   certificate_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-cert-AbC123"
  #   private_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-key-DeF456"
  # }
  # sasl = {
  #   mechanisms  = ["SCRAM-SHA-512"]
  #   scram_users = { admin = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/admin-GhI789" }
  # }
  # authorizer  = "acl"
  # super_users = ["User:admin"]
}

output "bootstrap_servers" {
  description = "bootstrap.servers for Kafka clients."
  value       = module.strata.bootstrap_servers
}

output "client_security_protocol" {
  description = "security.protocol for Kafka clients."
  value       = module.strata.client_security_protocol
}

output "bucket_name" {
  description = "The tier bucket."
  value       = module.strata.bucket_name
}

output "broker_addresses" {
  description = "Advertised Kafka address of each broker, node id order."
  value       = module.strata.broker_addresses
}

output "controller_quorum_voters" {
  description = "The metadata voters the brokers run with."
  value       = module.strata.controller_quorum_voters
}

output "admin_endpoints" {
  description = "Prometheus scrape targets (/metrics) of the brokers."
  value       = module.strata.admin_endpoints
}
