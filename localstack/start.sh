#!/usr/bin/env bash
# Starts LocalStack's S3 in the background, without Docker, and waits until
# it is healthy.
#
#   localstack/start.sh [--dir DIR] [--port PORT] [--timeout SECONDS]
#
# DIR (default target/localstack) receives localstack.pid, localstack.port,
# localstack.endpoint and localstack.log; each run gets its own filesystem
# root under DIR, so runs on different ports and DIRs do not interfere.
# PORT defaults to a free port. On success the last line printed is
#   STRATA_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
# Stop it with localstack/stop.sh --dir DIR.
#
# The venv .venv-localstack at the repo root is created from
# localstack/requirements.txt when missing (pip reaches PyPI).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/target/localstack"
PORT=""
TIMEOUT=120

while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "start.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

VENV="$ROOT/.venv-localstack"
PY="$VENV/bin/python"
if ! [ -x "$PY" ] || ! "$PY" -c 'import localstack.runtime.main' 2>/dev/null; then
    echo "start.sh: installing LocalStack into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/localstack/requirements.txt"
fi

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
if [ -f "$DIR/localstack.pid" ] && kill -0 "$(cat "$DIR/localstack.pid")" 2>/dev/null; then
    echo "start.sh: already running with pid $(cat "$DIR/localstack.pid") in $DIR" >&2
    exit 1
fi

if [ -z "$PORT" ]; then
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
fi

FS_ROOT="$DIR/fs-$PORT"
rm -rf "$FS_ROOT"
mkdir -p "$FS_ROOT"

# setsid: its own process group, so stop.sh can end it and its children.
GATEWAY_LISTEN="127.0.0.1:$PORT" \
SERVICES=s3 \
FILESYSTEM_ROOT="$FS_ROOT" \
LOCALSTACK_VOLUME_DIR="$FS_ROOT/volume" \
SKIP_SSL_CERT_DOWNLOAD=1 \
DISABLE_EVENTS=1 \
    setsid "$PY" -m localstack.runtime.main >"$DIR/localstack.log" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$DIR/localstack.pid"
echo "$PORT" >"$DIR/localstack.port"
echo "http://127.0.0.1:$PORT" >"$DIR/localstack.endpoint"

deadline=$((SECONDS + TIMEOUT))
while :; do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "start.sh: LocalStack exited during start; log follows" >&2
        tail -n 40 "$DIR/localstack.log" >&2 || true
        rm -f "$DIR/localstack.pid"
        exit 1
    fi
    health="$(curl -s --max-time 2 "http://127.0.0.1:$PORT/_localstack/health" || true)"
    if printf '%s' "$health" | grep -Eq '"s3": *"(available|running)"'; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start.sh: LocalStack not healthy after ${TIMEOUT}s; stopping it. health=$health" >&2
        tail -n 40 "$DIR/localstack.log" >&2 || true
        kill -- "-$PID" 2>/dev/null || kill "$PID" 2>/dev/null || true
        rm -f "$DIR/localstack.pid"
        exit 1
    fi
    sleep 0.5
done

echo "start.sh: LocalStack S3 ready. pid=$PID, port=$PORT, dir=$DIR" >&2
echo "STRATA_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT"
