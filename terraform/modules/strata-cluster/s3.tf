# The tier bucket: SSE-KMS by default, public access blocked, ACLs off,
# TLS-only, incomplete multipart uploads aborted.

resource "aws_s3_bucket" "tier" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice with its own bucket, key and cost; the tier's durability is S3's within one region, as for any single-region Kafka cluster.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket event notifications; the brokers track objects through their manifests.
  #checkov:skip=CKV_AWS_18:Access logging is opt-in through var.access_log_bucket (aws_s3_bucket_logging below); the target bucket is account infrastructure this module cannot create.
  bucket        = var.bucket_name
  bucket_prefix = var.bucket_name == null ? "${var.name}-tier-" : null
  force_destroy = var.force_destroy_bucket
  tags          = local.tags
}

resource "aws_s3_bucket_ownership_controls" "tier" {
  bucket = aws_s3_bucket.tier.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "tier" {
  bucket = aws_s3_bucket.tier.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "tier" {
  bucket = aws_s3_bucket.tier.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.kms_key_arn
    }
    # One data key per bucket instead of one KMS call per object.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "tier" {
  bucket = aws_s3_bucket.tier.id

  versioning_configuration {
    status = var.bucket_versioning ? "Enabled" : "Suspended"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "tier" {
  bucket = aws_s3_bucket.tier.id

  # Parts of a multipart upload that a broker started and never completed
  # (it crashed, or lost leadership mid-upload) are invisible but billed.
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }

  # Replaced manifests and deleted segments linger as noncurrent versions.
  rule {
    id     = "expire-noncurrent-versions"
    status = var.bucket_versioning ? "Enabled" : "Disabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.tier]
}

resource "aws_s3_bucket_logging" "tier" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.tier.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3/${var.name}-tier/"
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.tier.arn, "${aws_s3_bucket.tier.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyTlsBelow12"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.tier.arn, "${aws_s3_bucket.tier.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }

  # Objects that name an encryption must name this bucket's key; objects that
  # name none get the bucket default (SSE-KMS with the same key).
  statement {
    sid       = "DenyOtherEncryption"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.tier.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }
  }

  statement {
    sid       = "DenyOtherKmsKey"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.tier.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [local.kms_key_arn]
    }
  }
}

resource "aws_s3_bucket_policy" "tier" {
  bucket = aws_s3_bucket.tier.id
  policy = data.aws_iam_policy_document.bucket.json

  # A bucket policy is refused while public access blocking is being set up.
  depends_on = [aws_s3_bucket_public_access_block.tier]
}
