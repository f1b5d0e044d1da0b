"""Step-up approval in headless Chromium (DevTools protocol, virtual WebAuthn authenticator).

An agent (a plain HTTP client here, like any agent) asks for a restricted tool with
`POST /bc-authorize` (OpenID CIBA, poll mode). An approver, invited with the CLI, enrols a
passkey in the browser, keeps /approvals open, sees the request appear without reloading (the
page's server-sent events), opens it, checks what is shown, and approves with the passkey; the
agent's poll of /token then returns a token whose `authorization_details` are exactly what was
asked. Then the same for a denial with a reason, which the agent receives as
`error_description`.

With NODE_CHECK (conformance/node/ciba_check.mjs), a third round has a client that is not
ours ask and poll: oauth4webapi's backchannel authentication functions; the browser approves.

Usage: approval_browser.py ISSUER ENROL_LINK EMAIL RESOURCE AGENT_ID AGENT_SECRET [NODE_CHECK]
Prints `PASS name` / `FAIL name: reason` lines (conformance/run counts them).
"""
import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from passkey_browser import Cdp, jwt_payload, launch  # noqa: E402

FAILED = 0
CIBA = "urn:openid:params:grant-type:ciba"


def report(ok, name, why=""):
    global FAILED
    if ok:
        print(f"PASS approval.{name}", flush=True)
    else:
        FAILED += 1
        print(f"FAIL approval.{name}: {why}", flush=True)


async def screenshot(cdp, name):
    """Saves the page as $APPROVAL_SCREENSHOTS/NAME.png when that variable is set (README images)."""
    where = os.environ.get("APPROVAL_SCREENSHOTS")
    if not where:
        return
    os.makedirs(where, exist_ok=True)
    shot = await cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    with open(os.path.join(where, f"{name}.png"), "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def agent_post(url, form, agent):
    basic = base64.b64encode(f"{agent[0]}:{agent[1]}".encode()).decode()
    req = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": f"Basic {basic}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def ask(issuer, resource, agent, details, message):
    return agent_post(f"{issuer}/bc-authorize", {
        "resource": resource,
        "scope": "tools:deploy",
        "authorization_details": json.dumps(details),
        "binding_message": message,
    }, agent)


async def poll(issuer, agent, auth_req_id, interval, seconds=60):
    """Polls /token as CIBA says (respecting interval and slow_down) until an answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = agent_post(f"{issuer}/token", {"grant_type": CIBA, "auth_req_id": auth_req_id}, agent)
        if body.get("error") == "slow_down":
            interval += 5
        elif body.get("error") != "authorization_pending":
            return status, body
        await asyncio.sleep(interval)
    return 0, {"error": "timeout"}


async def decide(cdp, issuer, request_id, message, decision, reason=None, label=None, script=True):
    """From the live list: open the request, check it, decide with the passkey."""
    row = await cdp.wait_for(
        f"document.querySelector('#approvals tr[data-id={json.dumps(request_id)}] a') !== null"
        " && window.__mandateStillHere === 1", seconds=20)
    label = label or decision
    report(bool(row), f"{label}.request_appears_live", "the row did not appear without a reload")
    await screenshot(cdp, f"approvals-list-{label}")
    await cdp.eval(f"document.querySelector('#approvals tr[data-id={json.dumps(request_id)}] a').click()")
    shown = await cdp.wait_for(
        "document.getElementById('decide') && document.getElementById('binding-message')"
        " ? document.getElementById('binding-message').textContent : ''")
    report(shown == message, f"{label}.page_shows_binding_message_as_text", repr(shown))
    args = await cdp.eval("(document.querySelector('pre.arguments') || {}).textContent || ''")
    if script:
        report("<script>" in args and await cdp.eval("document.querySelectorAll('pre.arguments script').length") == 0,
               f"{label}.arguments_are_text", repr(args[:200]))
    if reason:
        await cdp.eval(f"document.getElementById('reason').value = {json.dumps(reason)}")
    await screenshot(cdp, f"approval-request-{label}")
    await cdp.eval(f"document.getElementById({json.dumps(decision)}).click()")
    want = "approved" if decision == "approve" else "denied"
    status = await cdp.wait_for(
        f"(document.getElementById('status') || {{}}).textContent === {json.dumps(want)}"
        " ? 'ok' : ''", seconds=20)
    err = await cdp.eval("(document.querySelector('[data-role=error]') || {}).textContent || ''")
    report(status == "ok", f"{label}.passkey_decision", f"page error {err!r}")


async def node_round(cdp, issuer, resource, agent, node_check):
    """oauth4webapi asks and polls; the approver approves in the browser."""
    message = "Deploy api v7 (oauth4webapi)"
    env = dict(os.environ, CONF_ISSUER=issuer, CONF_RESOURCE=resource, CONF_AGENT_ID=agent[0],
               CONF_AGENT_SECRET=agent[1], CONF_MESSAGE=message)
    await cdp.send("Page.navigate", {"url": issuer + "/approvals"})
    await cdp.wait_for("document.getElementById('approvals') !== null")
    await cdp.eval("window.__mandateStillHere = 1")
    await asyncio.sleep(0.5)
    rid = ""
    proc = await asyncio.create_subprocess_exec(
        "node", node_check, env=env, stdout=asyncio.subprocess.PIPE,
        cwd=os.path.dirname(os.path.abspath(node_check)))
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                break
            text = line.decode().rstrip()
            if text.startswith("ASKED "):
                rid = await cdp.wait_for(
                    "(() => { const r = [...document.querySelectorAll('#approvals tr[data-id]')]"
                    f".find(t => t.textContent.includes({json.dumps(message)})); return r ? r.dataset.id : ''; }})()",
                    seconds=20)
                if not rid:
                    report(False, "node.request_appears_live", "no row with the binding message")
                    break
            elif text == "PENDING" and rid:
                await decide(cdp, issuer, rid, message, "approve", label="node", script=False)
            elif text.startswith(("PASS ", "FAIL ")):
                print(text, flush=True)
                if text.startswith("FAIL "):
                    global FAILED
                    FAILED += 1
        rc = await asyncio.wait_for(proc.wait(), 120)
        report(rc == 0, "node.exit", f"ciba_check.mjs exited {rc}")
    finally:
        if proc.returncode is None:
            proc.kill()


async def run(issuer, link, email, resource, agent_id, agent_secret, node_check=None):
    agent = (agent_id, agent_secret)
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        report(False, "chromium", "chromium is not installed (apt-get install chromium)")
        return
    profile = tempfile.mkdtemp(prefix="mandate-chromium-")
    proc = None
    try:
        proc, endpoint = launch(chromium, profile)
        async with websockets.connect(endpoint, max_size=None) as ws:
            cdp = Cdp(ws)
            target = await cdp.send("Target.createTarget", {"url": "about:blank"}, page=False)
            att = await cdp.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
            )
            cdp.session = att["sessionId"]
            await cdp.send("Page.enable")
            await cdp.send("Runtime.enable")
            await cdp.send("WebAuthn.enable", {"enableUI": False})
            await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
                "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                "hasUserVerification": True, "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }})
            # The approver enrols a passkey (which signs them in).
            await cdp.send("Page.navigate", {"url": link})
            await cdp.wait_for(
                "document.documentElement.dataset.passkeysReady === '1' "
                "&& document.querySelector('#passkey-register button') !== null")
            await cdp.eval("document.querySelector('#passkey-register button').click()")
            who = await cdp.wait_for(
                "location.pathname === '/account' && document.getElementById('signed-in-as') "
                "? document.getElementById('signed-in-as').textContent : ''")
            report(who == email, "approver_signs_in", f"signed in as {who!r}")

            for decision, reason in (("approve", None), ("deny", "not during the freeze")):
                await cdp.send("Page.navigate", {"url": issuer + "/approvals"})
                await cdp.wait_for("document.getElementById('approvals') !== null")
                await cdp.eval("window.__mandateStillHere = 1")
                await asyncio.sleep(0.5)  # the event stream connects
                details = [{
                    "type": "mcp_tool_call",
                    "tool": "deploy",
                    "arguments": {"service": "web", "version": "v42", "note": "<script>alert(1)</script>"},
                    "reason": f"browser test {decision}",
                }]
                message = f"Deploy web v42 <{decision}>"
                status, asked = ask(issuer, resource, agent, details, message)
                report(status == 200 and "auth_req_id" in asked, f"{decision}.bc_authorize", json.dumps(asked)[:300])
                if status != 200:
                    continue
                # The request's public id, as the list shows it.
                rid = await cdp.wait_for(
                    "(() => { const r = [...document.querySelectorAll('#approvals tr[data-id]')]"
                    f".find(t => t.textContent.includes({json.dumps(message)})); return r ? r.dataset.id : ''; }})()",
                    seconds=20)
                if not rid:
                    report(False, f"{decision}.request_appears_live", "no row with the binding message")
                    continue
                await decide(cdp, issuer, rid, message, decision, reason)
                status, body = await poll(issuer, agent, asked["auth_req_id"], asked.get("interval", 5))
                if decision == "approve":
                    claims = jwt_payload(body.get("access_token", "x.e30.x"))
                    ok = (status == 200 and claims.get("authorization_details") == details
                          and claims.get("acr") == "urn:mandate:acr:passkey-approval"
                          and claims.get("aud") == resource and claims.get("scope") == "tools:deploy"
                          and claims.get("approver", "").startswith("hum_"))
                    report(ok, "approve.poll_returns_token_with_details", json.dumps(body)[:300] + json.dumps(claims)[:300])
                    status, again = await poll(issuer, agent, asked["auth_req_id"], 0)
                    report(again.get("error") == "invalid_grant", "approve.second_redemption_refused", json.dumps(again))
                else:
                    ok = body.get("error") == "access_denied" and body.get("error_description") == reason
                    report(ok, "deny.poll_returns_access_denied_with_reason", json.dumps(body)[:300])
            if node_check:
                await node_round(cdp, issuer, resource, agent, node_check)
            cdp.reader.cancel()
            await cdp.ws.close()
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check
        report(False, "run", f"{type(exc).__name__}: {exc}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except Exception:  # noqa: BLE001
                proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    if len(sys.argv) not in (7, 8):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(run(*sys.argv[1:]))
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
