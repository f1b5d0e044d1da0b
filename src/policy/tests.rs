//! Unit tests of the engine: the default policies, Human principals and their attributes,
//! the decision cache across people, and legacy (schema version 1) sets.
use super::*;

#[test]
fn local_time() {
    // 2026-11-26 (a Thursday) 08:50:00 UTC.
    let f = Facts {
        now: 1_795_683_000,
        ..Facts::default()
    };
    assert_eq!(f.local(), (8, 4));
    let f = Facts {
        now: 1_795_683_000,
        utc_offset_secs: 16 * 3600,
        ..Facts::default()
    };
    assert_eq!(f.local(), (0, 5));
    let f = Facts {
        now: 1_795_683_000,
        utc_offset_secs: -9 * 3600,
        ..Facts::default()
    };
    assert_eq!(f.local(), (23, 3));
}

#[test]
fn default_policies_compile() {
    let schema = schema().unwrap();
    let c = compile(DEFAULT_POLICIES, &schema).unwrap();
    assert!(
        c.info
            .iter()
            .any(|p| p.id == "restricted-needs-approval" && p.approval)
    );
    assert!(
        c.info
            .iter()
            .any(|p| p.id == "people-restricted-needs-approval" && p.approval)
    );
    assert!(c.step_up_possible);
    assert!(!c.legacy, "{:?}", c.warnings);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

fn server(env: &str) -> McpServer {
    let tools = [
        (
            "search",
            ToolClass::Read,
            crate::resources::Sensitivity::Internal,
        ),
        (
            "export",
            ToolClass::Read,
            crate::resources::Sensitivity::Confidential,
        ),
        (
            "deploy",
            ToolClass::Execute,
            crate::resources::Sensitivity::Restricted,
        ),
    ]
    .map(|(name, class, sensitivity)| {
        (
            name.to_string(),
            Tool {
                name: name.into(),
                class,
                sensitivity,
            },
        )
    });
    McpServer {
        id: "srv".into(),
        resource: "https://docs.example/mcp".into(),
        name: "docs".into(),
        environment: env.into(),
        tools: tools.into_iter().collect(),
        created_at: 0,
        updated_at: 0,
    }
}

fn engine(src: &str, server: &McpServer) -> Engine {
    let compiled = compile(src, &schema().unwrap()).unwrap();
    let schema = schema_for(&compiled).unwrap();
    let mut list = vec![entities::server_entity(server).unwrap()];
    for t in server.tools.values() {
        list.push(entities::tool_entity(server, t).unwrap());
    }
    let e = entities::from_list(list, &schema).unwrap();
    Engine::with_entities(compiled, e, schema)
}

fn person_facts(who: &HumanFacts, env: &str, client: &str) -> Facts {
    Facts {
        environment: env.into(),
        delegation: Some(who.clone()),
        client: Some(ClientFacts {
            id: client.into(),
            name: Some("Claude".into()),
        }),
        ..Facts::default()
    }
}

#[test]
fn people_through_mcp_clients_are_human_principals() {
    let s = server("prod");
    let e = engine(DEFAULT_POLICIES, &s);
    let alice = HumanFacts::new("alice@example.com", ["admin".to_string()]);
    let f = person_facts(&alice, "prod", "mcp_1");
    let d = |tool: &str| e.evaluate_human(&alice, &s, &s.tools[tool], &f);
    let search = d("search");
    assert_eq!(search.decision, Outcome::Permit);
    assert_eq!(search.reasons, ["people-via-mcp-clients"]);
    let deploy = d("deploy");
    assert_eq!(deploy.decision, Outcome::StepUp);
    assert_eq!(deploy.reasons, ["people-restricted-needs-approval"]);
    let export = d("export");
    assert_eq!(export.decision, Outcome::Deny);
    assert_eq!(export.reasons, ["people-no-confidential"]);
    assert!(search.errors.is_empty() && export.errors.is_empty());
}

#[test]
fn human_attributes_and_the_client_are_visible_to_policies() {
    let s = server("prod");
    let e = engine(
        r#"
        @id("admins") permit (principal is Human, action, resource)
          when { principal.roles.contains("admin") && principal.email like "*@example.com" };
        @id("one-client") forbid (principal is Human, action, resource)
          when { context has client && context.client.id == "mcp_bad" };
        @id("delegated-admins") permit (principal is Agent, action, resource)
          when { context has delegation && context.delegation.human.roles.contains("admin") };
        @id("approved-by-an-approver") permit (principal, action, resource)
          when { context.approval has approver && context.approval.approver.roles.contains("approver") };
        "#,
        &s,
    );
    let search = &s.tools["search"];
    let alice = HumanFacts::new("alice@example.com", ["admin".to_string()]);
    let bob = HumanFacts::new("bob@example.com", ["viewer".to_string()]);
    // The cached path: two people, same features, never each other's decision.
    for (who, client, expect) in [
        (&alice, "mcp_1", Outcome::Permit),
        (&bob, "mcp_1", Outcome::Deny),
        (&alice, "mcp_bad", Outcome::Deny),
        (&alice, "mcp_1", Outcome::Permit),
        (&bob, "mcp_1", Outcome::Deny),
    ] {
        let f = person_facts(who, "prod", client);
        let features = e.features(&f);
        let d = e.decide_human(who, &s, search, &features, &f);
        assert_eq!(d.decision, expect, "{} via {client}: {d:?}", who.email);
        assert!(d.errors.is_empty(), "{d:?}");
    }
    // The same email with other roles is another principal.
    let alice_viewer = HumanFacts::new("alice@example.com", ["viewer".to_string()]);
    let f = person_facts(&alice_viewer, "prod", "mcp_1");
    let d = e.decide_human(&alice_viewer, &s, search, &e.features(&f), &f);
    assert_eq!(d.decision, Outcome::Deny);
    // An agent acting for a person: their roles through the Human entity.
    let agent_facts = |roles: &[&str]| Facts {
        environment: "prod".into(),
        delegation: Some(HumanFacts::new(
            "carol@example.com",
            roles.iter().map(|r| r.to_string()),
        )),
        ..Facts::default()
    };
    let id = tool_uid(&s, search);
    let d = e.evaluate("agt_1", &id, ToolClass::Read, &agent_facts(&["admin"]));
    assert_eq!(d.decision, Outcome::Permit, "{d:?}");
    assert_eq!(d.reasons, ["delegated-admins"]);
    let d = e.evaluate("agt_1", &id, ToolClass::Read, &agent_facts(&["viewer"]));
    assert_eq!(d.decision, Outcome::Deny, "{d:?}");
    // The approver's roles.
    let approved = |roles: &[&str]| Facts {
        environment: "prod".into(),
        approved: true,
        approver: Some(HumanFacts::new(
            "dave@example.com",
            roles.iter().map(|r| r.to_string()),
        )),
        ..Facts::default()
    };
    let d = e.evaluate("agt_1", &id, ToolClass::Read, &approved(&["approver"]));
    assert_eq!(d.reasons, ["approved-by-an-approver"], "{d:?}");
    let d = e.evaluate("agt_1", &id, ToolClass::Read, &approved(&[]));
    assert_eq!(d.decision, Outcome::Deny, "{d:?}");
}

#[test]
fn human_entities_validate_against_the_schema() {
    let schema = schema().unwrap();
    let h = entities::human_entity(&HumanFacts::new("a@example.com", ["admin".into()]));
    assert!(entities::from_list(vec![h.unwrap()], &schema).is_ok());
    // Agent attributes of any principal: Humans lack them, so only schema version 1
    // accepts it (legacy); scoped to agents it is a current set.
    let any = "permit (principal, action in Action::\"call\", resource) when { principal.environment == \"prod\" };";
    assert!(compile(any, &schema).unwrap().legacy);
    let agents = "permit (principal, action in Action::\"call\", resource) when { principal is Agent && principal.environment == \"prod\" };";
    assert!(!compile(agents, &schema).unwrap().legacy);
    // Human attributes do.
    compile(
        "permit (principal is Human, action, resource) when { principal.roles.contains(\"admin\") && principal.email == \"a@example.com\" };",
        &schema,
    )
    .unwrap();
    // Agent attributes on any principal beside Human policies: valid for neither schema;
    // the message says how to fix it.
    let mixed = format!(
        "{DEFAULT_POLICIES}\n@id(\"x\") forbid (principal, action, resource) when {{ principal.purpose == \"x\" }};"
    );
    match compile(&mixed, &schema) {
        Err(PolicyError::Invalid(m)) => assert!(m.contains("principal is Agent"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(c) => panic!("accepted (legacy: {})", c.legacy),
    }
    // impersonate stays Agent-only.
    let c = compile(
        "permit (principal is Human, action == Action::\"impersonate\", resource);",
        &schema,
    );
    assert!(c.is_err() || !c.unwrap().warnings.is_empty());
}

#[test]
fn a_stored_v1_set_still_loads_in_legacy_mode() {
    let schema = schema().unwrap();
    let c = compile(DEFAULT_POLICIES_V1, &schema).unwrap();
    assert!(c.legacy);
    assert!(
        c.warnings.iter().any(|w| w.contains("schema version 1")),
        "{:?}",
        c.warnings
    );
    // People through MCP clients: as before, a low-trust agent in the server's environment.
    let s = server("prod");
    let e = engine(DEFAULT_POLICIES_V1, &s);
    assert!(e.legacy());
    let alice = HumanFacts::new("alice@example.com", ["admin".to_string()]);
    let f = person_facts(&alice, "prod", "mcp_1");
    let d = |tool: &str| e.evaluate_human(&alice, &s, &s.tools[tool], &f);
    assert_eq!(d("search").decision, Outcome::Permit);
    assert_eq!(d("search").reasons, ["same-environment"]);
    assert_eq!(d("deploy").decision, Outcome::StepUp);
    assert_eq!(d("export").decision, Outcome::Deny);
    assert_eq!(d("export").reasons, ["confidential-needs-medium-trust"]);
    // Agents as before, delegation and approver included.
    let id = tool_uid(&s, &s.tools["search"]);
    let facts = Facts {
        environment: "prod".into(),
        approved: true,
        approver: Some(alice.clone()),
        delegation: Some(alice.clone()),
        ..Facts::default()
    };
    let agent = Agent {
        environment: "prod".into(),
        ..legacy_client_agent(&ClientFacts::default(), &alice, &s)
    };
    let with = e.entities_with(&Agent {
        id: "agt_1".into(),
        ..agent
    });
    let d = e.evaluate_in(&with.unwrap(), "agt_1", &id, ToolClass::Read, &facts);
    assert_eq!(d.decision, Outcome::Permit, "{d:?}");
    // A set that is valid for neither schema is refused with the current schema's errors.
    assert!(
        compile(
            "permit (principal, action, resource) when { principal.nope };",
            &schema
        )
        .is_err()
    );
}
