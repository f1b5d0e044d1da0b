"""MCP Python SDK 2.x `OAuthClientProvider` (authorization code + PKCE, for a person) against
mcp_server.py, authorised by a Mandate running with `dev_auto_approve_email`.

Usage: python mcp_auth_client.py MCP_PORT

The provider follows the real chain: 401 -> protected resource metadata -> Mandate's AS
metadata -> dynamic client registration (native, public) -> /authorize (the scripted redirect
handler fetches it without following the redirect; Mandate signs the development person in
and approves) -> callback with code, state and iss (RFC 9207) -> /token with PKCE and
`resource` -> retry. Then: list tools, call `echo`, and rotate the refresh token by hand (a
reused one is refused).

Environment: CONF_ISSUER, CONF_WORK (srv_a.json for this MCP server).
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qs, urlparse

import anyio
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from checklib import Reporter, describe, env, expect, load_json

TIMEOUT = 30


class MemoryTokenStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def text_of(result) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def main() -> None:
    r = Reporter("mcp_auth_code")
    port = int(sys.argv[1])
    issuer = env("CONF_ISSUER")
    srv = load_json("srv_a.json")
    mcp_url = f"http://127.0.0.1:{port}/mcp"
    redirect_uri = "http://127.0.0.1:65010/callback"  # never listened on: the handler reads Location
    storage = MemoryTokenStorage()
    seen: dict[str, object] = {}

    async def redirect_handler(url: str) -> None:
        seen["authorize_url"] = url
        async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as http:
            resp = await http.get(url)
        location = resp.headers.get("location", "")
        seen["status"] = resp.status_code
        seen["location"] = location
        seen["params"] = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}

    async def callback_handler() -> AuthorizationCodeResult:
        params = seen.get("params") or {}
        if "code" not in params:
            raise RuntimeError(f"no code in the redirect: {seen.get('status')} {seen.get('location')!r}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="mandate-conformance-python-sdk",
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
            application_type="native",
            scope="tools:echo",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    message = "hello for a person, from the MCP Python SDK"
    flow: dict[str, object] = {}
    try:
        with anyio.fail_after(TIMEOUT):
            async with httpx2.AsyncClient(auth=provider, timeout=TIMEOUT) as http:
                async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
                    flow["connected"] = True
                    listed = await client.list_tools()
                    flow["tools"] = [t.name for t in listed.tools]
                    flow["echo"] = await client.call_tool("echo", {"text": message})
    except BaseException as exc:  # noqa: BLE001 - reported below
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        import traceback

        traceback.print_exc(file=sys.stderr)
        flow["error"] = describe(exc)

    def registered() -> None:
        info = storage.client_info
        expect(info is not None, f"no client registered: {flow.get('error')}")
        expect(str(info.client_id).startswith("mcl_"), f"client_id {info.client_id!r}")

    r.run("dynamic_registration", registered)

    def authorization_response() -> None:
        params = seen.get("params") or {}
        expect(seen.get("status") == 302, f"authorize answered {seen.get('status')}: {flow.get('error')}")
        expect(str(seen.get("location", "")).startswith(redirect_uri), f"Location {seen.get('location')!r}")
        expect(params.get("iss") == issuer, f"iss {params.get('iss')!r}, expected {issuer!r}")
        expect("state" in params and "code" in params, f"params {sorted(params)}")
        url = str(seen.get("authorize_url"))
        q = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        expect(q.get("code_challenge_method") == "S256", f"challenge method {q.get('code_challenge_method')}")
        expect(q.get("resource") == srv["resource"], f"resource {q.get('resource')!r}")

    r.run("authorization_response_with_iss", authorization_response)

    def connect_list_tools() -> None:
        expect(flow.get("connected"), f"connect failed: {flow.get('error')}")
        expect(flow.get("tools") == ["echo"], f"tools {flow.get('tools')} {flow.get('error') or ''}")

    r.run("connect_list_tools", connect_list_tools)

    def call_echo() -> None:
        result = flow.get("echo")
        expect(result is not None, f"no echo result: {flow.get('error')}")
        expect(text_of(result) == message, f"echo returned {text_of(result)!r}")

    r.run("call_echo", call_echo)

    async def refresh_rotates() -> None:
        tokens = storage.tokens
        info = storage.client_info
        expect(tokens is not None and tokens.refresh_token, "no refresh token was issued")
        expect(info is not None, "no client")
        data = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "client_id": info.client_id}
        async with httpx2.AsyncClient(timeout=10) as http:
            first = await http.post(f"{issuer}/token", data=data)
            expect(first.status_code == 200, f"refresh: HTTP {first.status_code} {first.text[:200]}")
            new = first.json().get("refresh_token")
            expect(new and new != tokens.refresh_token, "the refresh token did not rotate")
            again = await http.post(f"{issuer}/token", data=data)
            expect(again.status_code == 400 and again.json().get("error") == "invalid_grant",
                   f"reuse: HTTP {again.status_code} {again.text[:200]}")
            after = await http.post(f"{issuer}/token", data={**data, "refresh_token": new})
            expect(after.status_code == 400, "the family survived a reuse")

    await r.arun("refresh_rotation_and_reuse_detection", refresh_rotates)
    r.exit()


if __name__ == "__main__":
    anyio.run(main)
