# The KMS key for the tier bucket, the EBS volumes and the log group, unless
# one is passed in as var.kms_key_arn.

data "aws_iam_policy_document" "kms" {
  count = var.kms_key_arn == null ? 1 : 0

  # The account administers the key and delegates its use to IAM policies
  # (the broker role's policy grants exactly the calls it needs).
  statement {
    sid       = "AccountAdministersKey"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" is this key

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts this cluster's log group, and nothing else, with it.
  statement {
    sid    = "CloudWatchLogsForThisLogGroup"
    effect = "Allow"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"] # in a key policy, "*" is this key

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = [local.log_group_arn]
    }
  }
}

resource "aws_kms_key" "tier" {
  count = var.kms_key_arn == null ? 1 : 0

  description             = "Strata cluster ${var.name}: tier bucket, broker volumes and logs"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_key_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms[0].json
  tags                    = local.tags
}

resource "aws_kms_alias" "tier" {
  count = var.kms_key_arn == null ? 1 : 0

  name          = "alias/strata-${var.name}"
  target_key_id = aws_kms_key.tier[0].key_id
}
