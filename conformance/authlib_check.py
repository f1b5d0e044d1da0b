"""Authlib (OAuth2Client on httpx) against Mandate.

client_credentials (client_secret_basic, `resource` + `scope`) -> introspect as
the MCP server -> revoke as the agent (RFC 7009) -> introspect again.
Plus the error paths a standard client relies on.

Authlib's httpx integration runs on httpx2 when it is installed (it is: mcp
2.x depends on it), so httpx2 is the transport here.
"""

from __future__ import annotations

import time

import httpx2
from authlib.integrations.httpx_client import OAuth2Client, OAuthError

from checklib import Reporter, aud_list, env, expect, load_json

SCOPE = "tools:echo"


def main() -> None:
    r = Reporter("authlib")
    issuer = env("CONF_ISSUER")
    token_url = f"{issuer}/token"
    introspect_url = f"{issuer}/introspect"
    revoke_url = f"{issuer}/revoke"
    srv_a = load_json("srv_a.json")
    srv_b = load_json("srv_b.json")
    agent = load_json("agt_basic.json")
    resource = srv_a["resource"]

    # The last token-endpoint response of any client, for status/header checks.
    last: dict[str, httpx2.Response] = {}

    def capture(resp: httpx2.Response) -> httpx2.Response:
        last["resp"] = resp
        return resp

    def client(**kwargs) -> OAuth2Client:
        c = OAuth2Client(timeout=10, **kwargs)
        c.register_compliance_hook("access_token_response", capture)
        return c

    agent_client = client(
        client_id=agent["client_id"],
        client_secret=agent["client_secret"],
        token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic",
        scope=SCOPE,
    )
    server_client = client(
        client_id=srv_a["client_id"],
        client_secret=srv_a["client_secret"],
        token_endpoint_auth_method="client_secret_basic",
    )
    other_server_client = client(
        client_id=srv_b["client_id"],
        client_secret=srv_b["client_secret"],
        token_endpoint_auth_method="client_secret_basic",
    )

    state: dict[str, object] = {}

    def client_credentials() -> None:
        tok = agent_client.fetch_token(token_url, grant_type="client_credentials", resource=resource)
        expect(tok.get("access_token"), f"no access_token in {dict(tok)}")
        expect(str(tok.get("token_type", "")).lower() == "bearer", f"token_type {tok.get('token_type')!r}")
        expect(tok.get("scope") == SCOPE, f"scope {tok.get('scope')!r}, expected {SCOPE!r}")
        expect(isinstance(tok.get("expires_in"), int) and tok["expires_in"] > 0, f"expires_in {tok.get('expires_in')!r}")
        expect("refresh_token" not in tok, "client_credentials response carries a refresh_token")
        cache = last["resp"].headers.get("cache-control", "")
        expect("no-store" in cache.lower(), f"Cache-Control {cache!r}, RFC 6749 5.1 requires no-store")
        state["token"] = tok["access_token"]

    r.run("client_credentials.basic", client_credentials)
    token = state.get("token")
    if not token:
        r.skip_dependents(
            [
                "introspect.active",
                "introspect.other_server_inactive",
                "introspect.server_client_secret_post",
                "revoke",
                "introspect.after_revoke",
            ],
            "no token",
        )
    else:

        def introspect_active() -> None:
            resp = server_client.introspect_token(introspect_url, token=token, token_type_hint="access_token")
            expect(resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:200]}")
            body = resp.json()
            expect(body.get("active") is True, f"active={body.get('active')!r}")
            expect(aud_list(body.get("aud")) == [resource], f"aud {body.get('aud')!r}, expected {resource!r}")
            expect(body.get("scope") == SCOPE, f"scope {body.get('scope')!r}")
            exp = body.get("exp")
            expect(isinstance(exp, int) and exp > time.time(), f"exp {exp!r}")
            expect(body.get("client_id") == agent["client_id"], f"client_id {body.get('client_id')!r}")
            expect(body.get("iss") in (None, issuer), f"iss {body.get('iss')!r}")

        r.run("introspect.active", introspect_active)

        def introspect_other_server() -> None:
            resp = other_server_client.introspect_token(introspect_url, token=token)
            expect(resp.status_code == 200, f"HTTP {resp.status_code}")
            body = resp.json()
            expect(body == {"active": False}, f"expected exactly {{'active': false}}, got {body}")

        r.run("introspect.other_server_inactive", introspect_other_server)

        def introspect_client_secret_post() -> None:
            post_server = client(
                client_id=srv_a["client_id"],
                client_secret=srv_a["client_secret"],
                token_endpoint_auth_method="client_secret_post",
            )
            resp = post_server.introspect_token(introspect_url, token=token)
            expect(resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:200]}")
            expect(resp.json().get("active") is True, f"active={resp.json().get('active')!r}")

        r.run("introspect.server_client_secret_post", introspect_client_secret_post)

        def revoke() -> None:
            resp = agent_client.revoke_token(revoke_url, token=token, token_type_hint="access_token")
            expect(resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:200]}")

        r.run("revoke", revoke)

        def introspect_after_revoke() -> None:
            resp = server_client.introspect_token(introspect_url, token=token)
            expect(resp.status_code == 200, f"HTTP {resp.status_code}")
            body = resp.json()
            expect(body == {"active": False}, f"expected exactly {{'active': false}}, got {body}")

        r.run("introspect.after_revoke", introspect_after_revoke)

    def introspect_requires_auth() -> None:
        resp = httpx2.post(introspect_url, data={"token": "x"}, timeout=10)
        expect(resp.status_code == 401, f"HTTP {resp.status_code}, expected 401")

    r.run("introspect.requires_client_auth", introspect_requires_auth)

    def revoke_unknown() -> None:
        resp = agent_client.revoke_token(revoke_url, token="not-a-token-we-issued")
        expect(resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:200]}")

    r.run("revoke.unknown_token_200", revoke_unknown)

    def expect_oauth_error(fn, error: str, statuses: tuple[int, ...]) -> httpx2.Response:
        last.pop("resp", None)
        try:
            tok = fn()
        except OAuthError as exc:
            expect(exc.error == error, f"error {exc.error!r}, expected {error!r} ({exc.description})")
            resp = last.get("resp")
            expect(resp is not None, "no token response captured")
            expect(resp.status_code in statuses, f"HTTP {resp.status_code}, expected one of {statuses}")
            return resp
        raise AssertionError(f"expected {error}, got a token: {dict(tok)}")

    def wrong_secret() -> None:
        bad = client(
            client_id=agent["client_id"],
            client_secret="mnd_cs_wrong",
            token_endpoint_auth_method="client_secret_basic",
        )
        resp = expect_oauth_error(
            lambda: bad.fetch_token(token_url, grant_type="client_credentials", resource=resource, scope=SCOPE),
            "invalid_client",
            (401,),
        )
        expect(
            resp.headers.get("www-authenticate", "").lower().startswith("basic"),
            f"WWW-Authenticate {resp.headers.get('www-authenticate')!r}, expected a Basic challenge",
        )

    r.run("token.wrong_secret_invalid_client", wrong_secret)

    def method_enforced() -> None:
        post = client(
            client_id=agent["client_id"],
            client_secret=agent["client_secret"],
            token_endpoint_auth_method="client_secret_post",
        )
        expect_oauth_error(
            lambda: post.fetch_token(token_url, grant_type="client_credentials", resource=resource, scope=SCOPE),
            "invalid_client",
            (400, 401),
        )

    r.run("token.registered_auth_method_enforced", method_enforced)

    def unknown_resource() -> None:
        expect_oauth_error(
            lambda: agent_client.fetch_token(
                token_url, grant_type="client_credentials", resource="https://unregistered.example/mcp", scope=SCOPE
            ),
            "invalid_target",
            (400,),
        )

    r.run("token.unregistered_resource_invalid_target", unknown_resource)

    def scope_not_granted() -> None:
        expect_oauth_error(
            lambda: agent_client.fetch_token(
                token_url, grant_type="client_credentials", resource=resource, scope="tools:execute"
            ),
            "invalid_scope",
            (400,),
        )

    r.run("token.ungranted_scope_invalid_scope", scope_not_granted)

    r.exit()


if __name__ == "__main__":
    main()
