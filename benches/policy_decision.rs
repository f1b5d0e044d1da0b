//! Micro benchmark of the policy engine: one uncached decision with 1,000 policies and 10,000
//! agents loaded (p50 / p99), the cached decision the token path makes, and the cost of
//! compiling the engine when the registry or the policy set changes.
//!
//!     cargo bench --bench policy_decision
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]
use mandate::policy::{Engine, Facts, Outcome, tool_uid};
use mandate::registry::Registry;
use mandate::store::RegistryRows;
use mandate::store::entities::{agent, mcp_server};
use std::time::Instant;

const AGENTS: usize = 10_000;
const SERVERS: usize = 100;
const POLICIES: usize = 1_000;

fn rows() -> RegistryRows {
    let mut rows = RegistryRows::default();
    for s in 0..SERVERS {
        let tools = serde_json::json!([
            {"name": "search", "class": "read", "sensitivity": "internal"},
            {"name": "export", "class": "read", "sensitivity": "confidential"},
            {"name": "write_doc", "class": "write", "sensitivity": "internal"},
            {"name": "deploy", "class": "execute", "sensitivity": "restricted"},
        ]);
        rows.servers.push(mcp_server::Model {
            id: format!("srv_{s}"),
            resource_uri: format!("https://s{s}.mcp.test/mcp"),
            name: format!("server {s}"),
            environment: if s % 10 == 0 {
                "dev".into()
            } else {
                "prod".into()
            },
            tools: tools.to_string(),
            created_at: 0,
            updated_at: 0,
        });
    }
    for a in 0..AGENTS {
        rows.agents.push(agent::Model {
            id: format!("agt_{a}"),
            name: format!("agent {a}"),
            purpose: "benchmark".into(),
            justification: String::new(),
            owner: "owner@example.com".into(),
            trust_level: ["low", "medium", "high"][a % 3].into(),
            environment: "prod".into(),
            allowed_resources: "[]".into(),
            scope_ceiling: "tools:read tools:write tools:execute".into(),
            token_ttl_cap: None,
            status: "active".into(),
            auth_method: "client_secret_basic".into(),
            jwks: None,
            jwks_uri: None,
            created_at: 0,
            updated_at: 0,
            session_lifetime_secs: None,
            session_idle_secs: None,
            groups: Some(format!("team:{}", a % 20)),
        });
    }
    rows
}

/// The defaults plus generated per-agent and per-server policies, up to `POLICIES`.
fn policies() -> String {
    let mut src = mandate::policy::DEFAULT_POLICIES.to_string();
    let mut n = mandate::policy::DEFAULT_POLICIES.matches("@id(").count();
    let mut i = 0;
    while n < POLICIES {
        src.push_str(&format!(
            "@id(\"agent-{i}-office-hours\")\npermit (principal == Agent::\"agt_{}\", action == Action::\"write\", resource in McpServer::\"https://s{}.mcp.test/mcp\")\nwhen {{ context.time.hour >= 8 && context.time.hour < 18 }};\n",
            i * 7 % AGENTS,
            i % SERVERS
        ));
        src.push_str(&format!(
            "@id(\"server-{i}-no-export-for-purpose\")\nforbid (principal is Agent, action, resource == Tool::\"https://s{}.mcp.test/mcp#export\")\nwhen {{ principal.purpose == \"marketing-{i}\" }};\n",
            i % SERVERS
        ));
        n += 2;
        i += 1;
    }
    src
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let src = policies();
    let mut rows = rows();
    rows.version = 1;
    let kek = mandate::tokens::keys::Kek::from_bytes(&[7u8; 32]).unwrap();
    let t = Instant::now();
    let reg = Registry::from_rows(rows, &kek);
    let plain = t.elapsed();
    // Rebuild with the policy set (what a node does on a change).
    let t = Instant::now();
    let engine = Engine::build(1, Some(&src), &reg);
    let build = t.elapsed();
    assert!(engine.load_error.is_none(), "{:?}", engine.load_error);
    assert_eq!(engine.policies().len(), POLICIES);
    println!(
        "loaded {} policies, {AGENTS} agents, {SERVERS} servers x 4 tools; registry {:.1} ms, engine build {:.1} ms",
        engine.policies().len(),
        plain.as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e3
    );

    let servers: Vec<_> = reg.servers().cloned().collect();
    let agents: Vec<_> = reg.agents().cloned().collect();
    let iters = 20_000;
    let mut uncached = Vec::with_capacity(iters);
    let mut outcomes = [0usize; 3];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..iters + 1_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let a = &agents[(seed % AGENTS as u64) as usize];
        let s = &servers[((seed >> 20) % SERVERS as u64) as usize];
        let tool = s.tools.values().nth(((seed >> 40) % 4) as usize).unwrap();
        let facts = Facts {
            now: 1_795_683_000 + i as i64,
            environment: "prod".into(),
            risk_score: ((seed >> 8) % 100) as i64,
            ..Facts::default()
        };
        let uid = tool_uid(s, tool);
        let t = Instant::now();
        let d = engine.evaluate(&a.id, &uid, tool.class, &facts);
        let el = t.elapsed().as_secs_f64() * 1e6;
        if i >= 1_000 {
            uncached.push(el);
            outcomes[match d.decision {
                Outcome::Permit => 0,
                Outcome::Deny => 1,
                Outcome::StepUp => 2,
            }] += 1;
        }
    }
    let mean = uncached.iter().sum::<f64>() / uncached.len() as f64;
    println!(
        "uncached decision ({iters} random agent/tool/risk): p50 {:.1} us  p99 {:.1} us  mean {:.1} us  (permit {} deny {} step_up {})",
        pct(&mut uncached, 0.50),
        pct(&mut uncached, 0.99),
        mean,
        outcomes[0],
        outcomes[1],
        outcomes[2]
    );

    // The token path's steady state: the same agent and tools, answered from the cache.
    let a = &agents[1];
    let s = &servers[1];
    let facts = Facts {
        now: 1_795_683_000,
        environment: "prod".into(),
        ..Facts::default()
    };
    let mut cached = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let f = engine.features(&facts);
        for tool in s.tools.values() {
            std::hint::black_box(engine.decide(a, s, tool, &f, &facts));
        }
        cached.push(t.elapsed().as_secs_f64() * 1e6 / s.tools.len() as f64);
    }
    println!(
        "cached decision (per tool, token path): p50 {:.2} us  p99 {:.2} us",
        pct(&mut cached, 0.50),
        pct(&mut cached, 0.99)
    );
}
