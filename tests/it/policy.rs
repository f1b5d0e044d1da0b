//! The policy engine: default policies on the token path (narrowing, step_up), the policy
//! lifecycle through the admin API, and AuthZEN for MCP servers.
use crate::both;
use crate::harness::{H, Resp};
use mandate::agents::NewAgent;
use serde_json::{Value, json};

const CRM: &str = "https://crm.mcp.test/mcp";
const TOOLS: &[&str] = &[
    "search:read:internal",
    "fetch:read:public",
    "export:read:confidential",
    "write_doc:write:internal",
    "deploy:execute:restricted",
];

async fn agent(h: &H, trust: &str) -> (String, String) {
    let (id, secret) = h
        .agent(NewAgent {
            name: format!("{trust} agent"),
            owner: "owner@example.com".into(),
            trust_level: trust.into(),
            environment: "prod".into(),
            allowed_resources: vec![CRM.into()],
            scope_ceiling: vec!["tools:read tools:write tools:execute".into()],
            ..Default::default()
        })
        .await;
    (id, secret.unwrap())
}

async fn scope(h: &H, a: &(String, String), s: Option<&str>) -> Resp {
    let mut extra = vec![("resource", CRM)];
    if let Some(s) = s {
        extra.push(("scope", s));
    }
    h.token(&a.0, &a.1, &extra).await
}

async fn admin(h: &H) -> String {
    let t = h.app().admin().create_admin_token("test").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    t
}

async fn call(h: &H, m: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Resp {
    let mut req = h
        .http
        .request(m, h.url(&format!("/admin/v1{path}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    Resp::from(req.send().await.unwrap()).await
}

async fn authzen(h: &H, path: &str, basic: (&str, &str), body: Value) -> Resp {
    let req = h
        .http
        .post(h.url(path))
        .basic_auth(basic.0, Some(basic.1))
        .json(&body);
    Resp::from(req.send().await.unwrap()).await
}

/// The default policies on the token path: class scopes narrowed, confidential by trust,
/// restricted as step_up (left out of the token, named in `step_up_scope`).
async fn default_policies_shape_tokens(h: H) -> H {
    h.server(CRM, "prod", TOOLS).await;
    let low = agent(&h, "low").await;
    let medium = agent(&h, "medium").await;

    // Confidential needs medium trust: a low agent's tools:read is narrowed.
    let r = scope(&h, &low, Some("tools:read")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["scope"], "tools:fetch tools:search");
    assert!(r.body.get("step_up_scope").is_none());
    let r = scope(&h, &medium, Some("tools:read")).await;
    assert_eq!(r.body["scope"], "tools:read");
    let r = scope(&h, &low, Some("tools:export")).await;
    assert_eq!((r.status, r.error()), (400, "invalid_scope"));

    // Restricted: step_up. Left out, and named.
    let r = scope(&h, &medium, Some("tools:search tools:deploy")).await;
    assert_eq!(r.body["scope"], "tools:search");
    assert_eq!(r.body["step_up_scope"], "tools:deploy");
    let r = scope(&h, &medium, Some("tools:execute")).await;
    assert_eq!((r.status, r.error()), (400, "invalid_scope"));
    let d = r.body["error_description"].as_str().unwrap();
    assert!(d.contains("approval") && d.contains("tools:deploy"), "{d}");
    // No policy internals on the wire.
    assert!(!d.contains("restricted-needs-approval"));

    // No scope asked: the ceiling, decided tool by tool.
    let r = scope(&h, &low, None).await;
    assert_eq!(r.body["scope"], "tools:write tools:fetch tools:search");
    assert_eq!(r.body["step_up_scope"], "tools:deploy");
    // The same again comes from the decision cache, and agrees.
    let again = scope(&h, &low, None).await;
    assert_eq!(again.body["scope"], r.body["scope"]);
    h
}
both!(default_policies_shape_tokens);

/// Apply, invalid refused with Cedar's message, lockout refused, history, diff, rollback,
/// what-if: all through the admin API, and seen by the token endpoint at once.
async fn policy_lifecycle(h: H) -> H {
    use reqwest::Method as M;
    h.server(CRM, "prod", TOOLS).await;
    let medium = agent(&h, "medium").await;
    let t = admin(&h).await;

    let r = call(&h, M::GET, "/policies", &t, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["policies"].as_array().unwrap().len(), 10);
    assert_eq!(r.body["schema_version"], 2);
    // No admin token: refused.
    let r = Resp::from(
        h.http
            .get(h.url("/admin/v1/policies"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);

    // Invalid Cedar, unknown attribute, unknown entity type: 400 with Cedar's words.
    for (bad, says) in [
        (
            "permit(principal, action, resource",
            "unexpected end of input",
        ),
        (
            "permit(principal, action, resource) when { principal.clearance > 2 };",
            "clearance",
        ),
        ("permit(principal is User, action, resource);", "User"),
    ] {
        let r = call(&h, M::PUT, "/policies", &t, Some(json!({"policies": bad}))).await;
        assert_eq!((r.status, r.error()), (400, "invalid_policy"), "{bad}");
        let d = r.body["error_description"].as_str().unwrap();
        assert!(d.contains(says), "{bad}: {d}");
    }
    // A set that denies everything: refused unless forced.
    let r = call(
        &h,
        M::PUT,
        "/policies",
        &t,
        Some(json!({"policies": "forbid(principal, action, resource);"})),
    )
    .await;
    assert_eq!((r.status, r.error()), (409, "lockout"));
    let r = call(&h, M::GET, "/policies/versions", &t, None).await;
    assert_eq!(r.body["versions"].as_array().unwrap().len(), 1);

    // A real change: confidential tools need high trust now.
    let stricter = mandate::policy::DEFAULT_POLICIES.replace("trust_rank < 2", "trust_rank < 3");
    let r = call(
        &h,
        M::PUT,
        "/policies",
        &t,
        Some(json!({"policies": stricter, "message": "confidential needs high trust"})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    let r = scope(&h, &medium, Some("tools:read")).await;
    assert_eq!(r.body["scope"], "tools:fetch tools:search");

    let r = call(&h, M::GET, "/policies/versions", &t, None).await;
    let v = r.body["versions"].as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["version"], 2);
    assert_eq!(v[0]["active"], true);
    assert_eq!(v[0]["message"], "confidential needs high trust");
    assert!(
        v[0]["author"]
            .as_str()
            .unwrap()
            .starts_with("admin token adm_")
    );
    assert_eq!(v[1]["author"], "mandate");
    let r = call(&h, M::GET, "/policies/diff?from=1&to=2", &t, None).await;
    let d = r.body["diff"].as_str().unwrap();
    assert!(
        d.contains(
            "- when { resource.sensitivity == \"confidential\" && principal.trust_rank < 2 };"
        ),
        "{d}"
    );
    assert!(d.contains("+ when"), "{d}");

    // What-if, for the set in force or a proposed one; changes nothing.
    let case = json!({
        "agent": medium.0,
        "tool": {"server": CRM, "name": "export"},
    });
    let r = call(&h, M::POST, "/policies/what-if", &t, Some(case.clone())).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(
        r.body["reasons"],
        json!(["confidential-needs-medium-trust"])
    );
    let mut proposed = case.clone();
    proposed["policies"] = json!(mandate::policy::DEFAULT_POLICIES);
    let r = call(&h, M::POST, "/policies/what-if", &t, Some(proposed)).await;
    assert_eq!(r.body["decision"], "permit");
    assert_eq!(r.body["reasons"], json!(["same-environment"]));
    let r = call(
        &h,
        M::POST,
        "/policies/what-if",
        &t,
        Some(json!({"agent": medium.0, "tool": {"server": CRM, "name": "deploy"}})),
    )
    .await;
    assert_eq!(r.body["decision"], "step_up");
    assert_eq!(r.body["reasons"], json!(["restricted-needs-approval"]));

    // Rollback: version 1's text in force again, as version 3.
    let r = call(
        &h,
        M::POST,
        "/policies/rollback",
        &t,
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["version"], 3);
    let r = scope(&h, &medium, Some("tools:read")).await;
    assert_eq!(r.body["scope"], "tools:read");
    let r = call(&h, M::GET, "/policies/versions/3", &t, None).await;
    assert_eq!(r.body["source"], mandate::policy::DEFAULT_POLICIES);
    assert_eq!(r.body["rollback_of"], 1);
    let r = call(
        &h,
        M::POST,
        "/policies/rollback",
        &t,
        Some(json!({"version": 99})),
    )
    .await;
    assert_eq!(r.status, 404);

    // Another node on the same database picks the change up by itself.
    let node2 = h.second_node().await;
    let before = node2.app.registry().policy.version;
    assert_eq!(before, 3);
    let r = call(
        &h,
        M::PUT,
        "/policies",
        &t,
        Some(json!({"policies": stricter})),
    )
    .await;
    assert_eq!(r.body["version"], 4);
    let app2 = node2.app.clone();
    assert!(
        crate::harness::eventually(5, || {
            let app2 = app2.clone();
            async move { app2.registry().policy.version == 4 }
        })
        .await
    );
    node2.stop().await.unwrap();

    // A lockout, forced: saved, said so, and nothing is permitted any more.
    let r = call(
        &h,
        M::PUT,
        "/policies",
        &t,
        Some(json!({"policies": "forbid(principal, action, resource);", "force": true})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(
        r.body["forced_past"]
            .as_str()
            .unwrap()
            .contains("no permit")
    );
    let r = scope(&h, &medium, Some("tools:read")).await;
    assert_eq!((r.status, r.error()), (400, "invalid_scope"));
    h
}
both!(policy_lifecycle);

/// AuthZEN: metadata, single and batch evaluations for an agent or a token, reasons and
/// step_up in the context, each default policy, and callers limited to their own tools.
async fn authzen_evaluations(h: H) -> H {
    let srv = h.server(CRM, "prod", TOOLS).await;
    let other = h
        .server("https://other.mcp.test/", "prod", &["ping:read:public"])
        .await;
    let low = agent(&h, "low").await;
    let medium = agent(&h, "medium").await;
    let basic = (srv.0.as_str(), srv.1.as_str());

    let meta: Value = h
        .http
        .get(h.url("/.well-known/authzen-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["policy_decision_point"], h.base.as_str());
    assert_eq!(
        meta["access_evaluation_endpoint"],
        format!("{}/access/v1/evaluation", h.base)
    );

    let ask = |who: &str, tool: &str, ctx: Value| {
        json!({
            "subject": {"type": "agent", "id": who},
            "action": {"name": "call"},
            "resource": {"type": "tool", "id": tool},
            "context": ctx,
        })
    };
    let eval = |body: Value| authzen(&h, "/access/v1/evaluation", basic, body);
    // Permit, with the determining policy.
    let r = eval(ask(&medium.0, "search", json!({}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["decision"], true);
    assert_eq!(r.body["context"]["reasons"], json!(["same-environment"]));
    // Confidential needs medium trust.
    let r = eval(ask(&low.0, "export", json!({}))).await;
    assert_eq!(r.body["decision"], false);
    assert_eq!(
        r.body["context"]["reasons"],
        json!(["confidential-needs-medium-trust"])
    );
    // Restricted: step_up, then permit with a human's approval.
    let r = eval(ask(&medium.0, "deploy", json!({}))).await;
    assert_eq!(r.body["decision"], false);
    assert_eq!(r.body["context"]["decision"], "step_up");
    assert_eq!(r.body["context"]["step_up"], true);
    let r = eval(ask(
        &medium.0,
        "deploy",
        json!({"approved": true, "approver": "alice@example.com"}),
    ))
    .await;
    assert_eq!(r.body["decision"], true);
    assert_eq!(
        r.body["context"]["reasons"],
        json!(["restricted-needs-approval"])
    );
    // Another environment: never.
    let r = eval(ask(&medium.0, "search", json!({"environment": "dev"}))).await;
    assert_eq!(r.body["decision"], false);
    assert_eq!(
        r.body["context"]["reasons"],
        json!(["no-cross-environment"])
    );
    // Risk 70: writes step up, reads go on; risk 90: nothing.
    let r = eval(ask(&medium.0, "write_doc", json!({"risk_score": 75}))).await;
    assert_eq!(r.body["context"]["decision"], "step_up");
    let r = eval(ask(&medium.0, "search", json!({"risk_score": 75}))).await;
    assert_eq!(r.body["decision"], true);
    let r = eval(ask(
        &medium.0,
        "search",
        json!({"risk_score": 95, "approved": true}),
    ))
    .await;
    assert_eq!(r.body["decision"], false);
    assert_eq!(
        r.body["context"]["reasons"],
        json!(["very-high-risk-denied"])
    );
    // Unknown tool or agent: a plain deny.
    let r = eval(ask(&medium.0, "nope", json!({}))).await;
    assert_eq!(r.body["decision"], false);
    let r = eval(ask("agt_nobody", "search", json!({}))).await;
    assert_eq!(r.body["decision"], false);

    // The token as subject: no second lookup for a gateway; its scope counts too.
    let tok = scope(&h, &low, Some("tools:search")).await.access_token();
    let by_token = |tool: &str| {
        json!({
            "subject": {"type": "token", "id": tok},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": tool},
        })
    };
    let r = eval(by_token("search")).await;
    assert_eq!(r.body["decision"], true, "{:?}", r.body);
    let r = eval(by_token("fetch")).await;
    assert_eq!(r.body["decision"], false);
    assert_eq!(r.body["context"]["reason"], "insufficient_scope");
    // Another server's credentials with this token: not its audience.
    let r = authzen(
        &h,
        "/access/v1/evaluation",
        (&other.0, &other.1),
        json!({"subject": {"type": "token", "id": tok}, "action": {"name": "call"},
               "resource": {"type": "tool", "id": "ping"}}),
    )
    .await;
    assert_eq!(r.body["decision"], false);

    // Batch, with defaults and each semantic.
    let batch = |semantic: &str| {
        json!({
            "subject": {"type": "agent", "id": medium.0},
            "action": {"name": "call"},
            "evaluations": [
                {"resource": {"type": "tool", "id": "search"}},
                {"resource": {"type": "tool", "id": "deploy"}},
                {"resource": {"type": "tool", "id": "fetch"}},
            ],
            "options": {"evaluations_semantic": semantic},
        })
    };
    let r = authzen(&h, "/access/v1/evaluations", basic, batch("execute_all")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = r.body["evaluations"].as_array().unwrap();
    assert_eq!(
        e.iter().map(|x| x["decision"].clone()).collect::<Vec<_>>(),
        vec![json!(true), json!(false), json!(true)]
    );
    assert_eq!(e[1]["context"]["step_up"], true);
    let r = authzen(
        &h,
        "/access/v1/evaluations",
        basic,
        batch("deny_on_first_deny"),
    )
    .await;
    assert_eq!(r.body["evaluations"].as_array().unwrap().len(), 2);
    let r = authzen(
        &h,
        "/access/v1/evaluations",
        basic,
        batch("permit_on_first_permit"),
    )
    .await;
    assert_eq!(r.body["evaluations"].as_array().unwrap().len(), 1);

    // Bad input: clear errors.
    for bad in [
        json!({"action": {"name": "call"}, "resource": {"type": "tool", "id": "search"}}),
        json!({"subject": {"type": "agent", "id": 7}, "action": {"name": "call"}, "resource": {"type": "tool", "id": "search"}}),
        json!({"subject": {"type": "user", "id": "x"}, "action": {"name": "call"}, "resource": {"type": "tool", "id": "search"}}),
        json!({"subject": {"type": "agent", "id": "x"}, "action": {"name": "delete"}, "resource": {"type": "tool", "id": "search"}}),
        json!({"subject": {"type": "agent", "id": "x"}, "action": {"name": "call"}, "resource": {"type": "tool", "id": "search"}, "context": {"risk_score": "high"}}),
        json!("not an object"),
    ] {
        let r = eval(bad.clone()).await;
        assert_eq!((r.status, r.error()), (400, "invalid_request"), "{bad}");
    }
    let r = authzen(
        &h,
        "/access/v1/evaluations",
        basic,
        json!({"evaluations": [{"resource": {"type": "tool", "id": "search"}}]}),
    )
    .await;
    assert_eq!(r.status, 400);

    // A server asking about another server's tools: refused.
    let mut theirs = ask(&medium.0, "ping", json!({}));
    theirs["resource"]["properties"] = json!({"server": "https://other.mcp.test/"});
    let r = eval(theirs).await;
    assert_eq!((r.status, r.error()), (403, "forbidden"));
    // Only MCP servers, with valid credentials.
    let r = authzen(
        &h,
        "/access/v1/evaluation",
        (&medium.0, &medium.1),
        ask(&medium.0, "search", json!({})),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = authzen(
        &h,
        "/access/v1/evaluation",
        (&srv.0, "wrong"),
        ask(&medium.0, "search", json!({})),
    )
    .await;
    assert_eq!(r.status, 401);
    h
}
both!(authzen_evaluations);

/// Agent groups reach policy: a group-only rule, groups set at registration and replaced by
/// PATCH, and malformed group names refused.
async fn agent_groups_in_policy(h: H) -> H {
    use reqwest::Method as M;
    h.server(CRM, "prod", TOOLS).await;
    let (payments, secret) = h
        .agent(NewAgent {
            name: "payments agent".into(),
            owner: "owner@example.com".into(),
            trust_level: "medium".into(),
            environment: "prod".into(),
            allowed_resources: vec![CRM.into()],
            scope_ceiling: vec!["tools:read tools:write".into()],
            groups: vec!["team:payments".into()],
            ..Default::default()
        })
        .await;
    let payments = (payments, secret.unwrap());
    let other = agent(&h, "medium").await;
    let t = admin(&h).await;
    let only_payments_write = format!(
        "{}\n@id(\"writes-are-for-payments\")\nforbid (principal is Agent, action == Action::\"write\", resource)\n\
         unless {{ principal.groups.contains(\"team:payments\") }};\n",
        mandate::policy::DEFAULT_POLICIES
    );
    let r = call(
        &h,
        M::PUT,
        "/policies",
        &t,
        Some(json!({"policies": only_payments_write})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = scope(&h, &payments, Some("tools:write_doc")).await;
    assert_eq!(r.body["scope"], "tools:write_doc", "{:?}", r.body);
    let r = scope(&h, &other, Some("tools:write_doc")).await;
    assert_eq!((r.status, r.error()), (400, "invalid_scope"));

    // Groups replaced through the admin API: the rule follows at once.
    let r = call(
        &h,
        M::PATCH,
        &format!("/agents/{}", other.0),
        &t,
        Some(json!({"groups": ["team:payments", "oncall"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["groups"], json!(["oncall", "team:payments"]));
    h.app().refresh_registry(true).await.unwrap();
    let r = scope(&h, &other, Some("tools:write_doc")).await;
    assert_eq!(r.body["scope"], "tools:write_doc", "{:?}", r.body);

    let r = call(
        &h,
        M::PATCH,
        &format!("/agents/{}", other.0),
        &t,
        Some(json!({"groups": ["no spaces allowed"]})),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    h
}
both!(agent_groups_in_policy);

/// Every decision and every change is on the audit record: token events name the policies
/// behind them, each AuthZEN decision is a `policy.evaluated` event, and applying or rolling
/// back a policy set is a `policy.applied` event by the admin who did it.
async fn decisions_and_changes_are_audited(h: H) -> H {
    use reqwest::Method as M;
    let srv = h.server(CRM, "prod", TOOLS).await;
    let medium = agent(&h, "medium").await;
    let t = admin(&h).await;

    let r = scope(&h, &medium, Some("tools:search tools:deploy")).await;
    assert_eq!(r.body["step_up_scope"], "tools:deploy");
    let r = scope(&h, &medium, Some("tools:deploy")).await;
    assert_eq!(r.error(), "invalid_scope");
    let basic = (srv.0.as_str(), srv.1.as_str());
    let one = |tool: &str| {
        json!({
            "subject": {"type": "agent", "id": medium.0},
            "action": {"name": "call"},
            "resource": {"type": "tool", "id": tool},
        })
    };
    let r = authzen(&h, "/access/v1/evaluation", basic, one("search")).await;
    assert_eq!(r.body["decision"], true);
    let r = authzen(
        &h,
        "/access/v1/evaluations",
        basic,
        json!({"evaluations": [one("export"), one("deploy"), one("nope")]}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let stricter = mandate::policy::DEFAULT_POLICIES.replace("trust_rank < 2", "trust_rank < 3");
    let r = call(
        &h,
        M::PUT,
        "/policies",
        &t,
        Some(json!({"policies": stricter, "message": "stricter"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = call(
        &h,
        M::POST,
        "/policies/rollback",
        &t,
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(r.status, 201);

    let mut all = Vec::new();
    h.app().audit.sync().await;
    mandate::audit::query::export(&h.app().store.db, 0, i64::MAX, |r| {
        all.push(serde_json::from_str::<Value>(&r.json_line()).unwrap());
        Ok(())
    })
    .await
    .unwrap();
    let of = |t: &str| all.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
    let tokens = of("token.issued");
    assert_eq!(tokens.len(), 1);
    let reasons = tokens[0]["reasons"].as_array().unwrap();
    assert!(reasons.contains(&json!("same-environment")), "{reasons:?}");
    assert!(
        reasons.contains(&json!("restricted-needs-approval")),
        "{reasons:?}"
    );
    let refused = of("token.refused");
    assert!(
        refused[0]["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("restricted-needs-approval"))
    );
    let evals = of("policy.evaluated");
    assert_eq!(evals.len(), 4, "{evals:#?}");
    assert_eq!(evals[0]["decision"], "permit");
    assert_eq!(evals[0]["tool"], "search");
    assert_eq!(evals[0]["actor"], json!({"kind": "server", "id": srv.0}));
    assert_eq!(evals[0]["reasons"], json!(["same-environment"]));
    assert_eq!(evals[1]["decision"], "permit");
    assert_eq!(evals[2]["decision"], "step_up");
    assert_eq!(evals[3]["decision"], "deny");
    assert_eq!(evals[3]["reasons"], json!(["unknown_tool"]));
    let changes = of("policy.applied");
    assert_eq!(changes.len(), 3, "default install, apply, rollback");
    assert_eq!(changes[0]["actor"]["kind"], "system");
    assert_eq!(changes[1]["action"], "apply");
    assert_eq!(changes[1]["actor"]["kind"], "admin");
    assert_eq!(changes[1]["details"]["version"], 2);
    assert_eq!(changes[1]["details"]["message"], "stricter");
    assert_eq!(changes[2]["action"], "rollback");
    assert_eq!(changes[2]["details"]["rollback_of"], 1);
    h.app().audit.sync().await;
    let rep = mandate::audit::verify::verify(&h.app().store)
        .await
        .unwrap();
    assert!(rep.ok, "{rep:#?}");
    h
}
both!(decisions_and_changes_are_audited);
