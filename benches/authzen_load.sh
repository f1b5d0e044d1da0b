#!/usr/bin/env bash
# AuthZEN load: POST /access/v1/evaluation (one tool call, agent subject, default policies) with
# the same wrk settings as load.sh. Builds release, starts Mandate on a free port, stops it.
#   DURATION=20 THREADS=2 CONNS=32 RESULTS_DIR=... benches/authzen_load.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${BENCH_SHARED:-/work/shared/bench}
DURATION=${DURATION:-20} THREADS=${THREADS:-2} CONNS=${CONNS:-32}
RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d /tmp/mandate-authzen-bench.XXXXXX)}
mkdir -p "$RESULTS_DIR"
export WRK_OUT=$RESULTS_DIR
(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/mandate
DATA=$(mktemp -d /tmp/mandate-authzen-data.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
URL=http://127.0.0.1:$PORT
MANDATE_LOG_LEVEL=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" >"$RESULTS_DIR/mandate.log" 2>&1 &
MPID=$!
trap 'kill $MPID 2>/dev/null; wait $MPID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 300); do [[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz") == 200 ]] && break; sleep 0.1; done
R=http://mcp.bench.test/mcp
"$BIN" --data-dir "$DATA" servers add --uri "$R" --name bench --env prod \
  --tool search:read:internal --tool fetch:read:public --tool write_doc:write:internal --json >"$RESULTS_DIR/server.json"
"$BIN" --data-dir "$DATA" agents add --name bench-agent --owner ops@example.com --env prod --trust medium \
  --resource "$R" --scope "tools:read tools:write_doc" --json >"$RESULTS_DIR/agent.json"
sleep 2
S_ID=$(jq -er .client_id "$RESULTS_DIR/server.json"); S_SEC=$(jq -er .client_secret "$RESULTS_DIR/server.json")
A_ID=$(jq -er .client_id "$RESULTS_DIR/agent.json")
SBASIC=$(printf '%s:%s' "$S_ID" "$S_SEC" | base64 -w0)
BODY="{\"subject\":{\"type\":\"agent\",\"id\":\"$A_ID\"},\"action\":{\"name\":\"call\"},\"resource\":{\"type\":\"tool\",\"id\":\"search\"},\"context\":{\"risk_score\":10}}"
curl -sS -u "$S_ID:$S_SEC" -H 'content-type: application/json' -d "$BODY" "$URL/access/v1/evaluation" | tee "$RESULTS_DIR/check.json"; echo
jq -e '.decision == true' "$RESULTS_DIR/check.json" >/dev/null || { echo "AuthZEN check failed" >&2; exit 1; }
"$SHARED/run_wrk.sh" mandate_authzen "$URL/access/v1/evaluation" "$SBASIC" "$BODY" "$MPID" "$DURATION" "$THREADS" "$CONNS"
echo "raw outputs: $RESULTS_DIR"
