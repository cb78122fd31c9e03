# deploy/lib/own-processes.sh — sourced by scripts that run a command-api, a projector and a finalizer of their own against the local stack.
#
# Usage, after ROOT, PY, BIN, LOGS, say() and fail() are set and the stack's env is loaded:
#   own_processes NAME BUILD   # NAME prefixes the database, stream and instances; BUILD=0 skips `cargo build`
#   …export what the processes need besides (SETTLE_WEBHOOK_ALLOW, SETTLE_RETRY_SECONDS, …)…
#   start command-api "$API_PORT"; start projector "$PROJECTOR_PORT"; start finalizer "$FINALIZER_PORT"
# It leaves API, API_PORT, PROJECTOR_PORT, FINALIZER_PORT, DB and the pids array set, exports a
# fresh DATABASE_URL, JetStream stream, webhook and audit seeds and admin token, and on exit stops
# the processes and drops the database and the stream, whatever happened (FAILURE_NOTE is said
# when the script failed).

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

own_processes() { # name build
  OWN_NAME=$1
  if [ "$2" != 0 ]; then
    cargo build --quiet --locked -p command-api -p projector -p finalizer
  fi
  for b in command-api projector finalizer; do
    [ -x "$BIN/$b" ] || fail "$BIN/$b is missing: run cargo build --locked -p command-api -p projector -p finalizer"
  done
  # A database and a stream of this run's own.
  local tag
  tag=$("$PY" -c 'import uuid; print(uuid.uuid4().hex[:12])')
  DB=${OWN_NAME}_$tag
  export DATABASE_URL=${DATABASE_URL%/*}/$DB
  export SETTLE_EVENTS_STREAM=${OWN_NAME^^}_$tag
  export SETTLE_EVENTS_SUBJECT_PREFIX=$OWN_NAME$tag
  OWN_ADMIN_DB_URL=${DATABASE_URL%/*}/postgres
  OWN_PSQL=$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)
  API_PORT=$(free_port); PROJECTOR_PORT=$(free_port); FINALIZER_PORT=$(free_port)
  API=http://127.0.0.1:$API_PORT
  pids=()
  trap own_cleanup EXIT
  trap 'exit 130' INT TERM
  "$OWN_PSQL" -q "$OWN_ADMIN_DB_URL" -c "CREATE DATABASE $DB" >/dev/null
  export SETTLE_WEBHOOK_SEED; SETTLE_WEBHOOK_SEED=$(own_seed)
  export SETTLE_AUDIT_SEED; SETTLE_AUDIT_SEED=$(own_seed)
  export SETTLE_ADMIN_TOKEN; SETTLE_ADMIN_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
  export RUST_LOG=${RUST_LOG:-warn}
  unset SETTLE_DEVELOPMENT
}

own_seed() { "$BIN/command-api" keygen | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seed"])'; }

own_cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$OWN_PSQL" -q "$OWN_ADMIN_DB_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  # Delete the run's stream: one JetStream API request over the plain NATS protocol.
  "$PY" - "$NATS_URL" "$SETTLE_EVENTS_STREAM" <<'PYEOF' >/dev/null 2>&1 || true
import socket, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1].split(",")[0])
with socket.create_connection((url.hostname, url.port or 4222), timeout=5) as s:
    s.recv(4096)
    s.sendall(f'CONNECT {{"verbose":false}}\r\nPUB $JS.API.STREAM.DELETE.{sys.argv[2]} 0\r\n\r\nPING\r\n'.encode())
    s.recv(4096)
PYEOF
  if [ "$status" -ne 0 ]; then say "${FAILURE_NOTE:-logs: $LOGS}"; fi
  exit "$status"
}

# Starts binary NAME listening on PORT and waits until it is ready. The command-api first: it
# applies the migrations the others wait for.
start() { # name port
  SETTLE_LISTEN=127.0.0.1:$2 SETTLE_PROJECTOR_INSTANCE=$OWN_NAME-$1 "$BIN/$1" >"$LOGS/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || fail "$1 exited; see $LOGS/$1.log"
    sleep 0.2
  done
  fail "$1 is not ready on 127.0.0.1:$2: $(curl -sS "http://127.0.0.1:$2/readyz" 2>&1)"
}
