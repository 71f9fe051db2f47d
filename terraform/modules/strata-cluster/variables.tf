# Inputs of the strata-cluster module. docs/deploy.md explains each one and
# how to size the hot tier against the object-store tier.

# --- Naming and placement ----------------------------------------------------

variable "name" {
  description = "Name of the cluster. Prefixes every resource name and tag; also the default S3 bucket name prefix."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,29}$", var.name))
    error_message = "name must be 2-30 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC the brokers, their security group and the load balancer live in."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the brokers (and the load balancer), ideally one per availability zone. Broker N is placed in subnet_ids[(N-1) % length(subnet_ids)]."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must hold at least one subnet id like subnet-0123456789abcdef0."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

# --- Brokers -----------------------------------------------------------------

variable "broker_count" {
  description = "Number of broker instances; node ids are 1..broker_count. Several brokers form one cluster: brokers 1-3 are the metadata voters, any others follow the metadata log as learners, and they find each other by DNS name, so route53_zone_id and dns_domain are required. Topics created without a replication factor get min(3, running brokers) replicas (see default_replication_factor). The voters are fixed when the cluster is created: grow a cluster of three or more by adding learners; one or two brokers cannot be grown into a larger cluster yet."
  type        = number
  default     = 3

  validation {
    condition     = var.broker_count >= 1 && var.broker_count <= 64 && floor(var.broker_count) == var.broker_count
    error_message = "broker_count must be a whole number from 1 to 64."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the brokers. Must match architecture (for example m7i.large for x86_64, m7g.large for arm64)."
  type        = string
  default     = "m7i.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like m7i.large."
  }
}

variable "architecture" {
  description = "CPU architecture of the brokers: selects the Amazon Linux 2023 AMI when ami_id is null, and must match the strata binary at strata_artifact_url."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "ami_id" {
  description = "AMI of the brokers. Null picks the latest Amazon Linux 2023 image for architecture at plan time (later AMI releases do not replace running brokers). The user data expects a systemd distribution with cloud-init, curl and the AWS CLI."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]+$", var.ami_id))
    error_message = "ami_id must be null or look like ami-0123456789abcdef0."
  }
}

variable "root_volume_size_gib" {
  description = "Size of each broker's root volume (operating system, binary, logs) in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size_gib >= 8 && var.root_volume_size_gib <= 1024
    error_message = "root_volume_size_gib must be from 8 to 1024."
  }
}

variable "data_volume_size_gib" {
  description = "Size in GiB of each broker's gp3 data volume: the hot tier, mounted at /var/lib/strata. Size it for local retention (see docs/deploy.md), not for total retention, which lives in S3."
  type        = number
  default     = 500

  validation {
    condition     = var.data_volume_size_gib >= 10 && var.data_volume_size_gib <= 16384
    error_message = "data_volume_size_gib must be from 10 to 16384 (the gp3 limits, with a floor for a useful hot tier)."
  }
}

variable "data_volume_iops" {
  description = "Provisioned IOPS of each gp3 data volume (3000 is included in the gp3 price)."
  type        = number
  default     = 3000

  validation {
    condition     = var.data_volume_iops >= 3000 && var.data_volume_iops <= 16000
    error_message = "data_volume_iops must be from 3000 to 16000 (gp3 limits)."
  }
}

variable "data_volume_throughput_mibps" {
  description = "Provisioned throughput of each gp3 data volume in MiB/s (125 is included in the gp3 price). Produce plus fetch-from-disk plus upload reads must fit in it."
  type        = number
  default     = 250

  validation {
    condition     = var.data_volume_throughput_mibps >= 125 && var.data_volume_throughput_mibps <= 1000
    error_message = "data_volume_throughput_mibps must be from 125 to 1000 (gp3 limits)."
  }
}

variable "enable_detailed_monitoring" {
  description = "Turn on one-minute EC2 detailed monitoring for the brokers."
  type        = bool
  default     = true
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore to the broker role so operators reach brokers with Session Manager instead of SSH (the module opens no SSH port)."
  type        = bool
  default     = true
}

# --- The strata binary and its configuration ----------------------------------

variable "strata_artifact_url" {
  description = "Where each broker downloads the strata binary at first boot: an https:// URL or an s3://bucket/key object (the broker role is granted s3:GetObject on that one object)."
  type        = string

  validation {
    condition     = can(regex("^(https://|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/)[^\\s'\"]+$", var.strata_artifact_url))
    error_message = "strata_artifact_url must start with https:// or be an s3://bucket/key URL, without spaces or quotes."
  }
}

variable "strata_artifact_sha256" {
  description = "SHA-256 of the binary at strata_artifact_url (lowercase hex). The broker refuses to install a binary that does not match."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.strata_artifact_sha256))
    error_message = "strata_artifact_sha256 must be 64 lowercase hex digits."
  }
}

variable "auto_create_topics" {
  description = "Broker setting auto-create-topics (Kafka's auto.create.topics.enable)."
  type        = bool
  default     = false
}

variable "num_partitions" {
  description = "Broker setting num-partitions: partitions of an auto-created topic."
  type        = number
  default     = 3

  validation {
    condition     = var.num_partitions >= 1 && var.num_partitions <= 10000 && floor(var.num_partitions) == var.num_partitions
    error_message = "num_partitions must be a whole number from 1 to 10000."
  }
}

variable "default_replication_factor" {
  description = "Broker setting default-replication-factor: replicas of a topic created without a replication factor, auto-created topics included. Null keeps the broker's default, min(3, running brokers). At most broker_count."
  type        = number
  default     = null

  validation {
    condition     = var.default_replication_factor == null ? true : var.default_replication_factor >= 1 && floor(var.default_replication_factor) == var.default_replication_factor
    error_message = "default_replication_factor must be null or a whole number of at least 1."
  }
}

variable "offsets_topic_replication_factor" {
  description = "Broker setting offsets-topic-replication-factor: replicas of __consumer_offsets, which holds the consumer groups' committed offsets. The broker caps it at the cluster's size and creates the topic once that many brokers run. Null keeps the broker's default, 3."
  type        = number
  default     = null

  validation {
    condition     = var.offsets_topic_replication_factor == null ? true : var.offsets_topic_replication_factor >= 1 && floor(var.offsets_topic_replication_factor) == var.offsets_topic_replication_factor
    error_message = "offsets_topic_replication_factor must be null or a whole number of at least 1."
  }
}

variable "log_level" {
  description = "Broker setting log-level: error, warn, info, debug, trace, or a filter such as strata=debug."
  type        = string
  default     = "info"

  validation {
    condition     = can(regex("^[a-z_=,:0-9]+$", var.log_level))
    error_message = "log_level must be a level (error, warn, info, debug, trace) or a tracing filter like strata=debug,info."
  }
}

variable "extra_config" {
  description = "More keys for /etc/strata/strata.toml, as key = TOML literal, for example { \"log-segment-bytes\" = \"536870912\", \"log-retention-ms\" = \"-1\" }. Keys are the long flag names of strata serve; an unknown key stops the broker at start."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([for k, v in var.extra_config : can(regex("^[a-z][a-z0-9-]*$", k)) && !can(regex("[\\r\\n]", v)) && !contains([
      "data-dir", "listen", "advertised-listener", "admin-listen", "node-id", "tier-url", "log-format",
      "auto-create-topics", "num-partitions", "log-level", "controller-listen", "controller-quorum-voters",
      "default-replication-factor", "offsets-topic-replication-factor",
      "listeners", "advertised-listeners", "listener-security-protocol-map", "inter-broker-listener-name",
      "ssl-certificate-file", "ssl-key-file", "ssl-client-ca-file", "ssl-client-auth",
      "sasl-enabled-mechanisms", "sasl-plain-users-file", "authorizer", "super-users", "allow-everyone-if-no-acl-found",
    ], k)])
    error_message = "extra_config keys must be kebab-case flag names, values single-line TOML literals, and keys not ones the module sets itself (data-dir, listen, advertised-listener, admin-listen, node-id, tier-url, log-format, auto-create-topics, num-partitions, log-level, controller-listen, controller-quorum-voters, default-replication-factor, offsets-topic-replication-factor, and the listener security keys set by tls, tls_pem, sasl, client_listener_port, authorizer, super_users and allow_everyone_if_no_acl_found: listeners, advertised-listeners, listener-security-protocol-map, inter-broker-listener-name, ssl-*, sasl-enabled-mechanisms, sasl-plain-users-file, authorizer, super-users, allow-everyone-if-no-acl-found)."
  }
}

# --- Tier bucket and encryption ------------------------------------------------

variable "bucket_name" {
  description = "Name of the S3 bucket the module creates for the tier. Null lets AWS pick a unique name starting with \"<name>-tier-\"."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)."
  }
}

variable "tier_prefix" {
  description = "Key prefix inside the bucket under which the brokers write (tier URL s3://<bucket>/<tier_prefix>). The broker role can touch nothing outside it."
  type        = string
  default     = "strata"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.tier_prefix))
    error_message = "tier_prefix must be non-empty path segments of letters, digits, '.', '_' and '-', separated by single slashes, with no leading or trailing slash."
  }
}

variable "kms_key_arn" {
  description = "ARN of an existing KMS key for the bucket, the EBS volumes and the log group. Null creates a key with rotation on. A key passed in must let this account's IAM policies grant its use and let CloudWatch Logs use it for the log group."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-zA-Z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "kms_key_deletion_window_days" {
  description = "Waiting period before a key the module created is deleted after terraform destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_key_deletion_window_days >= 7 && var.kms_key_deletion_window_days <= 30
    error_message = "kms_key_deletion_window_days must be from 7 to 30."
  }
}

variable "bucket_versioning" {
  description = "Keep object versions in the tier bucket. Protects manifests and segments against an erroneous delete or overwrite; old versions expire after noncurrent_version_expiration_days."
  type        = bool
  default     = true
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which a noncurrent object version (a replaced manifest, a deleted segment) is removed when bucket_versioning is on."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which S3 aborts a multipart upload that was never completed (a broker that died mid-upload), so its parts stop costing storage."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_upload_days >= 1 && var.abort_incomplete_multipart_upload_days <= 30
    error_message = "abort_incomplete_multipart_upload_days must be from 1 to 30."
  }
}

variable "force_destroy_bucket" {
  description = "Let terraform destroy delete a bucket that still holds data. Leave false outside throwaway environments."
  type        = bool
  default     = false
}

variable "access_log_bucket" {
  description = "Name of an existing bucket that receives S3 server access logs for the tier bucket. Null turns access logging off."
  type        = string
  default     = null
}

# --- Network -------------------------------------------------------------------

variable "client_cidrs" {
  description = "IPv4 CIDRs of Kafka clients allowed to reach the clients' listener on the brokers and the load balancer: port 9092, or client_listener_port once tls or sasl secures it (9092 then serves the cluster's own brokers only). Empty by default: nothing outside the cluster connects until you list networks. 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.client_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "client_cidrs must be IPv4 CIDRs, and 0.0.0.0/0 is not allowed: list the networks of the Kafka clients."
  }
}

variable "admin_cidrs" {
  description = "IPv4 CIDRs allowed to reach the admin HTTP port 9644 (/health, /ready, /metrics), for example the Prometheus subnet. Empty by default. 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must be IPv4 CIDRs, and 0.0.0.0/0 is not allowed."
  }
}

variable "egress_cidrs" {
  description = "IPv4 CIDRs the brokers may reach on HTTPS (443): S3, KMS, CloudWatch Logs, SSM, the binary download and package repositories. Narrow it to VPC endpoint ranges where the VPC has them."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.egress_cidrs) > 0 && alltrue([for c in var.egress_cidrs : can(cidrhost(c, 0))])
    error_message = "egress_cidrs must hold at least one IPv4 CIDR."
  }
}

variable "create_load_balancer" {
  description = "Create a Network Load Balancer in front of all brokers as the bootstrap address, on the clients' listener port (9092, or client_listener_port with tls or sasl; TLS passes through to the brokers). Clients then connect to each broker's advertised address directly."
  type        = bool
  default     = true
}

variable "load_balancer_internal" {
  description = "Make the load balancer internal (reachable only inside the VPC and connected networks)."
  type        = bool
  default     = true
}

variable "load_balancer_deletion_protection" {
  description = "Turn on deletion protection for the load balancer; terraform destroy then fails until it is turned off."
  type        = bool
  default     = true
}

variable "load_balancer_access_log_bucket" {
  description = "Name of an existing bucket that receives the load balancer's access logs. Null turns them off."
  type        = string
  default     = null
}

variable "route53_zone_id" {
  description = "Route 53 (typically private) hosted zone for per-broker DNS names broker-<id>.<dns_domain> and bootstrap.<dns_domain>. Required for several brokers, which reach each other's controller listeners by these names. Null (one broker only) advertises the private IP address instead."
  type        = string
  default     = null
}

variable "dns_domain" {
  description = "Domain of route53_zone_id under which broker records are created, for example kafka.internal.example.com. Set together with route53_zone_id."
  type        = string
  default     = null

  validation {
    condition     = var.dns_domain == null || can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.dns_domain))
    error_message = "dns_domain must be a lowercase DNS name without a trailing dot."
  }
}

# --- Listener security -----------------------------------------------------------
# All off by default: one PLAINTEXT listener on 9092, no authorizer. With tls
# or sasl, clients get a listener of their own on client_listener_port and
# 9092 stays PLAINTEXT on the private network for the brokers' replication,
# open to the cluster's own members only. docs/deploy.md, "Security".

variable "tls" {
  description = "TLS on the clients' listener (SSL, or SASL_SSL together with sasl). enabled turns it on. The certificate chain (leaf first) and its private key, PEM, come from Secrets Manager, certificate_secret_arn and private_key_secret_arn (full secret ARNs whose SecretString is the PEM, fetched by each broker at first boot), or inline through tls_pem: one source for each. One certificate serves every broker, so it must name broker-<id>.<dns_domain> and bootstrap.<dns_domain> (a wildcard *.<dns_domain> does). client_ca_secret_arn (or tls_pem.client_ca) is the PEM CA that signs client certificates; client_auth (Kafka's ssl.client.auth) is none, requested (verified when presented) or required, which needs that CA."
  type = object({
    enabled                = optional(bool, false)
    certificate_secret_arn = optional(string)
    private_key_secret_arn = optional(string)
    client_ca_secret_arn   = optional(string)
    client_auth            = optional(string, "none")
  })
  default  = {}
  nullable = false

  validation {
    condition     = contains(["none", "requested", "required"], var.tls.client_auth)
    error_message = "tls.client_auth must be none, requested or required."
  }

  validation {
    condition = alltrue([
      for arn in [var.tls.certificate_secret_arn, var.tls.private_key_secret_arn, var.tls.client_ca_secret_arn] :
      arn == null ? true : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", arn))
    ])
    error_message = "tls.certificate_secret_arn, tls.private_key_secret_arn and tls.client_ca_secret_arn must be null or full Secrets Manager secret ARNs (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>)."
  }
}

variable "tls_pem" {
  description = "PEM contents given inline instead of the Secrets Manager ARNs of tls: certificate (the chain, leaf first), private_key and client_ca. Sensitive: Terraform does not show them, but they are stored in the state and travel in the brokers' user data, which whoever may call ec2:DescribeInstanceAttribute can read, and which must stay under EC2's 16 KiB (gzipped). Prefer tls.private_key_secret_arn for the key."
  type = object({
    certificate = optional(string)
    private_key = optional(string)
    client_ca   = optional(string)
  })
  default   = {}
  nullable  = false
  sensitive = true

  validation {
    condition = (
      (var.tls_pem.certificate == null ? true : can(regex("-----BEGIN CERTIFICATE-----", var.tls_pem.certificate))) &&
      (var.tls_pem.private_key == null ? true : can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.tls_pem.private_key))) &&
      (var.tls_pem.client_ca == null ? true : can(regex("-----BEGIN CERTIFICATE-----", var.tls_pem.client_ca)))
    )
    error_message = "tls_pem.certificate and tls_pem.client_ca must be PEM certificates (-----BEGIN CERTIFICATE-----), tls_pem.private_key a PEM private key (-----BEGIN ... PRIVATE KEY-----)."
  }
}

variable "sasl" {
  description = "SASL on the clients' listener (SASL_PLAINTEXT, or SASL_SSL together with tls). mechanisms: any of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (empty: no SASL). scram_users maps user names to full Secrets Manager secret ARNs whose SecretString is the password: broker 1 creates each user for the SCRAM mechanisms enabled (or sets its password to the secret's) once it is ready, at its first boot. PLAIN needs plain_users_secret_arn, a secret whose SecretString is the PLAIN users file (TOML, a [users] table of name = \"password\")."
  type = object({
    mechanisms             = optional(list(string), [])
    scram_users            = optional(map(string), {})
    plain_users_secret_arn = optional(string)
  })
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for m in var.sasl.mechanisms : contains(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], m)]) && length(distinct(var.sasl.mechanisms)) == length(var.sasl.mechanisms)
    error_message = "sasl.mechanisms must be distinct names among PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512."
  }

  validation {
    condition     = alltrue([for name in keys(var.sasl.scram_users) : can(regex("^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$", name))])
    error_message = "sasl.scram_users names must be 1-64 letters, digits, '.', '_', '@' and '-', starting with a letter or digit."
  }

  validation {
    condition = alltrue([
      for arn in concat(values(var.sasl.scram_users), var.sasl.plain_users_secret_arn == null ? [] : [var.sasl.plain_users_secret_arn]) :
      can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", arn))
    ])
    error_message = "The secrets of sasl.scram_users and sasl.plain_users_secret_arn must be full Secrets Manager secret ARNs (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>)."
  }
}

variable "client_listener_port" {
  description = "Port of the clients' listener when tls or sasl secures it (on the brokers, the load balancer and in client_cidrs' security group rules). 9092 then stays the PLAINTEXT listener between brokers."
  type        = number
  default     = 9094

  validation {
    condition     = var.client_listener_port >= 1024 && var.client_listener_port <= 65535 && floor(var.client_listener_port) == var.client_listener_port && !contains([9092, 9093, 9644], var.client_listener_port)
    error_message = "client_listener_port must be a whole number from 1024 to 65535, and not 9092, 9093 or 9644 (the brokers' PLAINTEXT, controller and admin ports)."
  }
}

variable "authorizer" {
  description = "Broker setting authorizer: none (every client may do everything) or acl (Kafka's ACL authorizer: ACLs in cluster metadata decide, managed with strata acl or Kafka's tools). acl needs a clients' listener that authenticates every client: sasl, or tls with client_auth = required. User:ANONYMOUS, the principal of the brokers' PLAINTEXT listener (replication fetches, and strata commands run on a broker against 127.0.0.1:9092), is then added to super_users."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "acl"], var.authorizer)
    error_message = "authorizer must be none or acl."
  }
}

variable "super_users" {
  description = "Broker setting super-users with authorizer = acl: principals allowed everything, such as User:admin (a SASL user) or User:CN=ops,O=Example (a client certificate's subject). User:ANONYMOUS is added by the module."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.super_users : can(regex("^User:[A-Za-z0-9._@=,+-]+$", p))])
    error_message = "super_users must be principals User:NAME, NAME of letters, digits and . _ @ = , + - (no spaces or ';')."
  }
}

variable "allow_everyone_if_no_acl_found" {
  description = "Broker setting allow-everyone-if-no-acl-found with authorizer = acl: a resource no ACL names is open to every client. Off by default, as in Kafka."
  type        = bool
  default     = false
}

# --- Logs ------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group that receives the brokers' logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}
