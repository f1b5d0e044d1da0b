"""ID-JAG (MCP enterprise-managed authorization) with the MCP Python SDK 2.3.0.

Usage: python idjag_check.py MCP_PORT

The SDK's `IdentityAssertionOAuthProvider` (mcp.client.auth.extensions.identity_assertion)
redeems an ID-JAG signed by the test identity provider (delegation_setup.py) at Mandate's
token endpoint (jwt-bearer grant, client_secret_post), then lists tools and calls `echo` on
mcp_server.py, which checks the token by introspection. Plain httpx2 checks that a replayed
ID-JAG and one for another client are refused with invalid_grant, and that metadata
advertises the ID-JAG grant profile.

Environment: CONF_ISSUER, CONF_WORK (srv_a.json, agt_post.json, idp.json, idp-private.pem).
"""

from __future__ import annotations

import sys
import time
import uuid

import anyio
import httpx2
import jwt
from mcp.client import Client
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from checklib import Reporter, env, expect, load_json

TIMEOUT = 30
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


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


async def main() -> None:
    r = Reporter("mcp.id_jag")
    port = int(sys.argv[1])
    issuer = env("CONF_ISSUER")
    srv = load_json("srv_a.json")
    agent = load_json("agt_post.json")
    idp = load_json("idp.json")
    work = env("CONF_WORK")
    key = open(f"{work}/idp-private.pem").read()
    mcp_url = f"http://127.0.0.1:{port}/mcp"
    issued: list[str] = []

    def id_jag(aud: str, resource: str, client_id: str | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": idp["issuer"], "sub": "alice@example.com", "aud": aud,
            "client_id": client_id or agent["client_id"], "resource": resource,
            "scope": "tools:echo", "jti": str(uuid.uuid4()), "iat": now, "exp": now + 300,
        }
        return jwt.encode(claims, key, algorithm="ES256",
                          headers={"typ": "oauth-id-jag+jwt", "kid": idp["kid"]})

    async def assertion_provider(audience: str, resource: str) -> str:
        token = id_jag(audience, resource)
        issued.append(token)
        return token

    async def metadata() -> None:
        async with httpx2.AsyncClient(timeout=10) as http:
            m = (await http.get(f"{issuer}/.well-known/oauth-authorization-server")).json()
        expect("urn:ietf:params:oauth:grant-profile:id-jag" in m.get("authorization_grant_profiles_supported", []),
               f"authorization_grant_profiles_supported {m.get('authorization_grant_profiles_supported')}")
        expect(JWT_BEARER in m.get("grant_types_supported", []), "jwt-bearer not in grant_types_supported")

    await r.arun("metadata_advertises_profile", metadata)

    provider = IdentityAssertionOAuthProvider(
        server_url=mcp_url,
        storage=MemoryTokenStorage(),
        client_id=agent["client_id"],
        client_secret=agent["client_secret"],
        issuer=issuer,
        assertion_provider=assertion_provider,
        scope="tools:echo",
    )
    message = "hello through an ID-JAG"

    async def sdk_flow() -> None:
        with anyio.fail_after(TIMEOUT):
            async with httpx2.AsyncClient(auth=provider, timeout=TIMEOUT) as http:
                async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
                    listed = await client.list_tools()
                    expect([t.name for t in listed.tools] == ["echo"], f"tools {listed.tools}")
                    result = await client.call_tool("echo", {"text": message})
                    text = "".join(getattr(b, "text", "") for b in result.content)
                    expect(not result.is_error and text == message, f"echo returned {text!r}")
        expect(len(issued) >= 1, "the SDK never asked for an ID-JAG")

    await r.arun("sdk_provider_connect_call_echo", sdk_flow)

    async def token(assertion: str) -> httpx2.Response:
        async with httpx2.AsyncClient(timeout=10) as http:
            return await http.post(f"{issuer}/token", data={
                "grant_type": JWT_BEARER, "assertion": assertion,
                "client_id": agent["client_id"], "client_secret": agent["client_secret"],
            })

    async def replay() -> None:
        expect(issued, "no ID-JAG to replay")
        resp = await token(issued[0])
        expect(resp.status_code == 400 and resp.json().get("error") == "invalid_grant",
               f"replayed ID-JAG: HTTP {resp.status_code} {resp.text[:200]}")

    await r.arun("replayed_id_jag_refused", replay)

    async def other_client() -> None:
        resp = await token(id_jag(issuer, srv["resource"], client_id="agt_someone_else"))
        expect(resp.status_code == 400 and resp.json().get("error") == "invalid_grant",
               f"ID-JAG for another client: HTTP {resp.status_code} {resp.text[:200]}")

    await r.arun("id_jag_for_other_client_refused", other_client)

    async def wrong_audience() -> None:
        resp = await token(id_jag("https://another-as.example", srv["resource"]))
        expect(resp.status_code == 400 and resp.json().get("error") == "invalid_grant",
               f"ID-JAG for another AS: HTTP {resp.status_code} {resp.text[:200]}")

    await r.arun("id_jag_for_other_as_refused", wrong_audience)
    r.exit()


if __name__ == "__main__":
    anyio.run(main)
