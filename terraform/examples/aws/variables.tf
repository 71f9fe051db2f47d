variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the cluster (prefix of every resource)."
  type        = string
  default     = "strata-demo"
}

variable "vpc_id" {
  description = "Existing VPC for the brokers."
  type        = string
}

variable "subnet_ids" {
  description = "Existing private subnets of vpc_id with a route to S3 (NAT gateway or S3 gateway endpoint)."
  type        = list(string)
}

variable "broker_count" {
  description = "Number of brokers: the first three are the metadata voters, more join as learners."
  type        = number
  default     = 3
}

variable "route53_zone_id" {
  description = "Existing Route 53 private hosted zone associated with vpc_id, for the names broker-<id>.<dns_domain> and bootstrap.<dns_domain>."
  type        = string
}

variable "dns_domain" {
  description = "Domain of route53_zone_id under which the broker records go, for example kafka.internal.example.com."
  type        = string
}

variable "instance_type" {
  description = "Broker instance type (x86_64)."
  type        = string
  default     = "m7i.large"
}

variable "data_volume_size_gib" {
  description = "Hot-tier gp3 volume size in GiB."
  type        = number
  default     = 200
}

variable "strata_artifact_url" {
  description = "https:// or s3:// URL of a linux x86_64 strata binary (cargo build --release)."
  type        = string
}

variable "strata_artifact_sha256" {
  description = "SHA-256 of that binary (sha256sum target/release/strata)."
  type        = string
}

variable "client_cidrs" {
  description = "CIDRs of the Kafka clients, for example the VPC's CIDR."
  type        = list(string)
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach /health, /ready and /metrics (Prometheus)."
  type        = list(string)
  default     = []
}
