#!/usr/bin/env bash
# docs/examples/run.sh — runs the partner examples (Python, TypeScript) against the local stack and fails unless every outcome is right.
#
# Needs the stack (`deploy/stack up`; `deploy/stack examples` does both). It:
#   1. starts a command-api, a projector and a finalizer of its own on free loopback ports, on a
#      fresh database and a fresh JetStream stream (so nothing else running is disturbed), with
#      fresh webhook and audit seeds and webhooks to 127.0.0.1 allowed;
#   2. provisions through the admin API: a partner enterprise ("venue", amounts in base units,
#      no dispute window) with a user token, a registered Ed25519 key, a deposit and a webhook URL
#      pointing at the examples' receiver; a client enterprise ("fund") with a token and a key,
#      which connects to the venue and allocates 0.5 BTC (signed, through the signing twins);
#   3. runs docs/examples/python/partner.py (key given as a hex seed) and
#      docs/examples/typescript/partner.ts (key given as a PKCS#8 PEM file; `npm ci`, `tsc`);
#   4. checks each one against the published signing vectors, then its summary — staged
#      `pending`, executed `completed`, both webhooks verified, a tampered body and a stale
#      timestamp refused, an identical retry idempotent — and that a recorded delivery verifies
#      offline in both languages while a tampered copy does not, and the fund's connection
#      balance afterwards;
#   5. stops its processes and drops its database and stream, whatever happened.
#
# Environment: SETTLE_EXAMPLES_BUILD=0 uses the debug binaries already built (as `deploy/stack
# test` does after the test suite built them) instead of running `cargo build`;
# SETTLE_EXAMPLES_ONLY=python|typescript runs one example. Exit status 0 only if every check passed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/docs/examples
cd "$ROOT"
if [ -z "${DATABASE_URL:-}" ] || [ -z "${NATS_URL:-}" ]; then eval "$(deploy/stack env)"; fi
PY=${SETTLE_PYTHON:-$ROOT/deploy/.venv/bin/python3}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
LOGS=$ROOT/deploy/.data/logs/examples
mkdir -p "$LOGS"
ONLY=${SETTLE_EXAMPLES_ONLY:-}

say() { printf 'examples: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# Its own processes, database and stream (deploy/lib/own-processes.sh).
. "$ROOT/deploy/lib/own-processes.sh"
own_processes examples "${SETTLE_EXAMPLES_BUILD:-1}"
HOOK_PORT=$(free_port)
# The examples' webhook receiver listens on loopback, which webhooks may not target otherwise.
export SETTLE_WEBHOOK_ALLOW=127.0.0.1
start command-api "$API_PORT"
start projector "$PROJECTOR_PORT"
start finalizer "$FINALIZER_PORT"
say "command-api $API, projector :$PROJECTOR_PORT, finalizer :$FINALIZER_PORT (database $DB)"

# --- provisioning ---------------------------------------------------------------------------
field() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
admin() { # method path [body]
  curl -fsS -H "Authorization: Bearer $SETTLE_ADMIN_TOKEN" -H "Content-Type: application/json" \
    -X "$1" "$API/api/admin/v1$2" -d "${3:-{\}}" || fail "admin $1 $2"
}
# A signed client request, the way deploy/demo makes them: twin, `command-api sign`, send.
signed() { # path token seed body-json
  local payload signature
  payload=$(curl -fsS -H "Authorization: Bearer $2" -H "Content-Type: application/json" \
    -X POST "$API$1/signing" -d "$4" | field '["payload"]') || fail "signing twin of $1"
  signature=$(printf %s "$payload" | "$BIN/command-api" sign --seed "$3")
  "$PY" -c 'import json,sys; b=json.loads(sys.argv[1]); b["payload"]=sys.argv[2]; b["signature"]=sys.argv[3]; print(json.dumps(b))' \
    "$4" "$payload" "$signature" \
    | curl -fsS -H "Authorization: Bearer $2" -H "Content-Type: application/json" -X POST "$API$1" -d @- \
    || fail "signed POST $1"
}

VENUE=$(admin POST /enterprises '{"name":"Example Venue","oesLicense":true}' | field '["enterprise"]["id"]')
PARTNER=$(admin POST "/enterprises/$VENUE/partner" \
  '{"name":"Example Venue","broker":false,"clientDisputeWindowMinutes":null,"topUpWindowMinutes":null,"amountFormat":"baseUnits"}' \
  | field '["partner"]["id"]')
VENUE_TOKEN=$(admin POST /users "{\"name\":\"venue-integration\",\"enterpriseIds\":[\"$VENUE\"]}" | field '["accessToken"]')
VENUE_KEY=$("$BIN/command-api" keygen)
VENUE_SEED=$(echo "$VENUE_KEY" | field '["seed"]')
admin POST "/enterprises/$VENUE/keys" "{\"publicKey\":\"$(echo "$VENUE_KEY" | field '["publicKey"]')\"}" >/dev/null
admin POST "/enterprises/$VENUE/deposits" '{"currency":"BTC","quantity":"100000000","externalId":"venue-deposit-1"}' >/dev/null
admin PUT "/enterprises/$VENUE/webhook" "{\"url\":\"http://127.0.0.1:$HOOK_PORT/webhooks\"}" >/dev/null
WEBHOOK_PUBLIC_KEY=$(admin GET /webhooks/public-key | field '["publicKey"]')

FUND=$(admin POST /enterprises '{"name":"Example Fund","oesLicense":true}' | field '["enterprise"]["id"]')
admin POST "/enterprises/$FUND/client" >/dev/null
FUND_TOKEN=$(admin POST /users "{\"name\":\"fund-trader\",\"enterpriseIds\":[\"$FUND\"]}" | field '["accessToken"]')
FUND_KEY=$("$BIN/command-api" keygen)
FUND_SEED=$(echo "$FUND_KEY" | field '["seed"]')
admin POST "/enterprises/$FUND/keys" "{\"publicKey\":\"$(echo "$FUND_KEY" | field '["publicKey"]')\"}" >/dev/null
admin POST "/enterprises/$FUND/deposits" '{"currency":"BTC","quantity":"100000000","externalId":"fund-deposit-1"}' >/dev/null
CLIENTS=/api/network/v1/enterprises/$FUND/clients
CONNECTION=$(signed "$CLIENTS/connections" "$FUND_TOKEN" "$FUND_SEED" \
  "{\"partnerId\":\"$PARTNER\",\"name\":\"main\",\"connectionKey\":\"venue-account-1\",\"nonce\":\"fund-1\"}" \
  | field '["connection"]["id"]')
signed "$CLIENTS/connections/$CONNECTION/allocations" "$FUND_TOKEN" "$FUND_SEED" \
  '{"amount":{"currency":"BTC","quantity":"50000000"},"clientExternalId":"fund-alloc-1","nonce":"fund-2"}' >/dev/null
say "venue $VENUE (partner $PARTNER), fund $FUND, connection $CONNECTION with 0.5 BTC"

# --- the examples ---------------------------------------------------------------------------
export SETTLE_API=$API SETTLE_TOKEN=$VENUE_TOKEN SETTLE_ENTERPRISE=$VENUE SETTLE_CONNECTION=$CONNECTION
export SETTLE_CURRENCY=BTC SETTLE_AMOUNT=-1000000 SETTLE_WEBHOOK_PUBLIC_KEY=$WEBHOOK_PUBLIC_KEY
export SETTLE_WEBHOOK_LISTEN=127.0.0.1:$HOOK_PORT SETTLE_WEBHOOK_TIMEOUT=45

# The last line of an example's output is its JSON summary.
check_summary() { # name output-file
  tail -n 1 "$2" | "$PY" -c '
import json, sys
name = sys.argv[1]
s = json.load(sys.stdin)
problems = [k for k, v in s["checks"].items() if v is not True]
if s["stagedStatus"] != "pending": problems.append("staged status %r, not pending" % s["stagedStatus"])
if s["status"] != "completed": problems.append("final status %r, not completed" % s["status"])
types = sorted(w["type"] for w in s["webhooks"] if w["verified"])
for t in ("settlement.completed", "settlement.finalized"):
    if t not in types: problems.append("no verified %s webhook" % t)
for t in ("tamperedBodyRejected", "staleTimestampRejected", "retryIdempotent", "canonicalPayloadMatches"):
    if s["checks"].get(t) is not True: problems.append(t)
if problems:
    sys.exit("%s: %s" % (name, "; ".join(sorted(set(problems)))))
print("%s: settlement %s pending -> completed; webhooks verified: %s; tampered and stale refused" % (name, s["settlementId"], ", ".join(types)))
' "$1" >&2 || fail "$1 example"
}

# A recorded delivery must verify offline, and fail once its body changes by one byte.
check_recorded() { # name command…
  local name=$1; shift
  local h=$RECORD.headers.json
  local args=(--webhook-public-key "$WEBHOOK_PUBLIC_KEY"
    --webhook-id "$(field '["webhook-id"]' <"$h")" --webhook-timestamp "$(field '["webhook-timestamp"]' <"$h")"
    --webhook-signature "$(field '["webhook-signature"]' <"$h")")
  "$@" verify --body "$RECORD" "${args[@]}" >/dev/null || fail "$name: a recorded delivery does not verify"
  sed 's/"type":"/"type":"x/' "$RECORD" >"$RECORD.tampered"
  if "$@" verify --body "$RECORD.tampered" "${args[@]}" >/dev/null; then fail "$name: a tampered recorded delivery verified"; fi
  say "$name: a recorded delivery verifies offline; its tampered copy does not"
}

RUNS=0
RECORD=$LOGS/webhook-delivery.json
rm -f "$RECORD" "$RECORD.headers.json" "$RECORD.tampered"
if [ -z "$ONLY" ] || [ "$ONLY" = python ]; then
  say "python: docs/examples/python/partner.py (key: hex seed)"
  "$PY" "$HERE/python/partner.py" vectors >&2 || fail "python: the published signing vectors"
  SETTLE_PARTNER_KEY=$VENUE_SEED "$PY" "$HERE/python/partner.py" stage --record "$RECORD" | tee "$LOGS/python.out" \
    || fail "python example exited non-zero"
  check_summary python "$LOGS/python.out"
  check_recorded python "$PY" "$HERE/python/partner.py"
  RUNS=$((RUNS + 1))
fi

if [ -z "$ONLY" ] || [ "$ONLY" = typescript ]; then
  say "typescript: npm ci, tsc, docs/examples/typescript/partner.ts (key: PKCS#8 PEM file)"
  (cd "$HERE/typescript" && npm ci --silent --no-audit --no-fund && npx --no-install tsc -p .) || fail "npm ci / tsc"
  node "$HERE/typescript/dist/partner.js" vectors >&2 || fail "typescript: the published signing vectors"
  PEM=$LOGS/venue-key.pem
  "$PY" - "$VENUE_SEED" "$PEM" <<'EOF'
import os, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[1]))
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, pem); os.close(fd)
EOF
  SETTLE_PARTNER_KEY_FILE=$PEM node "$HERE/typescript/dist/partner.js" stage | tee "$LOGS/typescript.out" \
    || fail "typescript example exited non-zero"
  rm -f "$PEM"
  check_summary typescript "$LOGS/typescript.out"
  # The delivery the Python receiver recorded, checked by the TypeScript verifier too.
  if [ -f "$RECORD" ]; then check_recorded typescript node "$HERE/typescript/dist/partner.js"; fi
  RUNS=$((RUNS + 1))
fi

# Each run moved 0.01 BTC from the connection to the venue: 0.5 BTC − RUNS × 0.01 BTC is left.
EXPECTED=$((50000000 - RUNS * 1000000))
for _ in $(seq 1 50); do
  AVAILABLE=$(curl -fsS -H "Authorization: Bearer $FUND_TOKEN" "$API$CLIENTS/balances" \
    | field "[\"networkBalances\"][\"$CONNECTION\"][\"balances\"][\"BTC\"][\"available\"]")
  [ "$AVAILABLE" = "$EXPECTED" ] && break
  sleep 0.2
done
[ "$AVAILABLE" = "$EXPECTED" ] || fail "connection balance $AVAILABLE, expected $EXPECTED"
say "the connection holds $AVAILABLE base units of BTC, as expected"
say "all examples passed"
