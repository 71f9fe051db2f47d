# strata-cluster: an S3 tier bucket, the IAM role that may use it, and
# broker instances with a gp3 hot-tier volume each, behind a security group
# and (optionally) a Network Load Balancer for bootstrap.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

data "aws_subnet" "broker" {
  count = length(var.subnet_ids)
  id    = var.subnet_ids[count.index]
}

locals {
  # Ports: Kafka, raft controller (cluster members only), admin HTTP.
  kafka_port      = 9092
  controller_port = 9093
  admin_port      = 9644

  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  ami_id = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.al2023[0].value)

  kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.tier[0].arn

  bucket_name = aws_s3_bucket.tier.id
  tier_url    = "s3://${aws_s3_bucket.tier.id}/${var.tier_prefix}"

  log_group_name = "/strata/${var.name}"
  # Built from the name rather than read from the resource, so the key policy
  # (which the log group depends on) can name it.
  log_group_arn = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}"

  # s3://bucket/key of the binary, when it is downloaded from S3.
  artifact_s3      = regex("^(?:s3://(?P<bucket>[^/]+)/(?P<key>.+))?", var.strata_artifact_url)
  artifact_s3_arns = local.artifact_s3.bucket == null ? [] : ["arn:${local.partition}:s3:::${local.artifact_s3.bucket}/${local.artifact_s3.key}"]

  # From dns_domain, not the zone id: the zone may be created in the same
  # apply, and record counts must be known at plan.
  use_dns = var.dns_domain != null

  # Several brokers form one cluster. The first three (all of them, when
  # fewer) are the metadata voters, reached by their DNS names on the
  # controller port (Kafka's controller.quorum.voters); the others follow the
  # metadata log as learners. So adding brokers to a cluster of three or more
  # leaves the voter list, and the running brokers' user data, as they are.
  # One broker runs alone.
  max_voters = 3

  brokers = [
    for i in range(var.broker_count) : {
      index     = i
      node_id   = i + 1
      subnet_id = var.subnet_ids[i % length(var.subnet_ids)]
      az        = data.aws_subnet.broker[i % length(var.subnet_ids)].availability_zone
      dns_name  = local.use_dns ? "broker-${i + 1}.${var.dns_domain}" : ""
      # "voter", "learner", or "" for a broker alone.
      controller_role = var.broker_count == 1 ? "" : i < local.max_voters ? "voter" : "learner"
    }
  ]

  controller_quorum_voters = join(",", [
    for b in local.brokers : "${b.node_id}@${b.dns_name}:${local.controller_port}" if b.controller_role == "voter"
  ])

  tags = merge(var.tags, {
    "strata:cluster" = var.name
    "managed-by"     = "terraform"
  })
}
