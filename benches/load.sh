#!/usr/bin/env bash
# Side-by-side load benchmark: Mandate vs the peer (panva/oidc-provider, /work/shared/bench/peer),
# same machine, same run, same wrk settings. See benches/README.md.
#
# env:
#   DURATION=20        measured seconds per case (after run_wrk.sh's 3 s warm-up)
#   THREADS=2 CONNS=32 wrk threads / connections
#   RESULTS_DIR=...    where raw outputs go (default: a new temp dir)
#   BENCH_SHARED=/work/shared/bench   run_wrk.sh, post.lua, peer/
#   PEER_DIR=...       an existing writable copy of peer/ (npm ci is run there if node_modules is missing)
#   ONLY=mandate|peer  run one side only (for trials); the default runs both
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${BENCH_SHARED:-/work/shared/bench}
DURATION=${DURATION:-20}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
ONLY=${ONLY:-all}
RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d /tmp/mandate-bench.XXXXXX)}
mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
export WRK_OUT=$RESULTS_DIR          # run_wrk.sh writes wrk_LABEL.txt there
T_START=$(date +%s)

log() { printf '[load.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# form-urlencode (RFC 6749 §2.3.1) client id and secret, then base64 "id:secret"
basic() { python3 -c 'import sys,base64,urllib.parse as u; q=lambda s:u.quote_plus(s,safe=""); print(base64.b64encode(f"{q(sys.argv[1])}:{q(sys.argv[2])}".encode()).decode())' "$1" "$2"; }
urlenc() { python3 -c 'import sys,urllib.parse as u; print(u.quote_plus(sys.argv[1], safe=""))' "$1"; }

# ---- cleanup: only the processes this script started -------------------------------------
STARTED=() TMPDIRS=()
stop_pid() {   # stop PID and its direct children (node cluster workers)
  local p=$1 kids
  kill -0 "$p" 2>/dev/null || return 0
  kids=$(pgrep -P "$p" || true)
  kill "$p" $kids 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" $kids 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in "${STARTED[@]}"; do stop_pid "$p"; done
  for t in "${TMPDIRS[@]}"; do rm -rf "$t"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. wrk ------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
command -v wrk >/dev/null || die "wrk not available"
for t in curl python3 node npm; do command -v $t >/dev/null || die "$t not found"; done

# run_wrk LABEL URL BASIC BODY "PIDS": run_wrk.sh, output kept in RESULTS_DIR/LABEL.out
run_wrk() {
  log "load: $1 ($DURATION s + 3 s warm-up)"
  "$SHARED/run_wrk.sh" "$1" "$2" "$3" "$4" "$5" "$DURATION" "$THREADS" "$CONNS" | tee "$RESULTS_DIR/$1.out"
}

# check_once NAME URL BASIC BODY: one request with curl; must be 200 (body saved as NAME.json)
check_once() {
  local code
  code=$(curl -sS -o "$RESULTS_DIR/$1.json" -w '%{http_code}' -H "Authorization: Basic $3" \
         -H 'Content-Type: application/x-www-form-urlencoded' --data-raw "$4" "$2") || code=000
  if [[ $code != 200 ]]; then
    log "sanity check $1: POST $2 -> HTTP $code: $(head -c 600 "$RESULTS_DIR/$1.json" 2>/dev/null)"
    return 1
  fi
}

# ---- 2-4. Mandate ------------------------------------------------------------------------
run_mandate() {
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet) >"$RESULTS_DIR/cargo-build.log" 2>&1 \
    || { tail -30 "$RESULTS_DIR/cargo-build.log" >&2; die "cargo build failed"; }
  local BIN=${MANDATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mandate}
  local DATA PORT URL MPID
  DATA=$(mktemp -d /tmp/mandate-bench-data.XXXXXX); TMPDIRS+=("$DATA")
  PORT=$(free_port); URL=http://127.0.0.1:$PORT
  MANDATE_LOG_LEVEL=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    >"$RESULTS_DIR/mandate.log" 2>&1 &
  MPID=$!; STARTED+=("$MPID")
  for _ in $(seq 300); do
    kill -0 "$MPID" 2>/dev/null || { tail -30 "$RESULTS_DIR/mandate.log" >&2; die "mandate exited during start-up"; }
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz") == 200 ]] && break
    sleep 0.1
  done
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz") == 200 ]] || die "mandate not ready after 30 s (log: $RESULTS_DIR/mandate.log)"
  grep -q "issuer $URL" "$RESULTS_DIR/mandate.log" || log "note: no 'issuer $URL' line in mandate.log"
  log "mandate pid $MPID ready on $URL (data dir $DATA)"

  local R=http://mcp.bench.test/mcp
  MANDATE_LOG_LEVEL=warn "$BIN" --data-dir "$DATA" servers add --uri "$R" --name bench --env prod \
    --tool search:read:internal --tool fetch:read:public --tool write_doc:write:internal --json \
    >"$RESULTS_DIR/mandate-server.json" || die "servers add failed"
  MANDATE_LOG_LEVEL=warn "$BIN" --data-dir "$DATA" agents add --name bench-agent --owner ops@example.com \
    --env prod --trust medium --resource "$R" --scope "tools:read tools:write_doc" \
    --auth-method client_secret_basic --json >"$RESULTS_DIR/mandate-agent.json" || die "agents add failed"
  local S_ID S_SEC A_ID A_SEC
  S_ID=$(jq -er .client_id "$RESULTS_DIR/mandate-server.json");  S_SEC=$(jq -er .client_secret "$RESULTS_DIR/mandate-server.json")
  A_ID=$(jq -er .client_id "$RESULTS_DIR/mandate-agent.json");   A_SEC=$(jq -er .client_secret "$RESULTS_DIR/mandate-agent.json")
  sleep 2   # the server reloads the registry within ~1 s

  local ABASIC SBASIC BODY TOKEN
  ABASIC=$(basic "$A_ID" "$A_SEC"); SBASIC=$(basic "$S_ID" "$S_SEC")
  BODY='grant_type=client_credentials&resource=http%3A%2F%2Fmcp.bench.test%2Fmcp&scope=tools%3Aread'
  check_once mandate_token_check "$URL/token" "$ABASIC" "$BODY" || die "Mandate /token is not 200 (see above)"
  run_wrk mandate_token "$URL/token" "$ABASIC" "$BODY" "$MPID"

  # a fresh token right before the introspection load (Mandate tokens are short-lived)
  check_once mandate_token_check2 "$URL/token" "$ABASIC" "$BODY" || die "Mandate /token is not 200 (see above)"
  TOKEN=$(jq -er .access_token "$RESULTS_DIR/mandate_token_check2.json") || die "no access_token from Mandate"
  check_once mandate_introspect_check "$URL/introspect" "$SBASIC" "token=$(urlenc "$TOKEN")" \
    || die "Mandate /introspect is not 200 (see above)"
  jq -e '.active == true' "$RESULTS_DIR/mandate_introspect_check.json" >/dev/null \
    || log "WARNING: Mandate introspection says the token is not active: $(cat "$RESULTS_DIR/mandate_introspect_check.json")"
  run_wrk mandate_introspect "$URL/introspect" "$SBASIC" "token=$(urlenc "$TOKEN")" "$MPID"
  check_once mandate_introspect_after "$URL/introspect" "$SBASIC" "token=$(urlenc "$TOKEN")" \
    && jq -e '.active == true' "$RESULTS_DIR/mandate_introspect_after.json" >/dev/null \
    || log "WARNING: after the load, Mandate no longer reports the token active (expired during the run?)"

  # token exchange (RFC 8693): the MCP server exchanges a token it received (for R, issued to
  # an agent allowed on both) for one to a downstream server R2, with itself in the act chain.
  local R2=http://mcp2.bench.test/mcp D_ID D_SEC TE_BODY
  MANDATE_LOG_LEVEL=warn "$BIN" --data-dir "$DATA" servers add --uri "$R2" --name bench-downstream \
    --env prod --tool search:read:internal --json >"$RESULTS_DIR/mandate-server2.json" \
    || die "servers add (downstream) failed"
  MANDATE_LOG_LEVEL=warn "$BIN" --data-dir "$DATA" agents add --name bench-delegating --owner ops@example.com \
    --env prod --trust medium --resource "$R" --resource "$R2" --scope "tools:read" \
    --auth-method client_secret_basic --json >"$RESULTS_DIR/mandate-agent2.json" || die "agents add failed"
  D_ID=$(jq -er .client_id "$RESULTS_DIR/mandate-agent2.json"); D_SEC=$(jq -er .client_secret "$RESULTS_DIR/mandate-agent2.json")
  sleep 2
  check_once mandate_exchange_subject "$URL/token" "$(basic "$D_ID" "$D_SEC")" "$BODY" \
    || die "Mandate /token for the exchange subject is not 200"
  TOKEN=$(jq -er .access_token "$RESULTS_DIR/mandate_exchange_subject.json")
  TE_BODY="grant_type=$(urlenc urn:ietf:params:oauth:grant-type:token-exchange)&subject_token=$(urlenc "$TOKEN")"
  TE_BODY+="&subject_token_type=$(urlenc urn:ietf:params:oauth:token-type:access_token)&resource=$(urlenc "$R2")"
  check_once mandate_exchange_check "$URL/token" "$SBASIC" "$TE_BODY" || die "Mandate token exchange is not 200"
  run_wrk mandate_token_exchange "$URL/token" "$SBASIC" "$TE_BODY" "$MPID"

  stop_pid "$MPID"
  if grep -v "issuer $URL" "$RESULTS_DIR/mandate.log" | grep -q '[^[:space:]]'; then
    log "note: mandate.log has other output (warnings/errors?): $RESULTS_DIR/mandate.log"
  fi
}

# ---- 5. the peer (node-oidc-provider), per /work/shared/bench/README.md -----------------
PEER=${PEER_DIR:-}
prepare_peer() {
  if [[ -z $PEER ]]; then PEER=$(mktemp -d /tmp/mandate-bench-peer.XXXXXX); TMPDIRS+=("$PEER"); fi
  if [[ ! -d $PEER/node_modules/oidc-provider ]]; then
    cp -r "$SHARED/peer/." "$PEER" && chmod -R u+w "$PEER"
    log "npm ci in $PEER"
    (cd "$PEER" && npm ci --no-audit --no-fund) >"$RESULTS_DIR/peer-npm-ci.log" 2>&1 \
      || { tail -20 "$RESULTS_DIR/peer-npm-ci.log" >&2; die "npm ci failed"; }
  fi
}
PEER_PID=
start_peer() {   # start_peer WORKERS LOGNAME; sets PEER_PID, PEER_URL, PEER_PIDS (primary + workers)
  local W=$1 port
  port=$(free_port); PEER_URL=http://127.0.0.1:$port
  (cd "$PEER" && WORKERS=$W QUIET=1 PORT=$port exec node server.mjs) >"$RESULTS_DIR/$2.log" 2>&1 &
  PEER_PID=$!; STARTED+=("$PEER_PID")
  for _ in $(seq 300); do
    kill -0 "$PEER_PID" 2>/dev/null || { cat "$RESULTS_DIR/$2.log" >&2; die "peer exited during start-up"; }
    (( $(grep -c '^peer AS' "$RESULTS_DIR/$2.log") >= W )) && break
    sleep 0.1
  done
  (( $(grep -c '^peer AS' "$RESULTS_DIR/$2.log") >= W )) || die "peer not ready after 30 s"
  PEER_PIDS=$(echo "$PEER_PID" $(pgrep -P "$PEER_PID" || true))
  log "peer (WORKERS=$W) pids $PEER_PIDS on $PEER_URL"
}
run_peer() {
  prepare_peer
  local CBASIC RBASIC BODY TOKEN
  CBASIC=$(printf 'agent-cc:agent-cc-secret-0123456789abcdef' | base64 -w0)
  RBASIC=$(printf 'mcp-rs:mcp-rs-secret-0123456789abcdef' | base64 -w0)

  start_peer 2 peer-cc
  BODY='grant_type=client_credentials&resource=https%3A%2F%2Fmcp-es256.example.test%2F&scope=tools%3Aread%20tools%3Acall'
  check_once peer_token_check "$PEER_URL/token" "$CBASIC" "$BODY" || die "peer /token is not 200"
  run_wrk peer_cc_es256 "$PEER_URL/token" "$CBASIC" "$BODY" "$PEER_PIDS"
  stop_pid "$PEER_PID"

  start_peer 1 peer-introspect
  BODY='grant_type=client_credentials&resource=https%3A%2F%2Fmcp-opaque.example.test%2F&scope=tools%3Aread%20tools%3Acall'
  check_once peer_opaque_token_check "$PEER_URL/token" "$CBASIC" "$BODY" || die "peer /token (opaque) is not 200"
  TOKEN=$(jq -er .access_token "$RESULTS_DIR/peer_opaque_token_check.json")
  check_once peer_introspect_check "$PEER_URL/token/introspection" "$RBASIC" "token=$(urlenc "$TOKEN")" \
    || die "peer introspection is not 200"
  jq -e '.active == true' "$RESULTS_DIR/peer_introspect_check.json" >/dev/null \
    || die "peer introspection says inactive: $(cat "$RESULTS_DIR/peer_introspect_check.json")"
  run_wrk peer_introspect "$PEER_URL/token/introspection" "$RBASIC" "token=$(urlenc "$TOKEN")" "$PEER_PIDS"
  check_once peer_introspect_after "$PEER_URL/token/introspection" "$RBASIC" "token=$(urlenc "$TOKEN")" \
    && jq -e '.active == true' "$RESULTS_DIR/peer_introspect_after.json" >/dev/null \
    || log "WARNING: after the load, the peer no longer reports the token active"
  stop_pid "$PEER_PID"
}

[[ $ONLY == peer ]] || run_mandate
[[ $ONLY == mandate ]] || run_peer

# ---- 6. summary --------------------------------------------------------------------------
T_END=$(date +%s)
python3 - "$RESULTS_DIR" "$DURATION" "$THREADS" "$CONNS" "$((T_END - T_START))" <<'PY' | tee "$RESULTS_DIR/summary.txt"
import os, re, sys
d, dur, thr, conns, elapsed = sys.argv[1:]
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}
def parse(label):
    p, o = os.path.join(d, f"wrk_{label}.txt"), os.path.join(d, f"{label}.out")
    if not os.path.exists(p): return None
    t = open(p).read()
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
        r["p" + q] = float(m.group(1)) * UNIT[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t); r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", t); r["sockerr"] = m.group(0) if m else ""
    m = re.search(r"(\d+) requests in", t); r["n"] = int(m.group(1))
    c = open(o).read() if os.path.exists(o) else ""
    m = re.search(r"server (\d+)%\s+wrk (\d+)%\s+machine busy (\d+)%\s+other processes ~(\d+)%", c)
    r["cpu"] = "srv %s%% wrk %s%% other %s%%" % (m.group(1), m.group(2), m.group(4)) if m else "?"
    r["other"] = int(m.group(4)) if m else 0
    return r
cases = [("client_credentials /token", "mandate_token", "peer_cc_es256", "peer: ES256 JWT, 2 workers"),
         ("introspection", "mandate_introspect", "peer_introspect", "peer: opaque token, 1 process")]
f = lambda x, k, fmt: (fmt % x[k]) if x else "-".rjust(int(re.match(r"%(\d+)", fmt).group(1)))
print(f"\n=== Mandate vs node-oidc-provider: wrk {thr} threads / {conns} connections / {dur} s (+3 s warm-up); script took {elapsed} s")
print(f"{'path':27} | {'Mandate req/s':>13} {'p50 ms':>7} {'p99 ms':>7} | {'peer req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>6} | targets (ratio>=5, p99<5ms)")
print("-" * 125)
problems, ok_all = [], True
for name, ml, pl, note in cases:
    m, p = parse(ml), parse(pl)
    ratio = m["rps"] / p["rps"] if m and p else None
    if m and p:
        ok_r, ok_l = ratio >= 5, m["p99"] < 5.0
        verdict = ("HOLD" if ok_r and ok_l else "MISS") + f" (ratio {'ok' if ok_r else 'LOW'}, p99 {'ok' if ok_l else 'HIGH'})"
        ok_all &= ok_r and ok_l
    else:
        verdict, ok_all = "n/a", False
    print(f"{name:27} | {f(m,'rps','%13.0f')} {f(m,'p50','%7.2f')} {f(m,'p99','%7.2f')} | "
          f"{f(p,'rps','%10.0f')} {f(p,'p50','%7.2f')} {f(p,'p99','%7.2f')} | "
          f"{('%5.1fx' % ratio) if ratio else '-':>6} | {verdict}")
    for who, x in (("Mandate", m), ("peer", p)):
        if not x: continue
        if x["non2xx"]: problems.append(f"{who} {name}: {x['non2xx']} of {x['n']} responses were non-2xx")
        if x["sockerr"]: problems.append(f"{who} {name}: {x['sockerr']}")
        if x["other"] >= 20: problems.append(f"{who} {name}: other processes used ~{x['other']}% CPU (noisy run, repeat)")
print("CPU (% of one core):  " + "   ".join(
    f"{lbl}: {parse(l)['cpu']}" for lbl, l in (("M token", "mandate_token"), ("M introspect", "mandate_introspect"),
                                              ("peer cc", "peer_cc_es256"), ("peer introspect", "peer_introspect")) if parse(l)))
x = parse("mandate_token_exchange")
if x:
    print(f"{'token exchange (server->downstream)':27} | {x['rps']:13.0f} {x['p50']:7.2f} {x['p99']:7.2f} | (no peer case)")
    if x["non2xx"]: problems.append(f"Mandate token exchange: {x['non2xx']} of {x['n']} responses were non-2xx")
    if x["other"] >= 20: problems.append(f"Mandate token exchange: other processes used ~{x['other']}% CPU (noisy run, repeat)")
print("peer cases: client_credentials = ES256 JWT with WORKERS=2; introspection = opaque token with WORKERS=1")
for pr in problems: print("WARNING:", pr)
print("all targets hold" if ok_all and not problems else "targets NOT all met (or run not clean)" if not ok_all else "targets hold, but see warnings")
PY
log "raw outputs: $RESULTS_DIR"
