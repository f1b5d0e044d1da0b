//! Trying policies before they go live: a request described by hand (or naming registered
//! agents and tools), evaluated against a policy text. `mandate policies test FILE` runs a file
//! of such cases with expected decisions; the what-if endpoint evaluates one. The principal is
//! an agent (`agent`) or a person acting through an MCP client (`human`).
use super::entities::{agent_entity, from_list, server_entity, tool_entity};
use super::{
    ClientFacts, Compiled, Decision, Engine, Facts, HumanFacts, Outcome, PolicyError, schema_for,
    tool_uid,
};
use crate::agents::{Agent, AgentStatus, AuthMethod, TrustLevel};
use crate::registry::Registry;
use crate::resources::{McpServer, Sensitivity, Tool, ToolClass};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The agent of a case: a registered agent's id, or its attributes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum AgentSpec {
    Registered(String),
    Described(DescribedAgent),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribedAgent {
    #[serde(default = "default_agent_id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_trust")]
    pub trust_level: String,
    pub environment: String,
    #[serde(default = "default_owner")]
    pub owner: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A person acting through an MCP client: `Human::"<email>"` with their Mandate roles.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanSpec {
    pub email: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The MCP client a person acts through (`context.client`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub id: String,
    pub name: Option<String>,
}

/// The approver: an email, or an email with roles.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ApproverSpec {
    Email(String),
    Described(HumanSpec),
}

impl ApproverSpec {
    pub fn facts(&self) -> HumanFacts {
        match self {
            Self::Email(e) => HumanFacts::new(e.clone(), []),
            Self::Described(h) => HumanFacts::new(h.email.clone(), h.roles.clone()),
        }
    }
}

fn default_agent_id() -> String {
    "test-agent".into()
}
fn default_trust() -> String {
    "low".into()
}
fn default_owner() -> String {
    "owner@example.com".into()
}

/// The tool of a case: `server` (URI) and `name`; with `class`, `sensitivity` and
/// `environment` it is described, without them it must be registered.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub server: String,
    pub name: String,
    pub class: Option<String>,
    pub sensitivity: Option<String>,
    pub environment: Option<String>,
}

/// The context of a case; everything optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    /// Unix seconds or `YYYY-MM-DDTHH:MM:SSZ`; default: now.
    pub time: Option<TimeSpec>,
    #[serde(default)]
    pub risk_score: i64,
    #[serde(default)]
    pub approved: bool,
    pub approver: Option<ApproverSpec>,
    /// Default for a `human` case: that person (as in real requests).
    pub delegation: Option<DelegationSpec>,
    /// Default for a `human` case: `{ id = "mcp-test-client", name = "test client" }`.
    pub client: Option<ClientSpec>,
    pub source_ip: Option<std::net::IpAddr>,
    /// Default: the agent's environment; for a `human` case, the tool's.
    pub environment: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TimeSpec {
    Unix(i64),
    Text(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationSpec {
    pub human: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl DelegationSpec {
    pub fn facts(&self) -> HumanFacts {
        HumanFacts::new(self.human.clone(), self.roles.clone())
    }
}

/// One request to try, with the decision expected (test files): exactly one of `agent` and
/// `human` is the principal.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: String,
    pub agent: Option<AgentSpec>,
    pub human: Option<HumanSpec>,
    pub tool: ToolSpec,
    #[serde(default)]
    pub context: ContextSpec,
    pub expect: Option<String>,
}

/// A test file: `[[case]]` tables (TOML) or `{"case": [...]}` (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    #[serde(default)]
    pub case: Vec<Case>,
}

/// The outcome of one case.
#[derive(Debug, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub expected: Option<Outcome>,
    #[serde(flatten)]
    pub decision: Decision,
    pub passed: bool,
}

/// `YYYY-MM-DDTHH:MM:SSZ` as Unix seconds.
fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn bad(what: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(what.into())
}

impl Case {
    fn agent(&self, spec: &AgentSpec, registry: Option<&Registry>) -> Result<Agent, PolicyError> {
        match spec {
            AgentSpec::Registered(id) => registry
                .and_then(|r| r.agent(id))
                .map(|a| (**a).clone())
                .ok_or_else(|| PolicyError::NotFound(format!("agent {id}"))),
            AgentSpec::Described(d) => Ok(Agent {
                id: d.id.clone(),
                name: d.name.clone(),
                purpose: d.purpose.clone(),
                justification: String::new(),
                owner: d.owner.clone(),
                trust_level: TrustLevel::parse(&d.trust_level)
                    .ok_or_else(|| bad("trust_level must be low, medium or high"))?,
                environment: d.environment.clone(),
                allowed_resources: Vec::new(),
                scope_ceiling: Vec::new(),
                token_ttl_cap: None,
                status: AgentStatus::Active,
                auth_method: AuthMethod::ClientSecretBasic,
                jwks: None,
                jwks_uri: None,
                created_at: 0,
                updated_at: 0,
                session_lifetime_secs: None,
                session_idle_secs: None,
                groups: d.groups.clone(),
            }),
        }
    }

    fn tool(&self, registry: Option<&Registry>) -> Result<(McpServer, Tool), PolicyError> {
        let t = &self.tool;
        let uri = crate::resources::canonical_resource(&t.server).map_err(bad)?;
        match (&t.class, &t.sensitivity, &t.environment) {
            (Some(class), Some(sens), Some(env)) => {
                let tool = Tool {
                    name: t.name.clone(),
                    class: ToolClass::parse(class)
                        .ok_or_else(|| bad("tool class must be read, write or execute"))?,
                    sensitivity: Sensitivity::parse(sens).ok_or_else(|| {
                        bad("sensitivity must be public, internal, confidential or restricted")
                    })?,
                };
                let server = McpServer {
                    id: "test-server".into(),
                    resource: uri,
                    name: "test server".into(),
                    environment: env.clone(),
                    tools: BTreeMap::from([(tool.name.clone(), tool.clone())]),
                    created_at: 0,
                    updated_at: 0,
                };
                Ok((server, tool))
            }
            (None, None, None) => {
                let server = registry
                    .and_then(|r| r.server_by_resource(&uri))
                    .ok_or_else(|| PolicyError::NotFound(format!("server {uri}")))?;
                let tool = server
                    .tools
                    .get(&t.name)
                    .ok_or_else(|| PolicyError::NotFound(format!("tool {} on {uri}", t.name)))?;
                Ok(((**server).clone(), tool.clone()))
            }
            _ => Err(bad(
                "a described tool needs class, sensitivity and environment (or none of them, \
                 for a registered tool)",
            )),
        }
    }

    fn facts(
        &self,
        environment: &str,
        now: i64,
        offset_at: &dyn Fn(i64) -> i64,
    ) -> Result<Facts, PolicyError> {
        let c = &self.context;
        let time = match &c.time {
            None => now,
            Some(TimeSpec::Unix(t)) => *t,
            Some(TimeSpec::Text(s)) => parse_utc(s)
                .ok_or_else(|| bad("time must be Unix seconds or YYYY-MM-DDTHH:MM:SSZ"))?,
        };
        if !(0..=100).contains(&c.risk_score) {
            return Err(bad("risk_score must be 0-100"));
        }
        Ok(Facts {
            now: time,
            utc_offset_secs: offset_at(time),
            risk_score: c.risk_score,
            approved: c.approved,
            approver: c.approver.as_ref().map(ApproverSpec::facts),
            delegation: c.delegation.as_ref().map(DelegationSpec::facts),
            client: c.client.as_ref().map(|c| ClientFacts {
                id: c.id.clone(),
                name: c.name.clone(),
            }),
            source_ip: c.source_ip,
            environment: c
                .environment
                .clone()
                .unwrap_or_else(|| environment.to_string()),
        })
    }

    /// Evaluates the case against `compiled`; registered names are looked up in `registry`;
    /// `offset_at` gives the deployment's UTC offset (seconds) at a time.
    pub fn evaluate(
        &self,
        compiled: &Compiled,
        registry: Option<&Registry>,
        now: i64,
        offset_at: &dyn Fn(i64) -> i64,
    ) -> Result<CaseResult, PolicyError> {
        let expected = match &self.expect {
            None => None,
            Some(e) => Some(
                Outcome::parse(e).ok_or_else(|| bad("expect must be permit, deny or step_up"))?,
            ),
        };
        let (server, tool) = self.tool(registry)?;
        let schema = schema_for(compiled)?;
        let mut list = vec![
            server_entity(&server).map_err(bad)?,
            tool_entity(&server, &tool).map_err(bad)?,
        ];
        let decision = match (&self.agent, &self.human) {
            (Some(spec), None) => {
                let agent = self.agent(spec, registry)?;
                let facts = self.facts(&agent.environment, now, offset_at)?;
                list.push(agent_entity(&agent).map_err(bad)?);
                let entities = from_list(list, &schema).map_err(bad)?;
                let engine = Engine::with_entities(compiled.clone(), entities, schema);
                engine.evaluate(&agent.id, &tool_uid(&server, &tool), tool.class, &facts)
            }
            (None, Some(h)) => {
                let person = HumanFacts::new(h.email.clone(), h.roles.clone());
                let mut facts = self.facts(&server.environment, now, offset_at)?;
                if facts.delegation.is_none() {
                    facts.delegation = Some(person.clone());
                }
                if facts.client.is_none() {
                    facts.client = Some(ClientFacts {
                        id: "mcp-test-client".into(),
                        name: Some("test client".into()),
                    });
                }
                let entities = from_list(list, &schema).map_err(bad)?;
                let engine = Engine::with_entities(compiled.clone(), entities, schema);
                engine.evaluate_human(&person, &server, &tool, &facts)
            }
            _ => return Err(bad("a case names exactly one of agent and human")),
        };
        Ok(CaseResult {
            name: self.name.clone(),
            passed: expected.is_none_or(|e| e == decision.decision),
            expected,
            decision,
        })
    }
}

/// Parses a test file (TOML, or JSON when it starts with `{`).
pub fn parse_file(text: &str) -> Result<TestFile, PolicyError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| bad(format!("test file: {e}")))
    } else {
        toml::from_str(text).map_err(|e| bad(format!("test file: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2026-11-26T08:50:00Z"), Some(1_795_683_000));
        assert_eq!(parse_utc("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        assert_eq!(parse_utc("2026-11-26 08:50:00"), None);
    }

    #[test]
    fn default_policy_examples() {
        let compiled = super::super::compile(
            super::super::DEFAULT_POLICIES,
            &super::super::schema().unwrap(),
        )
        .unwrap();
        let file = parse_file(include_str!("../../policies/default.tests.toml")).unwrap();
        assert!(file.case.len() >= 8);
        for case in &file.case {
            let r = case
                .evaluate(&compiled, None, 1_795_683_000, &|_| 0)
                .unwrap();
            assert!(r.passed, "{}: {:?}", case.name, r.decision);
        }
    }

    #[test]
    fn scoped_policies_apply_only_to_their_principal_and_resource() {
        let src = r#"
            @id("a1-on-s") permit (principal == Agent::"a1", action, resource in McpServer::"https://s.example/mcp");
            @id("x-off") forbid (principal, action, resource == Tool::"https://s.example/mcp#x");
            @id("all-read-t") permit (principal, action == Action::"read", resource in McpServer::"https://t.example/mcp");
        "#;
        let compiled = super::super::compile(src, &super::super::schema().unwrap()).unwrap();
        let file = parse_file(
            r#"
            [[case]]
            agent = { id = "a1", environment = "prod" }
            tool = { server = "https://s.example/mcp", name = "y", class = "write", sensitivity = "public", environment = "prod" }
            expect = "permit"
            [[case]]
            agent = { id = "a2", environment = "prod" }
            tool = { server = "https://s.example/mcp", name = "y", class = "write", sensitivity = "public", environment = "prod" }
            expect = "deny"
            [[case]]
            agent = { id = "a1", environment = "prod" }
            tool = { server = "https://s.example/mcp", name = "x", class = "write", sensitivity = "public", environment = "prod" }
            expect = "deny"
            [[case]]
            agent = { id = "a2", environment = "prod" }
            tool = { server = "https://t.example/mcp", name = "x", class = "read", sensitivity = "public", environment = "prod" }
            expect = "permit"
            [[case]]
            agent = { id = "a1", environment = "prod" }
            tool = { server = "https://u.example/mcp", name = "y", class = "read", sensitivity = "public", environment = "prod" }
            expect = "deny"
            "#,
        )
        .unwrap();
        for (i, case) in file.case.iter().enumerate() {
            let r = case.evaluate(&compiled, None, 0, &|_| 0).unwrap();
            assert!(r.passed, "case {i}: {:?}", r.decision);
        }
    }
}
