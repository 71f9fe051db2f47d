# A minimal real deployment of Strata on AWS: one broker in an existing VPC,
# its tier bucket, and an internal bootstrap load balancer.
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

  broker_count         = 1
  instance_type        = var.instance_type
  data_volume_size_gib = var.data_volume_size_gib

  strata_artifact_url    = var.strata_artifact_url
  strata_artifact_sha256 = var.strata_artifact_sha256

  client_cidrs = var.client_cidrs
  admin_cidrs  = var.admin_cidrs
}

output "bootstrap_servers" {
  description = "bootstrap.servers for Kafka clients."
  value       = module.strata.bootstrap_servers
}

output "bucket_name" {
  description = "The tier bucket."
  value       = module.strata.bucket_name
}

output "admin_endpoints" {
  description = "Prometheus scrape targets (/metrics) of the brokers."
  value       = module.strata.admin_endpoints
}
