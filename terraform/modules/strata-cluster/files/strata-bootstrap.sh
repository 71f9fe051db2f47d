#!/usr/bin/env bash
# First-boot set-up of a Strata broker on EC2, run once by cloud-init
# (templates/cloud-init.yaml.tftpl writes this file and its settings,
# /etc/strata/bootstrap.env). Steps:
#   1. the `strata` system user;
#   2. the hot-tier EBS volume: wait for it, format it if blank, mount it at
#      /var/lib/strata;
#   3. the strata binary: download, check its SHA-256, install;
#   4. the advertised listeners (DNS name, else the private address), the
#      listeners' security settings and, on a learner, the controller
#      listener;
#   5. the TLS and SASL files: from Secrets Manager, readable by strata only;
#   6. the CloudWatch agent for the log group (best effort);
#   7. start strata.service;
#   8. on broker 1, the SCRAM users, once the broker is ready.
set -euo pipefail

# shellcheck source=/dev/null
. /etc/strata/bootstrap.env

log() { echo "strata-bootstrap: $*" >&2; }

retry() {
  local n
  for n in 1 2 3 4 5 6 7 8 9 10; do
    if "$@"; then return 0; fi
    log "attempt $n of: $* failed; retrying"
    sleep $((n * 3))
  done
  return 1
}

# secret ARN FILE: the SecretString of a Secrets Manager secret into FILE,
# created with mode 0600; nothing of it on a command line or in the log.
secret() {
  local region tmp
  region=$(cut -d: -f4 <<<"$1")
  tmp=$(mktemp "$2.XXXXXX")
  if aws secretsmanager get-secret-value --region "$region" --secret-id "$1" \
    --query SecretString --output text >"$tmp" && [ -s "$tmp" ] && [ "$(cat "$tmp")" != None ]; then
    mv -f "$tmp" "$2"
  else
    rm -f "$tmp"
    return 1
  fi
}

imds() {
  local token
  token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
    http://169.254.169.254/latest/api/token)
  curl -fsS -H "X-aws-ec2-metadata-token: $token" \
    "http://169.254.169.254/latest/meta-data/$1"
}

# 1. User.
if ! id strata >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/strata \
    --shell /sbin/nologin strata
fi

# 2. Data volume. Terraform attaches it after the instance starts, so wait.
# On Nitro instances it appears as an NVMe device named by its volume id.
dev=""
for _ in $(seq 1 180); do
  for candidate in \
    "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${STRATA_DATA_VOLUME_ID//-/}" \
    /dev/sdf /dev/xvdf; do
    if [ -b "$candidate" ]; then
      dev=$(readlink -f "$candidate")
      break 2
    fi
  done
  sleep 5
done
if [ -z "$dev" ]; then
  log "data volume $STRATA_DATA_VOLUME_ID was not attached within 15 minutes"
  exit 1
fi
if ! blkid "$dev" >/dev/null 2>&1; then
  log "formatting blank data volume $dev"
  mkfs.xfs -q -L strata-data "$dev"
fi
uuid=$(blkid -s UUID -o value "$dev")
mkdir -p /var/lib/strata
if ! grep -q "UUID=$uuid" /etc/fstab; then
  echo "UUID=$uuid /var/lib/strata xfs defaults,noatime,nofail 0 2" >>/etc/fstab
fi
mountpoint -q /var/lib/strata || mount /var/lib/strata
chown strata:strata /var/lib/strata
chmod 0750 /var/lib/strata

# 3. Binary.
tmp=$(mktemp)
case "$STRATA_ARTIFACT_URL" in
  s3://*) retry aws s3 cp --only-show-errors "$STRATA_ARTIFACT_URL" "$tmp" ;;
  *) retry curl -fsSL -o "$tmp" "$STRATA_ARTIFACT_URL" ;;
esac
if ! echo "$STRATA_ARTIFACT_SHA256  $tmp" | sha256sum --check --quiet -; then
  log "the binary at $STRATA_ARTIFACT_URL does not match its SHA-256; not installing it"
  exit 1
fi
install -m 0755 -o root -g root "$tmp" /usr/local/bin/strata
rm -f "$tmp"

# 4. Listeners: flags and env beat the config file, so the advertised
# listener goes in strata.env next to the region the S3 client needs. With a
# secured clients' listener, both listeners are advertised at the same host
# (PLAINTEXT for the brokers, the other for clients), and the TLS, SASL and
# authorizer settings cloud-init wrote to security.env follow. A learner (a
# broker outside the metadata voters) serves the controller listener on its
# private address: the voters reach it at the address it listens on, so it
# cannot be 0.0.0.0.
host="$STRATA_ADVERTISED_HOST"
if [ -z "$host" ]; then host=$(retry imds local-ipv4); fi
advertised="STRATA_ADVERTISED_LISTENER=$host:$STRATA_KAFKA_PORT"
if [ "$STRATA_CLIENT_PROTOCOL" != PLAINTEXT ]; then
  advertised="STRATA_ADVERTISED_LISTENERS=PLAINTEXT://$host:$STRATA_KAFKA_PORT,$STRATA_CLIENT_PROTOCOL://$host:$STRATA_CLIENT_PORT"
fi
controller=""
if [ "$STRATA_CONTROLLER_ROLE" = learner ]; then
  ip=$(retry imds local-ipv4)
  controller="STRATA_CONTROLLER_LISTEN=$ip:$STRATA_CONTROLLER_PORT"
fi
security=""
if [ -f /etc/strata/security.env ]; then security=$(cat /etc/strata/security.env); fi
umask 022
cat >/etc/strata/strata.env <<ENV
$advertised
AWS_REGION=$AWS_REGION
$controller
$security
ENV

# 5. TLS and SASL files: the certificate, key and client CA and the PLAIN
# users file, fetched from Secrets Manager (or written by cloud-init, when
# given inline), readable by the strata user only. The broker reads them at
# start and again on SIGHUP.
if [ -n "$STRATA_SECURITY_SECRETS" ] || [ -d /etc/strata/security ]; then
  mkdir -p /etc/strata/security
  chmod 0700 /etc/strata/security
  for item in $STRATA_SECURITY_SECRETS; do
    retry secret "${item#*=}" "/etc/strata/security/${item%%=*}"
  done
  chown -R strata:strata /etc/strata/security
  chmod 0600 /etc/strata/security/*
fi

# 6. CloudWatch agent. The broker runs without it; say so loudly.
if command -v dnf >/dev/null 2>&1 && dnf install -y -q amazon-cloudwatch-agent logrotate; then
  /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl \
    -a fetch-config -m ec2 -s -c file:/etc/strata/cloudwatch-agent.json
else
  log "warning: amazon-cloudwatch-agent could not be installed; logs stay in /var/log/strata"
fi

# 7. Service.
systemctl daemon-reload
systemctl enable --now strata.service
log "strata node $STRATA_NODE_ID started"

# 8. SCRAM users, on broker 1 only: once the broker is ready, each NAME=ARN
# of STRATA_SCRAM_USERS is created, or its password set, with the password
# its secret holds, through the PLAINTEXT listener here (the brokers' own,
# whose principal the authorizer lets do anything). Running it again sets
# the same passwords.
if [ -n "$STRATA_SCRAM_USERS" ]; then
  for _ in $(seq 1 180); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$STRATA_ADMIN_PORT/ready"; then break; fi
    sleep 5
  done
  mechanisms=()
  for mechanism in $STRATA_SCRAM_MECHANISMS; do mechanisms+=(--mechanism "$mechanism"); done
  passwords=$(mktemp -d)
  trap 'rm -rf "$passwords"' EXIT
  for item in $STRATA_SCRAM_USERS; do
    user="${item%%=*}"
    retry secret "${item#*=}" "$passwords/$user"
    if ! retry /usr/local/bin/strata user create "$user" --password-file "$passwords/$user" \
      "${mechanisms[@]}" --bootstrap "127.0.0.1:$STRATA_KAFKA_PORT"; then
      log "SCRAM user $user could not be created; create it with strata user create"
      exit 1
    fi
    rm -f "$passwords/$user"
    log "SCRAM user $user set for ${STRATA_SCRAM_MECHANISMS// /, }"
  done
fi
