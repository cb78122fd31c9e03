#!/usr/bin/env bash
# deploy/console/e2e.sh — the console in a real browser: Debian's Chromium driven by Playwright (deploy/console/test_console.py).
#
# Needs the stack (`deploy/stack up`; `deploy/stack console-test` does both and installs Chromium
# and the pinned Playwright). It:
#   1. starts a command-api, a projector and a finalizer of its own on free loopback ports, on a
#      fresh database and a fresh JetStream stream, with fresh webhook and audit seeds and a fresh
#      admin token (as docs/examples/run.sh does);
#   2. runs deploy/console/test_console.py, which provisions demo tenants through the API and
#      walks the console as the operator, an auditor and enterprise members, writing a screenshot
#      of every page to target/console-screenshots/;
#   3. stops its processes and drops its database and stream, whatever happened.
#
# Environment: SETTLE_CONSOLE_BUILD=0 uses the debug binaries already built (as `deploy/stack
# test` does after the test suite built them) instead of running `cargo build`;
# SETTLE_CONSOLE_DOCS_SHOT=1 also copies the settlement page's screenshot to
# docs/console-settlement.png (the README's). Loopback only. Exit status 0 only if every check passed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if [ -z "${DATABASE_URL:-}" ] || [ -z "${NATS_URL:-}" ]; then eval "$(deploy/stack env)"; fi
PY=${SETTLE_PYTHON:-$ROOT/deploy/.venv/bin/python3}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
SHOTS=${CARGO_TARGET_DIR:-$ROOT/target}/console-screenshots
LOGS=$ROOT/deploy/.data/logs/console
mkdir -p "$LOGS" "$SHOTS"

say() { printf 'console-e2e: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

[ -x /usr/bin/chromium ] || fail "/usr/bin/chromium is missing: run deploy/stack console-test (it installs Debian's chromium)"
"$PY" -c 'import playwright' 2>/dev/null || fail "the playwright package is missing from deploy/.venv: run deploy/stack console-test"

if [ "${SETTLE_CONSOLE_BUILD:-1}" != 0 ]; then
  cargo build --quiet --locked -p command-api -p projector -p finalizer
fi
for b in command-api projector finalizer; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b is missing: run cargo build --locked -p command-api -p projector -p finalizer"
done

# A database and a stream of this run's own.
TAG=$("$PY" -c 'import uuid; print(uuid.uuid4().hex[:12])')
DB=console_$TAG
export DATABASE_URL=${DATABASE_URL%/*}/$DB
export SETTLE_EVENTS_STREAM=CONSOLE_$TAG
export SETTLE_EVENTS_SUBJECT_PREFIX=console$TAG
ADMIN_DB_URL=${DATABASE_URL%/*}/postgres
PSQL=$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port); PROJECTOR_PORT=$(free_port); FINALIZER_PORT=$(free_port)
API=http://127.0.0.1:$API_PORT

pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$PSQL" -q "$ADMIN_DB_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  # Delete the run's stream: one JetStream API request over the plain NATS protocol.
  "$PY" - "$NATS_URL" "$SETTLE_EVENTS_STREAM" <<'PYEOF' >/dev/null 2>&1 || true
import socket, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1].split(",")[0])
with socket.create_connection((url.hostname, url.port or 4222), timeout=5) as s:
    s.recv(4096)
    s.sendall(f'CONNECT {{"verbose":false}}\r\nPUB $JS.API.STREAM.DELETE.{sys.argv[2]} 0\r\n\r\nPING\r\n'.encode())
    s.recv(4096)
PYEOF
  if [ "$status" -ne 0 ]; then say "logs: $LOGS; screenshots: $SHOTS"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PSQL" -q "$ADMIN_DB_URL" -c "CREATE DATABASE $DB" >/dev/null

seed() { "$BIN/command-api" keygen | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seed"])'; }
export SETTLE_WEBHOOK_SEED; SETTLE_WEBHOOK_SEED=$(seed)
export SETTLE_AUDIT_SEED; SETTLE_AUDIT_SEED=$(seed)
export SETTLE_ADMIN_TOKEN; SETTLE_ADMIN_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
# A failed execution is tried again soon; the chain is verified soon after start.
export SETTLE_RETRY_SECONDS=5 SETTLE_AUDIT_VERIFY_INTERVAL_MS=2000
export RUST_LOG=${RUST_LOG:-warn}
unset SETTLE_DEVELOPMENT

# The command-api first: it applies the migrations the others wait for.
start() { # name port
  SETTLE_LISTEN=127.0.0.1:$2 SETTLE_PROJECTOR_INSTANCE=console-$1 "$BIN/$1" >"$LOGS/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || fail "$1 exited; see $LOGS/$1.log"
    sleep 0.2
  done
  fail "$1 is not ready on 127.0.0.1:$2: $(curl -sS "http://127.0.0.1:$2/readyz" 2>&1)"
}
start command-api "$API_PORT"
start projector "$PROJECTOR_PORT"
start finalizer "$FINALIZER_PORT"
say "command-api $API, projector :$PROJECTOR_PORT, finalizer :$FINALIZER_PORT (database $DB)"

rm -f "$SHOTS"/*.png
SETTLE_API=$API SETTLE_SCREENSHOTS=$SHOTS timeout 180 "$PY" "$ROOT/deploy/console/test_console.py" \
  || fail "the browser test"
if [ "${SETTLE_CONSOLE_DOCS_SHOT:-0}" = 1 ]; then
  cp "$SHOTS/settlement.png" "$ROOT/docs/console-settlement.png"
  say "docs/console-settlement.png updated"
fi
say "screenshots: $SHOTS ($(ls "$SHOTS" | wc -l) pages)"
