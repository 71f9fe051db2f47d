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

  # Listener security. Without tls or sasl, one PLAINTEXT listener on 9092
  # serves clients and brokers alike. With either, clients get a listener of
  # their own on client_listener_port (SSL, SASL_PLAINTEXT or SASL_SSL, named
  # after its protocol), and 9092 stays PLAINTEXT for replication between
  # the brokers, open to the cluster's own members only.
  sasl_enabled    = length(var.sasl.mechanisms) > 0
  client_protocol = var.tls.enabled ? (local.sasl_enabled ? "SASL_SSL" : "SSL") : (local.sasl_enabled ? "SASL_PLAINTEXT" : "PLAINTEXT")
  client_port     = local.client_protocol == "PLAINTEXT" ? local.kafka_port : var.client_listener_port

  # TLS and SASL files, under /etc/strata/security on each broker, readable
  # by the strata user only. Each comes from a Secrets Manager secret fetched
  # at boot or, for the PEMs, inline through the user data.
  security_dir = "/etc/strata/security"
  security_secret_arns = {
    "broker.pem"       = var.tls.certificate_secret_arn
    "broker.key"       = var.tls.private_key_secret_arn
    "client-ca.pem"    = var.tls.client_ca_secret_arn
    "plain-users.toml" = var.sasl.plain_users_secret_arn
  }
  # Only whether a PEM is given inline is public; the PEMs stay sensitive.
  security_inline = {
    for file, pem in {
      "broker.pem"    = var.tls_pem.certificate
      "broker.key"    = var.tls_pem.private_key
      "client-ca.pem" = var.tls_pem.client_ca
    } : file => base64encode(pem) if nonsensitive(pem != null)
  }
  security_files = setunion(keys(local.security_inline), [for file, arn in local.security_secret_arns : file if arn != null])

  # Principals the authorizer lets do anything: User:ANONYMOUS is the
  # brokers' own PLAINTEXT listener (followers fetching, strata commands on a
  # broker), which the security group keeps to the cluster's members.
  super_users = var.authorizer == "acl" ? distinct(concat(["User:ANONYMOUS"], var.super_users)) : []

  # Broker settings of the security, as STRATA_* lines of
  # /etc/strata/strata.env (flags and environment beat strata.toml).
  security_env = concat(
    contains(local.security_files, "broker.pem") ? [
      "STRATA_SSL_CERTIFICATE_FILE=${local.security_dir}/broker.pem",
      "STRATA_SSL_KEY_FILE=${local.security_dir}/broker.key",
    ] : [],
    contains(local.security_files, "client-ca.pem") ? ["STRATA_SSL_CLIENT_CA_FILE=${local.security_dir}/client-ca.pem"] : [],
    var.tls.client_auth != "none" ? ["STRATA_SSL_CLIENT_AUTH=${var.tls.client_auth}"] : [],
    local.sasl_enabled ? ["STRATA_SASL_ENABLED_MECHANISMS=${join(",", var.sasl.mechanisms)}"] : [],
    contains(local.security_files, "plain-users.toml") ? ["STRATA_SASL_PLAIN_USERS_FILE=${local.security_dir}/plain-users.toml"] : [],
    var.authorizer == "acl" ? ["STRATA_AUTHORIZER=acl", "STRATA_SUPER_USERS=${join(";", local.super_users)}"] : [],
    var.authorizer == "acl" && var.allow_everyone_if_no_acl_found ? ["STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND=true"] : [],
  )

  # The secrets to fetch, as FILE=ARN words.
  security_secrets = join(" ", [for file, arn in local.security_secret_arns : "${file}=${arn}" if arn != null])

  # SCRAM users broker 1 creates at boot, as NAME=ARN words, and the SCRAM
  # mechanisms it gives them.
  scram_users      = join(" ", [for name in sort(keys(var.sasl.scram_users)) : "${name}=${var.sasl.scram_users[name]}"])
  scram_mechanisms = join(" ", [for m in var.sasl.mechanisms : m if m != "PLAIN"])

  # Every secret a broker reads, and so the only ones its role may read.
  secret_arns = distinct(concat(
    [for file, arn in local.security_secret_arns : arn if arn != null],
    [for name in sort(keys(var.sasl.scram_users)) : var.sasl.scram_users[name]],
  ))

  tags = merge(var.tags, {
    "strata:cluster" = var.name
    "managed-by"     = "terraform"
  })
}
