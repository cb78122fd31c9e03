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

# Its own processes, database and stream (deploy/lib/own-processes.sh).
. "$ROOT/deploy/lib/own-processes.sh"
FAILURE_NOTE="logs: $LOGS; screenshots: $SHOTS"
own_processes console "${SETTLE_CONSOLE_BUILD:-1}"
# A failed execution is tried again soon; the chain is verified soon after start.
export SETTLE_RETRY_SECONDS=5 SETTLE_AUDIT_VERIFY_INTERVAL_MS=2000
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
