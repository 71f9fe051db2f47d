#!/usr/bin/env bash
# Stops a LocalStack started by localstack/start.sh.
#
#   localstack/stop.sh [--dir DIR]
#
# Reads DIR/localstack.pid (default target/localstack), sends TERM to its
# process group, waits up to 15 s, then KILL. Removes the pid file and the
# run's filesystem root. Succeeds when nothing is running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/target/localstack"
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "stop.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

PIDFILE="$DIR/localstack.pid"
if ! [ -f "$PIDFILE" ]; then
    echo "stop.sh: no pid file in $DIR; nothing to stop" >&2
    exit 0
fi
PID="$(cat "$PIDFILE")"
if kill -0 "$PID" 2>/dev/null; then
    kill -TERM -- "-$PID" 2>/dev/null || kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$PID" 2>/dev/null; then
        echo "stop.sh: LocalStack pid $PID did not stop; killing it" >&2
        kill -KILL -- "-$PID" 2>/dev/null || kill -KILL "$PID" 2>/dev/null || true
    fi
fi
rm -f "$PIDFILE"
if [ -f "$DIR/localstack.port" ]; then
    rm -rf "$DIR/fs-$(cat "$DIR/localstack.port")"
fi
echo "stop.sh: stopped pid $PID" >&2
