#!/usr/bin/env bash
# Runs a command with LocalStack S3 up and STRATA_TEST_S3_ENDPOINT set, then
# stops LocalStack whatever the command's outcome; exits with its status.
#
#   localstack/with-s3.sh cargo test -p tiering
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/strata-localstack.XXXXXX")"
cleanup() {
    "$ROOT/localstack/stop.sh" --dir "$DIR" || true
    rm -rf "$DIR"
}
trap cleanup EXIT
line="$("$ROOT/localstack/start.sh" --dir "$DIR" | tail -n 1)"
export "${line?}"
echo "with-s3.sh: $line" >&2
set +e
"$@"
status=$?
set -e
exit "$status"
