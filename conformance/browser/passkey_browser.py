"""Headless Chromium against Mandate's pages, through the DevTools protocol.

A virtual WebAuthn authenticator (CTAP2, internal transport, resident keys, user verification)
stands in for the person's device. The script enrols a passkey through an invitation link,
signs out, signs in with the passkey, and checks it lands signed in; also the session cookie's
attributes as the browser stored them.

With RESOURCE and ADMIN_TOKEN (a registered MCP server and an admin API token used as the
initial access token of dynamic client registration), it then completes an authorization code
flow for the signed-in person: a public client registers, the browser opens /authorize, the
consent page names the client and the tool, the person allows, the browser lands on the
client's redirect URI with `code`, `state` and `iss`, and the code (with its PKCE verifier and
`resource`) buys an access token for that resource and person.

Usage: passkey_browser.py ISSUER ENROL_LINK EMAIL [RESOURCE ADMIN_TOKEN]
Prints `PASS name` / `FAIL name: reason` lines (conformance/run counts them).
Needs: chromium on PATH (or $CHROMIUM), the `websockets` package (pinned in
conformance/requirements.txt).
"""
import asyncio
import base64
import hashlib
import http.server
import itertools
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import websockets

FAILED = 0


def report(ok, name, why=""):
    global FAILED
    if ok:
        print(f"PASS browser.{name}", flush=True)
    else:
        FAILED += 1
        print(f"FAIL browser.{name}: {why}", flush=True)


class Cdp:
    """One DevTools websocket; commands for the page go through its flat session."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending = {}
        self.session = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            await self._loop()
        except websockets.ConnectionClosed:
            pass

    async def _loop(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if msg.get("method") in ("Runtime.exceptionThrown", "Runtime.consoleAPICalled"):
                print(f"# page: {json.dumps(msg.get('params'))[:500]}", file=sys.stderr, flush=True)
            fut = self.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def send(self, method, params=None, page=True, timeout=20):
        i = next(self.ids)
        msg = {"id": i, "method": method, "params": params or {}}
        if page and self.session:
            msg["sessionId"] = self.session
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send(json.dumps(msg))
        resp = await asyncio.wait_for(fut, timeout)
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp.get("result", {})

    async def eval(self, expr):
        r = await self.send(
            "Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate {expr!r}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    async def wait_for(self, expr, seconds=15):
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            try:
                last = await self.eval(expr)
                if last:
                    return last
            except RuntimeError:
                pass  # navigating: the context is being replaced
            await asyncio.sleep(0.1)
        return last


def launch(chromium, profile):
    proc = subprocess.Popen(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("chromium did not print its DevTools endpoint")


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_payload(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def callback_server():
    """The client's redirect URI: records the query of the first request to /cb."""
    got = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/cb" and not got:
                got.update(urllib.parse.parse_qsl(url.query))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"done")

        def log_message(self, *args):
            pass

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port, got


def post_json(url, body, token):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    return json.load(urllib.request.urlopen(req, timeout=10))


async def authorization_code_flow(cdp, issuer, email, resource, admin_token):
    srv, port, got = callback_server()
    try:
        redirect_uri = f"http://127.0.0.1:{port}/cb"
        client = None
        deadline = time.monotonic() + 10
        while client is None and time.monotonic() < deadline:
            try:  # the admin token reaches the running server on its next registry refresh
                client = post_json(f"{issuer}/register", {
                    "client_name": "Browser test app",
                    "redirect_uris": [redirect_uri],
                    "application_type": "native",
                    "token_endpoint_auth_method": "none",
                }, admin_token)
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    raise
                await asyncio.sleep(0.25)
        report(client is not None and "client_id" in client, "client_registers", str(client)[:200])
        if client is None:
            return
        verifier = b64url(os.urandom(32))
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        state = b64url(os.urandom(16))
        query = urllib.parse.urlencode({
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
            "resource": resource,
            "scope": "tools:echo",
        })
        await cdp.send("Page.navigate", {"url": f"{issuer}/authorize?{query}"})
        consent = await cdp.wait_for(
            "document.querySelector('form[action=\"/authorize/consent\"]') ? document.body.innerText : ''"
        )
        ok = bool(consent) and "Browser test app" in consent and "echo" in consent
        report(ok, "consent_page_names_client_and_tool", (consent or "")[:300])
        allow = await cdp.eval("!!document.querySelector('button[name=decision][value=approve]')")
        report(bool(allow), "consent_offers_allow", "no Allow button (policy permits nothing?)")
        if not allow:
            return
        await cdp.eval("document.querySelector('button[name=decision][value=approve]').click()")
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        ok = got.get("state") == state and got.get("iss") == issuer and bool(got.get("code"))
        report(ok, "redirect_with_code_state_iss", json.dumps(got)[:300])
        if not got.get("code"):
            return
        form = urllib.parse.urlencode({
            "grant_type": "authorization_code",
            "code": got["code"],
            "redirect_uri": redirect_uri,
            "client_id": client["client_id"],
            "code_verifier": verifier,
            "resource": resource,
        }).encode()
        try:
            tok = json.load(urllib.request.urlopen(
                urllib.request.Request(f"{issuer}/token", data=form), timeout=10))
        except urllib.error.HTTPError as exc:
            report(False, "code_buys_token", f"{exc.code} {exc.read()[:300]!r}")
            return
        claims = jwt_payload(tok.get("access_token", "x.e30.x"))
        aud = claims.get("aud")
        ok = (
            tok.get("token_type", "").lower() == "bearer"
            and (aud == resource or (isinstance(aud, list) and resource in aud))
            and claims.get("iss") == issuer
            and claims.get("sub", "").startswith("hum_")
            and "tools:echo" in claims.get("scope", "").split()
        )
        report(ok, "code_buys_token_for_the_person", json.dumps(claims)[:300])
    finally:
        srv.shutdown()


async def run(issuer, link, email, resource=None, admin_token=None):
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        report(False, "chromium", "chromium is not installed (apt-get install chromium)")
        return
    profile = tempfile.mkdtemp(prefix="mandate-chromium-")
    proc = None
    try:
        proc, endpoint = launch(chromium, profile)
        report(True, "chromium_starts")
        async with websockets.connect(endpoint, max_size=None) as ws:
            cdp = Cdp(ws)
            target = await cdp.send("Target.createTarget", {"url": "about:blank"}, page=False)
            att = await cdp.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
            )
            cdp.session = att["sessionId"]
            await cdp.send("Page.enable")
            await cdp.send("Runtime.enable")
            await cdp.send("Network.enable")
            await cdp.send("WebAuthn.enable", {"enableUI": False})
            auth = await cdp.send(
                "WebAuthn.addVirtualAuthenticator",
                {
                    "options": {
                        "protocol": "ctap2",
                        "transport": "internal",
                        "hasResidentKey": True,
                        "hasUserVerification": True,
                        "isUserVerified": True,
                        "automaticPresenceSimulation": True,
                    }
                },
            )
            auth_id = auth["authenticatorId"]

            # 1. Enrol through the invitation link.
            await cdp.send("Page.navigate", {"url": link})
            ready = await cdp.wait_for(
                "document.documentElement.dataset.passkeysReady === '1' "
                "&& document.querySelector('#passkey-register button') !== null"
            )
            report(bool(ready), "enrol_page_loads", "no enrolment form on the page")
            await cdp.eval("document.querySelector('#passkey-register [name=name]').value = 'chromium'")
            await cdp.eval("document.querySelector('#passkey-register button').click()")
            who = await cdp.wait_for(
                "location.pathname === '/account' && document.getElementById('signed-in-as') "
                "? document.getElementById('signed-in-as').textContent : ''"
            )
            error = await cdp.eval(
                "(document.querySelector('[data-role=error]') || {}).textContent || ''"
            ) if not who else ""
            report(who == email, "enrol_passkey_signs_in", f"signed in as {who!r}, page error {error!r}")
            creds = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": auth_id})
            report(len(creds.get("credentials", [])) == 1, "authenticator_holds_one_credential",
                   f"{len(creds.get('credentials', []))} credentials")

            cookies = (await cdp.send("Network.getCookies", {"urls": [issuer + "/"]})).get("cookies", [])
            session = [c for c in cookies if c["name"] == "__Host-mandate_session"]
            ok = (
                len(session) == 1
                and session[0]["httpOnly"]
                and session[0]["secure"]
                and session[0].get("sameSite") == "Lax"
                and session[0]["path"] == "/"
            )
            report(ok, "session_cookie_attributes", json.dumps(session)[:300])
            page_script = await cdp.eval("document.querySelectorAll('script:not([src])').length")
            report(page_script == 0, "no_inline_script", f"{page_script} inline scripts")

            # 2. Sign out.
            await cdp.eval("document.getElementById('logout').click()")
            at_login = await cdp.wait_for("location.pathname === '/login'")
            report(bool(at_login), "sign_out", "did not land on /login")
            await cdp.send("Page.navigate", {"url": issuer + "/account"})
            back = await cdp.wait_for("location.pathname === '/login' ? location.search : ''")
            report(back == "?next=%2Faccount", "signed_out_account_redirects", f"search {back!r}")

            # 3. Sign in with the passkey (email first); lands on `next`.
            await cdp.wait_for(
                "document.documentElement.dataset.passkeysReady === '1' "
                "&& document.querySelector('#passkey-login') !== null"
            )
            await cdp.eval(f"document.querySelector('#passkey-login [name=email]').value = {json.dumps(email)}")
            await cdp.eval("document.querySelector('#passkey-login button').click()")
            who = await cdp.wait_for(
                "location.pathname === '/account' && document.getElementById('signed-in-as') "
                "? document.getElementById('signed-in-as').textContent : ''"
            )
            error = await cdp.eval(
                "(document.querySelector('[data-role=error]') || {}).textContent || ''"
            ) if not who else ""
            report(who == email, "passkey_sign_in", f"signed in as {who!r}, page error {error!r}")
            creds = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": auth_id})
            count = max((c.get("signCount", 0) for c in creds.get("credentials", [])), default=0)
            report(count >= 2, "sign_count_moves", f"signCount {count}")

            # 4. An MCP client asks for the person's consent (authorization code flow).
            if resource and admin_token:
                await authorization_code_flow(cdp, issuer, email, resource, admin_token)
            cdp.reader.cancel()
            await cdp.ws.close()
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check
        report(False, "run", f"{type(exc).__name__}: {exc}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    if len(sys.argv) not in (4, 6):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(run(*sys.argv[1:]))
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
