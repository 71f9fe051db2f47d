#!/usr/bin/env bash
# The one test command: lint, build, Rust tests (unit + integration), Python
# client tests. Installs what it needs (kcat, a Python venv, kafkajs, cargo-nextest)
# when missing. Works in a fresh clone, with CI=true and no stdin.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export DEBIAN_FRONTEND=noninteractive
# One build per run: incremental caches would only take disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

step "disk"
df -h . /tmp 2>/dev/null || true

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# The test clients' librdkafka is built with OpenSSL (TLS and SASL tests).
if ! pkg-config --exists openssl 2>/dev/null; then
  step "installing libssl-dev and pkg-config"
  $SUDO apt-get update -q </dev/null
  $SUDO apt-get install -y -q libssl-dev pkg-config </dev/null
fi

# 1. Lints first: fail fast.
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo doc (every intra-doc link resolves)"
RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links" cargo doc --workspace --no-deps --quiet

# 2. Tools.
if ! command -v kcat >/dev/null 2>&1; then
  step "installing kcat"
  $SUDO apt-get update -q </dev/null
  $SUDO apt-get install -y -q kcat </dev/null
fi
command -v kcat >/dev/null 2>&1 || { echo "kcat is still missing after apt-get install" >&2; exit 1; }

# kafkajs (tests/python/test_kafkajs.py): Node.js from Debian when missing,
# the package from tests/node/package-lock.json.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  step "installing nodejs and npm"
  $SUDO apt-get update -q </dev/null
  $SUDO apt-get install -y -q nodejs npm </dev/null
fi
NODE_STAMP="tests/node/node_modules/.lock.sha256"
node_hash="$(sha256sum tests/node/package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$NODE_STAMP" 2>/dev/null || true)" != "$node_hash" ]; then
  step "npm ci in tests/node"
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error </dev/null)
  echo "$node_hash" > "$NODE_STAMP"
fi

REQ="tests/python/requirements.txt"
STAMP=".venv/.requirements.sha256"
want_hash="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want_hash" ]; then
  step "creating .venv from $REQ"
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$REQ" </dev/null
  echo "$want_hash" > "$STAMP"
fi

# Deployment checks (terraform, checkov, dashboards): their own venvs, as
# checkov and python-hcl2 both install a module named hcl2.
for spec in ".venv-deploy:tests/deploy/requirements.txt" ".venv-checkov:tests/deploy/requirements-checkov.txt"; do
  venv="${spec%%:*}"; req="${spec#*:}"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
    step "creating $venv from $req"
    if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" </dev/null
    echo "$want" > "$venv/.requirements.sha256"
  fi
done

USE_NEXTEST=1
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  if ! cargo install cargo-nextest --locked </dev/null; then
    echo "cargo-nextest could not be installed; falling back to cargo test" >&2
    USE_NEXTEST=0
  fi
fi

# 3. One build of everything (the tests use target/debug/strata).
step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

# 4. Tests. Run both suites, then report.
rust_rc=0
if [ "$USE_NEXTEST" = 1 ]; then
  step "cargo nextest run --workspace --no-fail-fast (with LocalStack S3)"
  localstack/with-s3.sh cargo nextest run --workspace --no-fail-fast --config-file tests/nextest.toml || rust_rc=$?
else
  step "cargo test --workspace --no-fail-fast (with LocalStack S3)"
  localstack/with-s3.sh cargo test --workspace --no-fail-fast -- --test-threads=2 || rust_rc=$?
fi

step "pytest tests/python (with LocalStack S3)"
py_rc=0
STRATA_BIN="$ROOT/target/debug/strata" localstack/with-s3.sh \
  .venv/bin/pytest -q --timeout=600 tests/python || py_rc=$?

step "pytest tests/deploy"
deploy_rc=0
STRATA_BIN="$ROOT/target/debug/strata" CHECKOV="$ROOT/.venv-checkov/bin/checkov" \
  .venv-deploy/bin/pytest -q --timeout=600 tests/deploy || deploy_rc=$?

step "summary"
echo "rust tests: $([ "$rust_rc" = 0 ] && echo passed || echo "FAILED (exit $rust_rc)")"
echo "python tests: $([ "$py_rc" = 0 ] && echo passed || echo "FAILED (exit $py_rc)")"
echo "deploy checks: $([ "$deploy_rc" = 0 ] && echo passed || echo "FAILED (exit $deploy_rc)")"
if [ "$rust_rc" != 0 ] || [ "$py_rc" != 0 ] || [ "$deploy_rc" != 0 ]; then
  exit 1
fi
