# The strata-cluster module against LocalStack, to try a plan and apply
# without an AWS account:
#
#   tflocal init && tflocal apply          # or plain terraform: the provider
#                                          # below already points at LocalStack
#
# LocalStack mocks EC2, ELBv2, IAM, KMS, Route 53 and CloudWatch Logs
# (instances do not boot, so user data never runs) and implements S3 for
# real: the bucket, its encryption, lifecycle and policy can be inspected
# with awslocal. The module is called as for a real cluster: three brokers,
# named in a private zone.

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
  region     = "us-east-1"
  access_key = "test" # LocalStack accepts any credentials
  secret_key = "test" #checkov:skip=CKV_AWS_41:LocalStack's documented dummy credentials, not a secret
  # tflocal rewrites these endpoints itself; plain terraform uses them as is.
  s3_use_path_style           = true
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true

  endpoints {
    ec2     = var.localstack_endpoint
    elbv2   = var.localstack_endpoint
    iam     = var.localstack_endpoint
    kms     = var.localstack_endpoint
    logs    = var.localstack_endpoint
    route53 = var.localstack_endpoint
    s3      = var.localstack_endpoint
    ssm     = var.localstack_endpoint
    sts     = var.localstack_endpoint
  }
}

variable "localstack_endpoint" {
  description = "LocalStack gateway URL."
  type        = string
  default     = "http://localhost:4566"
}

# LocalStack's default VPC and its subnets.
data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
}

# The private zone in which the brokers find each other by name.
locals {
  dns_domain = "strata.internal"
}

resource "aws_route53_zone" "cluster" {
  name = local.dns_domain

  vpc {
    vpc_id = data.aws_vpc.default.id
  }
}

module "strata" {
  #checkov:skip=CKV_AWS_150:A throwaway LocalStack environment must be destroyable; the module's default keeps deletion protection on.
  source = "../../modules/strata-cluster"

  name         = "strata-local"
  vpc_id       = data.aws_vpc.default.id
  subnet_ids   = slice(sort(data.aws_subnets.default.ids), 0, 2)
  broker_count = 3

  route53_zone_id = aws_route53_zone.cluster.zone_id
  dns_domain      = local.dns_domain

  # An image id LocalStack's EC2 mock knows; no SSM lookup.
  ami_id        = "ami-df5de72bdb3b"
  instance_type = "t3.small"

  data_volume_size_gib = 10

  # Never fetched: LocalStack does not boot instances.
  strata_artifact_url    = "https://artifacts.example.invalid/strata"
  strata_artifact_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

  client_cidrs = [data.aws_vpc.default.cidr_block]
  admin_cidrs  = [data.aws_vpc.default.cidr_block]

  # Throwaway environment: let terraform destroy clean up.
  force_destroy_bucket              = true
  load_balancer_deletion_protection = false
  kms_key_deletion_window_days      = 7
  enable_ssm                        = false
}

output "bootstrap_servers" {
  description = "Bootstrap address (a LocalStack placeholder; nothing listens there)."
  value       = module.strata.bootstrap_servers
}

output "bucket_name" {
  description = "The tier bucket, inspectable with: awslocal s3api get-bucket-encryption --bucket <name>."
  value       = module.strata.bucket_name
}

output "tier_url" {
  description = "Tier URL a local broker can use against LocalStack (with AWS_ENDPOINT_URL=http://localhost:4566)."
  value       = module.strata.tier_url
}
