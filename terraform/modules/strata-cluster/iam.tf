# The brokers' role: objects under the tier prefix, the KMS key through S3
# only, the cluster's log group, the one binary object (when it is
# downloaded from S3) and the Secrets Manager secrets of the listeners'
# security (when any is given). Nothing else.

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "broker" {
  name_prefix        = "${var.name}-broker-"
  description        = "Strata brokers of cluster ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

data "aws_iam_policy_document" "broker" {
  # Listing is limited to keys under the prefix.
  statement {
    sid       = "ListTierPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.tier.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.tier_prefix, "${var.tier_prefix}/*"]
    }
  }

  # Segments and manifests: write (including multipart and conditional PUTs),
  # ranged reads, removal of expired and orphaned objects.
  statement {
    sid    = "ReadWriteTierObjects"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.tier.arn}/${var.tier_prefix}/*"]
  }

  # SSE-KMS: S3 asks KMS on the broker's behalf; the key is usable for
  # nothing else through this role.
  statement {
    sid       = "UseTierKeyThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }

  # The CloudWatch agent ships the broker log into the cluster's log group.
  statement {
    sid    = "WriteBrokerLogs"
    effect = "Allow"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = ["${aws_cloudwatch_log_group.broker.arn}:*"]
  }

  dynamic "statement" {
    for_each = length(local.artifact_s3_arns) > 0 ? [1] : []

    content {
      sid       = "DownloadStrataBinary"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = local.artifact_s3_arns
    }
  }

  # TLS certificates and keys, the PLAIN users file and the SCRAM users'
  # passwords: exactly the secrets named in var.tls and var.sasl, read once
  # at first boot.
  dynamic "statement" {
    for_each = length(local.secret_arns) > 0 ? [1] : []

    content {
      sid       = "ReadListenerSecrets"
      effect    = "Allow"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secret_arns
    }
  }
}

resource "aws_iam_role_policy" "broker" {
  name   = "strata-tier"
  role   = aws_iam_role.broker.id
  policy = data.aws_iam_policy_document.broker.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  count = var.enable_ssm ? 1 : 0

  role       = aws_iam_role.broker.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "broker" {
  name_prefix = "${var.name}-broker-"
  role        = aws_iam_role.broker.name
  tags        = local.tags
}
