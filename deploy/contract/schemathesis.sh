#!/usr/bin/env bash
# deploy/contract/schemathesis.sh — checks the running API against its OpenAPI document
# (schemas/openapi.json) with Schemathesis: starts command-api, projector and finalizer on
# loopback against the local stack (a database and JetStream names of their own, made afresh),
# provisions partners and a client the way deploy/demo does (keys, deposits, connections,
# allocations, staged settlements, disputes — one closed —, a performed v1 settlement), then runs
# Schemathesis over every route with the admin token (admin and audit routes) and a member's
# token (network routes), checking that no answer is a 5xx and that every answer's status,
# content type and body are the documented ones.
# Bounded (a few examples per operation, well under 3 minutes on 2 cores); exits non-zero on any
# failure. Run it through `deploy/stack contract` (or after `eval "$(deploy/stack env)"`).
#
# SETTLE_CONTRACT_EXAMPLES  examples per operation and phase (default 6)
# SETTLE_CONTRACT_PORT      first of the three ports the processes listen on (default 18180)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
: "${DATABASE_URL:?run through deploy/stack contract, which sets the environment of the local stack}"
ST=$ROOT/deploy/.venv/bin/schemathesis
[ -x "$ST" ] || { echo "contract: $ST is missing: run deploy/stack up" >&2; exit 1; }
LOGS=$ROOT/deploy/.data/contract
rm -rf "$LOGS"
mkdir -p "$LOGS"
log() { printf 'contract: %s\n' "$*" >&2; }

PORT=${SETTLE_CONTRACT_PORT:-18180}
API=http://127.0.0.1:$PORT
EXAMPLES=${SETTLE_CONTRACT_EXAMPLES:-6}

# A database of its own, made afresh: the run provisions many objects.
BASE_URL=${DATABASE_URL%/*}
CONTRACT_DB=settle_contract
psql_admin() { "${PG_BIN:-/usr/lib/postgresql/15/bin}/psql" "$BASE_URL/${DATABASE_URL##*/}" -v ON_ERROR_STOP=1 -qtA -c "$1"; }
psql_admin "DROP DATABASE IF EXISTS $CONTRACT_DB WITH (FORCE)"
psql_admin "CREATE DATABASE $CONTRACT_DB"
export DATABASE_URL=$BASE_URL/$CONTRACT_DB
# JetStream names of this run only.
RUN=contract$$
export SETTLE_EVENTS_STREAM=${RUN^^} SETTLE_EVENTS_SUBJECT_PREFIX=$RUN
export SETTLE_CONTRACT_ADMIN_TOKEN=contract-admin-token-$RUN
export SETTLE_ADMIN_TOKEN=$SETTLE_CONTRACT_ADMIN_TOKEN
# Schemathesis sends many requests, many refused on purpose: no rate limits on this instance.
export SETTLE_RATE_PER_TOKEN=0 SETTLE_RATE_PER_ADDRESS=0

cargo build --quiet --locked -p command-api -p projector -p finalizer
# The binaries the build just made (CARGO_TARGET_DIR when set, as in CI's shared target).
BIN=${CARGO_TARGET_DIR:-target}/debug
seed() { "$BIN/command-api" keygen | python3 -c 'import json,sys; print(json.load(sys.stdin)["seed"])'; }
SETTLE_WEBHOOK_SEED=$(seed)
SETTLE_AUDIT_SEED=$(seed)
export SETTLE_WEBHOOK_SEED SETTLE_AUDIT_SEED

pids=()
stop() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
declare -A ports=([command-api]=$PORT [projector]=$((PORT + 1)) [finalizer]=$((PORT + 2)))
for name in command-api projector finalizer; do
  SETTLE_LISTEN=127.0.0.1:${ports[$name]} SETTLE_PROJECTOR_INSTANCE=$RUN-$name \
    "$BIN/$name" >"$LOGS/$name.log" 2>&1 &
  pids+=($!)
  # The command-api migrates the fresh database; the others start after it.
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:${ports[$name]}/readyz" >/dev/null 2>&1 && break
    kill -0 "${pids[-1]}" 2>/dev/null || { log "$name exited; see $LOGS/$name.log"; exit 1; }
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:${ports[$name]}/readyz" >/dev/null || { log "$name is not ready; see $LOGS/$name.log"; exit 1; }
done
log "command-api, projector and finalizer ready on 127.0.0.1:$PORT-$((PORT + 2))"

# Provisioning, as deploy/demo does it.
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
admin() { curl -fsS -H "Authorization: Bearer $SETTLE_ADMIN_TOKEN" -H "Content-Type: application/json" -X "$1" "$API/api/admin/v1$2" -d "${3:-{\}}"; }
signed() { # method path token seed body-json [signing-twin-path]
  local payload signature
  payload=$(curl -fsS -H "Authorization: Bearer $3" -H "Content-Type: application/json" -X POST "$API${6:-$2/signing}" -d "$5" | field '["payload"]')
  signature=$(printf %s "$payload" | "$BIN/command-api" sign --seed "$4")
  python3 -c 'import json,sys; b=json.loads(sys.argv[1]); b["payload"]=sys.argv[2]; b["signature"]=sys.argv[3]; print(json.dumps(b))' "$5" "$payload" "$signature" \
    | curl -fsS -H "Authorization: Bearer $3" -H "Content-Type: application/json" -X "$1" "$API$2" -d @-
}
PARTNER_E=$(admin POST /enterprises '{"name":"Contract Venue","oesLicense":true}' | field '["enterprise"]["id"]')
CLIENT_E=$(admin POST /enterprises '{"name":"Contract Fund","oesLicense":true}' | field '["enterprise"]["id"]')
PARTNER_ID=$(admin POST "/enterprises/$PARTNER_E/partner" \
  '{"name":"Contract Venue","broker":false,"clientDisputeWindowMinutes":60,"topUpWindowMinutes":0,"amountFormat":"baseUnits"}' | field '["partner"]["id"]')
admin POST "/enterprises/$CLIENT_E/client" >/dev/null
# One user, a member of both: its token works on the partner routes and the client routes.
USER_TOKEN=$(admin POST /users "{\"name\":\"contract-member\",\"enterpriseIds\":[\"$PARTNER_E\",\"$CLIENT_E\"]}" | field '["accessToken"]')
keys() { "$BIN/command-api" keygen; }
CKEY=$(keys); CSEED=$(echo "$CKEY" | field '["seed"]')
PKEY=$(keys); PSEED=$(echo "$PKEY" | field '["seed"]')
admin POST "/enterprises/$CLIENT_E/keys" "{\"publicKey\":\"$(echo "$CKEY" | field '["publicKey"]')\"}" >/dev/null
admin POST "/enterprises/$PARTNER_E/keys" "{\"publicKey\":\"$(echo "$PKEY" | field '["publicKey"]')\"}" >/dev/null
admin POST "/enterprises/$CLIENT_E/deposits" '{"currency":"BTC","quantity":"100000000","externalId":"contract-deposit-1"}' >/dev/null
admin POST "/enterprises/$PARTNER_E/deposits" '{"currency":"BTC","quantity":"100000000","externalId":"contract-deposit-2"}' >/dev/null
CLIENTS=/api/network/v1/enterprises/$CLIENT_E/clients
CONNECTION=$(signed POST "$CLIENTS/connections" "$USER_TOKEN" "$CSEED" \
  "{\"partnerId\":\"$PARTNER_ID\",\"name\":\"main\",\"connectionKey\":\"contract-account-1\",\"nonce\":\"c-1\"}" | field '["connection"]["id"]')
ALLOCATION=$(signed POST "$CLIENTS/connections/$CONNECTION/allocations" "$USER_TOKEN" "$CSEED" \
  '{"amount":{"currency":"BTC","quantity":"25000000"},"clientExternalId":"contract-alloc-1","nonce":"c-2"}' | field '["allocation"]["id"]')
CUTOFF=$(python3 -c 'import datetime;print(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00","Z"))')
SETTLEMENT=$(signed POST "/api/network/v2/enterprises/$PARTNER_E/partners/settlements" "$USER_TOKEN" "$PSEED" \
  "{\"externalId\":\"contract-s1\",\"settlementAmounts\":{\"$CONNECTION\":{\"BTC\":\"-1000000\"}},\"cutoffAt\":\"$CUTOFF\",\"nonce\":\"p-1\"}" \
  "/api/network/v1/enterprises/$PARTNER_E/partners/settlements-signing" | field '["settlement"]["id"]')
DISPUTE=$(signed POST "$CLIENTS/settlements/$SETTLEMENT/disputes" "$USER_TOKEN" "$CSEED" \
  "{\"connectionId\":\"$CONNECTION\",\"reason\":\"contract\",\"expectedTransfers\":{\"BTC\":\"-500000\"},\"nonce\":\"c-3\"}" | field '["dispute"]["id"]')
# The client withdraws a second dispute as invalid: its closure shows in the dispute lists.
signed POST "$CLIENTS/connections/$CONNECTION/allocations" "$USER_TOKEN" "$CSEED" \
  '{"amount":{"currency":"BTC","quantity":"1000000"},"clientExternalId":"contract-alloc-2","nonce":"c-4"}' >/dev/null
CUTOFF=$(python3 -c 'import datetime;print(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00","Z"))')
SETTLEMENT2=$(signed POST "/api/network/v2/enterprises/$PARTNER_E/partners/settlements" "$USER_TOKEN" "$PSEED" \
  "{\"externalId\":\"contract-s2\",\"notes\":\"second\",\"settlementAmounts\":{\"$CONNECTION\":{\"BTC\":\"2000\"}},\"cutoffAt\":\"$CUTOFF\",\"nonce\":\"p-2\"}" \
  "/api/network/v1/enterprises/$PARTNER_E/partners/settlements-signing" | field '["settlement"]["id"]')
DISPUTE2=$(signed POST "$CLIENTS/settlements/$SETTLEMENT2/disputes" "$USER_TOKEN" "$CSEED" \
  "{\"connectionId\":\"$CONNECTION\",\"expectedTransfers\":{\"BTC\":\"3000\"},\"nonce\":\"c-5\"}" | field '["dispute"]["id"]')
signed POST "$CLIENTS/settlements/disputes/$DISPUTE2/close" "$USER_TOKEN" "$CSEED" '{"notes":"withdrawn","nonce":"c-6"}' >/dev/null
# A partner without disputes performs a v1 settlement at once: completed, with its transfers.
DIRECT_E=$(admin POST /enterprises '{"name":"Contract Desk","oesLicense":true}' | field '["enterprise"]["id"]')
DIRECT_ID=$(admin POST "/enterprises/$DIRECT_E/partner" '{"name":"Contract Desk","amountFormat":"decimal"}' | field '["partner"]["id"]')
admin POST "/enterprises/$DIRECT_E/keys" "{\"publicKey\":\"$(echo "$PKEY" | field '["publicKey"]')\"}" >/dev/null
admin POST "/enterprises/$DIRECT_E/deposits" '{"currency":"BTC","quantity":"100000000","externalId":"contract-deposit-3"}' >/dev/null
DESK_TOKEN=$(admin POST /users "{\"name\":\"contract-desk\",\"enterpriseIds\":[\"$DIRECT_E\"]}" | field '["accessToken"]')
CONNECTION2=$(signed POST "$CLIENTS/connections" "$USER_TOKEN" "$CSEED" \
  "{\"partnerId\":\"$DIRECT_ID\",\"name\":\"desk\",\"connectionKey\":\"contract-account-2\",\"nonce\":\"c-7\"}" | field '["connection"]["id"]')
signed POST "/api/network/v1/enterprises/$DIRECT_E/partners/settlements" "$DESK_TOKEN" "$PSEED" \
  "{\"externalId\":\"contract-v1\",\"settlementAmounts\":{\"$CONNECTION2\":{\"BTC\":\"0.01\"}},\"nonce\":\"d-1\"}" \
  "/api/network/v1/enterprises/$DIRECT_E/partners/settlements-signing" | field '["settlement"]["status"]' >/dev/null
export SETTLE_CONTRACT_USER_TOKEN=$USER_TOKEN SETTLE_CONTRACT_PARTNER=$PARTNER_E SETTLE_CONTRACT_CLIENT=$CLIENT_E \
  SETTLE_CONTRACT_CONNECTION=$CONNECTION SETTLE_CONTRACT_ALLOCATION=$ALLOCATION \
  SETTLE_CONTRACT_SETTLEMENT=$SETTLEMENT SETTLE_CONTRACT_DISPUTE=$DISPUTE
# The reads below may name objects the read models have not caught up with yet: wait for them.
for _ in $(seq 1 100); do
  curl -fsS -H "Authorization: Bearer $USER_TOKEN" "$API$CLIENTS/settlement/disputes?closed=true" | grep "$DISPUTE2" >/dev/null \
    && curl -fsS -H "Authorization: Bearer $USER_TOKEN" "$API$CLIENTS/settlements" | grep contract-v1 >/dev/null && break
  sleep 0.2
done
log "provisioned partner $PARTNER_E, client $CLIENT_E, connection $CONNECTION, settlement $SETTLEMENT, dispute $DISPUTE"

# Two passes: the network and audit routes first, on the provisioned objects; then the admin
# routes, whose random commands (a licence withdrawn, a partner deactivated) could otherwise
# take those objects away from the first pass.
# One worker: Python 3.11's `ast` is not safe across threads ("AST constructor recursion depth
# mismatch" inside Hypothesis), and two processes share the machine's two cores anyway.
status=0
for pass in '^/api/(network|audit)/' '^/api/admin/'; do
  log "schemathesis over schemas/openapi.json at $API: operations matching $pass ($EXAMPLES examples each)"
  "$ST" --config-file deploy/contract/schemathesis.toml run schemas/openapi.json \
    --url "$API" \
    --include-path-regex "$pass" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" \
    --workers 1 \
    --seed 20261202 \
    --request-timeout 30 \
    --generation-database none \
    --suppress-health-check all \
    --report junit --report-dir "$LOGS" \
    --no-color || status=$?
done
if [ "$status" -ne 0 ]; then
  log "FAILED (exit $status); the reports and the processes' logs are in $LOGS"
  exit "$status"
fi
log "passed"
