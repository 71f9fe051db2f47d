# Broker instances: fixed instances spread over the subnets (so each keeps a
# stable node id and its own hot-tier volume), each with a gp3 data volume
# that outlives the instance, started by cloud-init.

resource "aws_cloudwatch_log_group" "broker" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags

  # The key policy must allow CloudWatch Logs before the group can use it.
  depends_on = [aws_kms_key.tier]
}

# The hot tier. A separate volume, not part of the instance, so replacing a
# broker (new AMI, new strata version) keeps its log segments.
# No snapshot schedule: a snapshot of a live broker volume is not consistent
# with the log; sealed segments are in S3 and, in a cluster, the other
# replicas hold the tail.
resource "aws_ebs_volume" "data" {
  count = var.broker_count

  availability_zone = local.brokers[count.index].az
  type              = "gp3"
  size              = var.data_volume_size_gib
  iops              = var.data_volume_iops
  throughput        = var.data_volume_throughput_mibps
  encrypted         = true
  kms_key_id        = local.kms_key_arn
  tags              = merge(local.tags, { Name = "${var.name}-broker-${local.brokers[count.index].node_id}-data" })
}

resource "aws_instance" "broker" {
  count = var.broker_count

  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = local.brokers[count.index].subnet_id
  vpc_security_group_ids      = [aws_security_group.broker.id]
  iam_instance_profile        = aws_iam_instance_profile.broker.name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = var.enable_detailed_monitoring

  user_data_base64 = base64gzip(templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    node_id            = local.brokers[count.index].node_id
    data_volume_id     = aws_ebs_volume.data[count.index].id
    tier_url           = local.tier_url
    kms_key_arn        = local.kms_key_arn
    region             = local.region
    advertised_host    = local.brokers[count.index].dns_name
    kafka_port         = local.kafka_port
    admin_port         = local.admin_port
    controller_port    = local.controller_port
    controller_voters  = local.controller_quorum_voters
    controller_role    = local.brokers[count.index].controller_role
    client_protocol    = local.client_protocol
    client_port        = local.client_port
    security_env       = join("", [for line in local.security_env : "${line}\n"])
    security_files     = local.security_inline
    security_secrets   = local.security_secrets
    scram_users        = local.brokers[count.index].node_id == 1 ? local.scram_users : ""
    scram_mechanisms   = local.scram_mechanisms
    auto_create_topics = var.auto_create_topics
    num_partitions     = var.num_partitions
    replication_factor = var.default_replication_factor
    offsets_factor     = var.offsets_topic_replication_factor
    log_level          = var.log_level
    extra_config       = var.extra_config
    artifact_url       = var.strata_artifact_url
    artifact_sha256    = var.strata_artifact_sha256
    log_group_name     = local.log_group_name
    strata_service     = file("${path.module}/files/strata.service")
    strata_bootstrap   = file("${path.module}/files/strata-bootstrap.sh")
    cloudwatch_dropin  = file("${path.module}/files/cloudwatch.conf")
    strata_logrotate   = file("${path.module}/files/strata.logrotate")
  }))
  # Cloud-init runs once per instance: a new configuration or binary takes a
  # new instance. The data volume is re-attached to it.
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gib
    encrypted             = true
    kms_key_id            = local.kms_key_arn
    delete_on_termination = true
  }

  tags        = merge(local.tags, { Name = "${var.name}-broker-${local.brokers[count.index].node_id}", "strata:node-id" = tostring(local.brokers[count.index].node_id) })
  volume_tags = merge(local.tags, { Name = "${var.name}-broker-${local.brokers[count.index].node_id}-root" })

  lifecycle {
    # A newer Amazon Linux image must not replace every broker at once.
    ignore_changes = [ami]

    precondition {
      condition     = (var.route53_zone_id == null) == (var.dns_domain == null)
      error_message = "route53_zone_id and dns_domain are set together: the zone and the domain its broker records go under."
    }

    precondition {
      condition     = var.broker_count == 1 || var.dns_domain != null
      error_message = "A cluster of several brokers needs route53_zone_id and dns_domain: the brokers find each other's controller listeners by name."
    }

    precondition {
      condition     = var.default_replication_factor == null ? true : var.default_replication_factor <= var.broker_count
      error_message = "default_replication_factor cannot exceed broker_count: topics created without a replication factor would be refused."
    }

    # Listener security: each file from one source, nothing given that is
    # not used, an authorizer only where clients authenticate.
    precondition {
      condition     = !var.tls.enabled || ((var.tls.certificate_secret_arn != null) != (var.tls_pem.certificate != null) && (var.tls.private_key_secret_arn != null) != (var.tls_pem.private_key != null))
      error_message = "tls.enabled needs the certificate and the private key, each from one source: tls.certificate_secret_arn or tls_pem.certificate, tls.private_key_secret_arn or tls_pem.private_key."
    }

    precondition {
      condition     = var.tls.enabled || (var.tls.certificate_secret_arn == null && var.tls.private_key_secret_arn == null && var.tls.client_ca_secret_arn == null && var.tls.client_auth == "none" && var.tls_pem.certificate == null && var.tls_pem.private_key == null && var.tls_pem.client_ca == null)
      error_message = "Certificates, keys, a client CA or tls.client_auth are given but tls.enabled is false: set tls.enabled = true, or remove them."
    }

    precondition {
      condition     = !(var.tls.client_ca_secret_arn != null && var.tls_pem.client_ca != null) && (var.tls.client_auth == "none" || var.tls.client_ca_secret_arn != null || var.tls_pem.client_ca != null)
      error_message = "The client CA comes from one source, tls.client_ca_secret_arn or tls_pem.client_ca, and tls.client_auth requested or required needs it."
    }

    precondition {
      condition     = contains(var.sasl.mechanisms, "PLAIN") == (var.sasl.plain_users_secret_arn != null)
      error_message = "SASL mechanism PLAIN needs sasl.plain_users_secret_arn (the PLAIN users file), and sasl.plain_users_secret_arn needs PLAIN in sasl.mechanisms."
    }

    precondition {
      condition     = length(var.sasl.scram_users) == 0 || contains(var.sasl.mechanisms, "SCRAM-SHA-256") || contains(var.sasl.mechanisms, "SCRAM-SHA-512")
      error_message = "sasl.scram_users needs SCRAM-SHA-256 or SCRAM-SHA-512 in sasl.mechanisms."
    }

    precondition {
      condition     = var.authorizer != "acl" || length(var.sasl.mechanisms) > 0 || (var.tls.enabled && var.tls.client_auth == "required")
      error_message = "authorizer = acl needs a clients' listener on which every client authenticates: sasl.mechanisms, or tls with client_auth = required. Otherwise clients would connect as User:ANONYMOUS, a super user."
    }

    precondition {
      condition     = var.authorizer == "acl" || (length(var.super_users) == 0 && !var.allow_everyone_if_no_acl_found)
      error_message = "super_users and allow_everyone_if_no_acl_found apply only with authorizer = acl."
    }
  }
}

resource "aws_volume_attachment" "data" {
  count = var.broker_count

  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data[count.index].id
  instance_id = aws_instance.broker[count.index].id
  # Stop the broker cleanly (SIGTERM, fsync) before its volume goes away.
  stop_instance_before_detaching = true
}
