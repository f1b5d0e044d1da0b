"""AuthZEN (OpenID Authorization API 1.0) against Mandate, from a plain JSON client (httpx2).

Plays an MCP server asking Mandate, as its policy decision point, about tool calls of a
scripted scenario, and checks the decisions the default policies give:
  - discovery: /.well-known/authzen-configuration names both endpoints;
  - a medium-trust agent calling the server's public tool: permitted, by `same-environment`;
  - the same with risk 95: denied by `very-high-risk-denied`;
  - from another environment: denied by `no-cross-environment`;
  - a batch (execute_all, then deny_on_first_deny) with an unknown tool in it;
  - asking about another server's tool: 403; asking with agent credentials: 401.
"""

from __future__ import annotations

import httpx2

from checklib import Reporter, env, expect, load_json

r = Reporter("authzen")
issuer = env("CONF_ISSUER")
srv = load_json("srv_a.json")
other = load_json("srv_b.json")
agent = load_json("agt_basic.json")
server_auth = (srv["client_id"], srv["client_secret"])
client = httpx2.Client(timeout=10)


def ask(tool: str, context: dict | None = None) -> dict:
    body = {
        "subject": {"type": "agent", "id": agent["client_id"]},
        "action": {"name": "call"},
        "resource": {"type": "tool", "id": tool},
    }
    if context is not None:
        body["context"] = context
    return body


def evaluate(body, auth=server_auth) -> httpx2.Response:
    return client.post(f"{issuer}/access/v1/evaluation", json=body, auth=auth)


def discovery():
    resp = client.get(f"{issuer}/.well-known/authzen-configuration")
    expect(resp.status_code == 200, f"status {resp.status_code}")
    meta = resp.json()
    expect(meta.get("policy_decision_point") == issuer, f"policy_decision_point {meta}")
    expect(meta.get("access_evaluation_endpoint") == f"{issuer}/access/v1/evaluation", str(meta))
    expect(meta.get("access_evaluations_endpoint") == f"{issuer}/access/v1/evaluations", str(meta))


def decided(body, decision: bool, reasons: list[str]):
    resp = evaluate(body)
    expect(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
    j = resp.json()
    expect(j.get("decision") is decision, f"decision {j}")
    expect(j.get("context", {}).get("reasons") == reasons, f"reasons {j}")


def batch():
    body = {
        "subject": {"type": "agent", "id": agent["client_id"]},
        "action": {"name": "call"},
        "evaluations": [
            {"resource": {"type": "tool", "id": "echo"}},
            {"resource": {"type": "tool", "id": "no_such_tool"}},
            {"resource": {"type": "tool", "id": "echo"}, "context": {"risk_score": 95}},
        ],
    }
    resp = client.post(f"{issuer}/access/v1/evaluations", json=body, auth=server_auth)
    expect(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
    got = [e.get("decision") for e in resp.json().get("evaluations", [])]
    expect(got == [True, False, False], f"execute_all decisions {got}")
    body["options"] = {"evaluations_semantic": "deny_on_first_deny"}
    resp = client.post(f"{issuer}/access/v1/evaluations", json=body, auth=server_auth)
    got = [e.get("decision") for e in resp.json().get("evaluations", [])]
    expect(got == [True, False], f"deny_on_first_deny decisions {got}")


def own_tools_only():
    body = ask("echo")
    body["resource"]["properties"] = {"server": other["resource"]}
    resp = evaluate(body)
    expect(resp.status_code == 403, f"another server's tool: status {resp.status_code}")
    resp = evaluate(ask("echo"), auth=(agent["client_id"], agent["client_secret"]))
    expect(resp.status_code == 401, f"agent credentials: status {resp.status_code}")
    resp = evaluate({"subject": {"type": "agent"}}, auth=server_auth)
    expect(resp.status_code == 400, f"missing fields: status {resp.status_code}")


r.run("discovery", discovery)
r.run("permit_same_environment", lambda: decided(ask("echo", {}), True, ["same-environment"]))
r.run("deny_very_high_risk", lambda: decided(ask("echo", {"risk_score": 95}), False, ["very-high-risk-denied"]))
r.run("deny_other_environment", lambda: decided(ask("echo", {"environment": "elsewhere"}), False, ["no-cross-environment"]))
r.run("batch_semantics", batch)
r.run("caller_restricted_to_own_tools", own_tools_only)
r.exit()
