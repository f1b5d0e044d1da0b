"""MCP Python SDK 2.x client against mcp_server.py, authorised by Mandate.

Usage: python mcp_client.py MCP_PORT

A `Client` whose httpx2 transport carries `ClientCredentialsOAuthProvider` (the
agent's client_id/secret, client_secret_basic) follows the real discovery chain:
401 -> protected resource metadata -> Mandate's AS metadata -> /token with
`resource` + `scope` -> retry. Then: list tools, call `echo`. Also: a token Mandate
issued for a different resource, and a revoked token, are refused by the MCP server.

Environment: CONF_ISSUER, CONF_WORK (srv_a.json, srv_b.json, agt_basic.json).
"""

from __future__ import annotations

import sys

import anyio
import httpx2
from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import ValidationError

from checklib import CheckFailed, Reporter, describe, env, expect, load_json

SCOPE = "tools:echo"
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
    r = Reporter("mcp")
    port = int(sys.argv[1])
    issuer = env("CONF_ISSUER")
    srv_a = load_json("srv_a.json")
    srv_b = load_json("srv_b.json")
    agent = load_json("agt_basic.json")
    base = f"http://127.0.0.1:{port}"
    mcp_url = f"{base}/mcp"

    async def prm() -> None:
        async with httpx2.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")
        expect(resp.status_code == 200, f"HTTP {resp.status_code}")
        body = resp.json()
        expect(body.get("resource") == srv_a["resource"], f"resource {body.get('resource')!r}")
        expect(body.get("authorization_servers") == [issuer], f"authorization_servers {body.get('authorization_servers')}")

    await r.arun("server.protected_resource_metadata", prm)

    async def sdk_parses_as_metadata() -> None:
        """The SDK silently skips AS metadata its pydantic model rejects (then fails with
        "No authorization server metadata discovered"), so validate it here to say why."""
        async with httpx2.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{issuer}/.well-known/oauth-authorization-server")
        expect(resp.status_code == 200, f"HTTP {resp.status_code}")
        try:
            meta = OAuthMetadata.model_validate_json(resp.content)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise CheckFailed(f"mcp.shared.auth.OAuthMetadata rejects Mandate's metadata: {problems}") from None
        expect(str(meta.issuer) == issuer, f"issuer parses as {meta.issuer}")

    await r.arun("sdk.parses_authorization_server_metadata", sdk_parses_as_metadata)

    init_body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mandate-conformance", "version": "0"},
        },
    }
    mcp_headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

    async def post_mcp(token: str | None) -> httpx2.Response:
        headers = dict(mcp_headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx2.AsyncClient(timeout=10) as http:
            return await http.post(mcp_url, json=init_body, headers=headers)

    async def unauthenticated() -> None:
        resp = await post_mcp(None)
        expect(resp.status_code == 401, f"HTTP {resp.status_code}, expected 401")
        www = resp.headers.get("www-authenticate", "")
        expect("resource_metadata=" in www, f"WWW-Authenticate {www!r} lacks resource_metadata")

    await r.arun("server.unauthenticated_401", unauthenticated)

    # ---------------------------------------------------------------- the SDK flow
    provider = ClientCredentialsOAuthProvider(
        server_url=mcp_url,
        storage=MemoryTokenStorage(),
        client_id=agent["client_id"],
        client_secret=agent["client_secret"],
        token_endpoint_auth_method="client_secret_basic",
        scope=SCOPE,
        issuer=issuer,
    )
    message = "hello from the MCP Python SDK"

    flow: dict[str, object] = {}

    async def sdk_flow() -> None:
        with anyio.fail_after(TIMEOUT):
            async with httpx2.AsyncClient(auth=provider, timeout=TIMEOUT) as http:
                async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
                    flow["connected"] = True
                    listed = await client.list_tools()
                    flow["tools"] = [t.name for t in listed.tools]
                    flow["echo"] = await client.call_tool("echo", {"text": message})

    try:
        await sdk_flow()
    except BaseException as exc:  # noqa: BLE001 - reported below
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        import traceback

        traceback.print_exc(file=sys.stderr)
        flow["error"] = describe(exc)

    def connect_list_tools() -> None:
        expect(flow.get("connected"), f"connect failed: {flow.get('error')}")
        expect(flow.get("tools") == ["echo"], f"tools {flow.get('tools')} {flow.get('error') or ''}")

    r.run("client_credentials.connect_list_tools", connect_list_tools)

    def call_echo() -> None:
        result = flow.get("echo")
        expect(result is not None, f"no echo result: {flow.get('error')}")
        expect(not result.is_error, f"echo returned an error: {text_of(result)}")
        expect(text_of(result) == message, f"echo returned {text_of(result)!r}")

    r.run("client_credentials.call_echo", call_echo)

    # ------------------------------------------------ tokens the server must refuse
    async def fetch_token(resource: str) -> str:
        async with httpx2.AsyncClient(timeout=10) as http:
            resp = await http.post(
                f"{issuer}/token",
                data={"grant_type": "client_credentials", "resource": resource, "scope": SCOPE},
                auth=(agent["client_id"], agent["client_secret"]),
            )
        expect(resp.status_code == 200, f"/token for {resource}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp.json()["access_token"]

    async def sdk_connect_with(token: str) -> None:
        """Connect with a fixed bearer token; must fail."""
        try:
            with anyio.fail_after(TIMEOUT):
                async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT) as http:
                    async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
                        await client.list_tools()
        except TimeoutError:
            raise
        except BaseException as exc:  # noqa: BLE001 - refused is what we want
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            print(f"refused as expected: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        raise AssertionError("the MCP server accepted the token")

    async def other_resource() -> None:
        token_b = await fetch_token(srv_b["resource"])
        resp = await post_mcp(token_b)
        expect(resp.status_code == 401, f"HTTP {resp.status_code}, expected 401 for a token with aud {srv_b['resource']}")
        await sdk_connect_with(token_b)

    await r.arun("server.refuses_token_for_other_resource", other_resource)

    async def revoked() -> None:
        token_a = await fetch_token(srv_a["resource"])
        resp = await post_mcp(token_a)
        expect(resp.status_code == 200, f"fresh token: HTTP {resp.status_code} {resp.text[:200]}")
        async with httpx2.AsyncClient(timeout=10) as http:
            rv = await http.post(
                f"{issuer}/revoke",
                data={"token": token_a, "token_type_hint": "access_token"},
                auth=(agent["client_id"], agent["client_secret"]),
            )
        expect(rv.status_code == 200, f"/revoke HTTP {rv.status_code}")
        resp = await post_mcp(token_a)
        expect(resp.status_code == 401, f"revoked token: HTTP {resp.status_code}, expected 401")

    await r.arun("server.refuses_revoked_token", revoked)

    r.exit()


if __name__ == "__main__":
    anyio.run(main)
