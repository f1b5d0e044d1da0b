"""Headless Chromium against Mandate's pages, through the DevTools protocol.

A virtual WebAuthn authenticator (CTAP2, internal transport, resident keys, user verification)
stands in for the person's device. The script enrols a passkey through an invitation link,
signs out, signs in with the passkey, and checks it lands signed in; also the session cookie's
attributes as the browser stored them.

Usage: passkey_browser.py ISSUER ENROL_LINK EMAIL
Prints `PASS name` / `FAIL name: reason` lines (conformance/run counts them).
Needs: chromium on PATH (or $CHROMIUM), the `websockets` package (pinned in
conformance/requirements.txt).
"""
import asyncio
import itertools
import json
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


async def run(issuer, link, email):
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
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(run(*sys.argv[1:4]))
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
