"""A small MCP resource server (MCP Python SDK 2.x, `MCPServer`) protected by Mandate.

Usage: python mcp_server.py PORT

Streamable HTTP at http://127.0.0.1:PORT/mcp with one tool, `echo`. Its TokenVerifier
calls Mandate's /introspect with this server's own client credentials
(client_secret_basic) and refuses tokens whose `aud` is not this server's resource.
`AuthSettings` makes the SDK publish RFC 9728 protected resource metadata naming
Mandate's issuer.

Environment: CONF_ISSUER, CONF_WORK (holds srv_a.json from `mandate servers add`).
"""

from __future__ import annotations

import base64
import logging
import sys
import time
from urllib.parse import quote

import httpx2
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from checklib import aud_list, env, load_json

log = logging.getLogger("conformance.mcp_server")


class MandateIntrospectionVerifier:
    """`TokenVerifier` backed by RFC 7662 introspection at Mandate."""

    def __init__(self, introspection_endpoint: str, client_id: str, client_secret: str, resource: str) -> None:
        self.introspection_endpoint = introspection_endpoint
        # RFC 6749 2.3.1: form-urlencode id and secret, then base64.
        raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
        self.authorization = "Basic " + base64.b64encode(raw).decode()
        self.resource = resource
        self.calls = 0

    async def verify_token(self, token: str) -> AccessToken | None:
        self.calls += 1
        async with httpx2.AsyncClient(timeout=10) as http:
            resp = await http.post(
                self.introspection_endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self.authorization, "Accept": "application/json"},
            )
        if resp.status_code != 200:
            log.warning("introspection HTTP %s: %s", resp.status_code, resp.text[:200])
            return None
        body = resp.json()
        if body.get("active") is not True:
            log.info("introspection: inactive")
            return None
        audiences = aud_list(body.get("aud"))
        if self.resource not in audiences:
            log.warning("token aud %r is not this server's resource %r", body.get("aud"), self.resource)
            return None
        exp = body.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            log.warning("token exp %r missing or past", exp)
            return None
        client_id = body.get("client_id")
        if not isinstance(client_id, str):
            log.warning("introspection has no client_id")
            return None
        scope = body.get("scope") or ""
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=scope.split(),
            expires_at=exp,
            resource=self.resource,
            subject=body.get("sub"),
            claims={k: body[k] for k in ("iss", "jti", "env", "sid") if k in body},
        )


def build(port: int) -> tuple[MCPServer, str]:
    issuer = env("CONF_ISSUER")
    srv = load_json("srv_a.json")
    resource = srv["resource"]
    expected = f"http://127.0.0.1:{port}/mcp"
    if resource != expected:
        print(f"srv_a.json resource {resource!r} != {expected!r}", file=sys.stderr)
        sys.exit(2)
    verifier = MandateIntrospectionVerifier(f"{issuer}/introspect", srv["client_id"], srv["client_secret"], resource)
    mcp = MCPServer(
        "mandate-conformance-echo",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=["tools:echo"],
            validate_token_resource=True,
        ),
        log_level="WARNING",
    )

    @mcp.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return text

    return mcp, resource


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    port = int(sys.argv[1])
    mcp, _ = build(port)
    mcp.run("streamable-http", host="127.0.0.1", port=port, streamable_http_path="/mcp")


if __name__ == "__main__":
    main()
