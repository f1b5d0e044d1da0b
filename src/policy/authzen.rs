//! OpenID AuthZEN Authorization API 1.0 as the policy decision point for MCP servers and
//! gateways: subject = the agent (or its access token, or the access token an MCP client holds
//! for a person: then the principal is that `Human`), action = the tool call, resource = a
//! tool of the calling server, context passed through. A server may only ask about its own
//! tools. No axum here: `src/http/authzen.rs` is the thin HTTP side.
use super::{ClientFacts, Facts, HumanFacts, Outcome};
use crate::app::App;
use crate::registry::Registry;
use crate::resources::{McpServer, ToolClass};
use serde::Deserialize;
use serde_json::{Value, json};

/// Why a request is refused as a whole (nothing is evaluated).
#[derive(Debug, thiserror::Error)]
pub enum AuthzenError {
    /// Missing or ill-typed fields (400).
    #[error("{0}")]
    BadRequest(String),
    /// A server asking about another server's tools (403).
    #[error("{0}")]
    Forbidden(String),
}

#[derive(Clone, Debug, Deserialize)]
pub struct Subject {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub properties: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Action {
    pub name: String,
    #[serde(default)]
    pub properties: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub properties: Option<Value>,
}

/// `POST /access/v1/evaluation` (AuthZEN §6).
#[derive(Clone, Debug, Deserialize)]
pub struct Evaluation {
    pub subject: Subject,
    pub action: Action,
    pub resource: Resource,
    #[serde(default)]
    pub context: Option<Value>,
}

/// One entry of a batch: each member defaults to the request's top-level one.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Item {
    pub subject: Option<Subject>,
    pub action: Option<Action>,
    pub resource: Option<Resource>,
    pub context: Option<Value>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Semantic {
    #[default]
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Options {
    #[serde(default)]
    pub evaluations_semantic: Semantic,
}

/// `POST /access/v1/evaluations` (AuthZEN §7).
#[derive(Clone, Debug, Deserialize)]
pub struct Evaluations {
    #[serde(flatten)]
    pub defaults: Item,
    pub evaluations: Vec<Item>,
    #[serde(default)]
    pub options: Options,
}

/// Most evaluations in one batch.
pub const MAX_BATCH: usize = 100;

fn bad(m: impl Into<String>) -> AuthzenError {
    AuthzenError::BadRequest(m.into())
}

/// The context members policy reads; anything else passes through unread.
#[derive(Debug, Default, Deserialize)]
struct PassedContext {
    risk_score: Option<i64>,
    approved: Option<bool>,
    approver: Option<super::testing::ApproverSpec>,
    delegation: Option<super::testing::DelegationSpec>,
    source_ip: Option<std::net::IpAddr>,
    environment: Option<String>,
}

impl PassedContext {
    /// Puts what the caller passed into `facts`.
    fn apply(self, facts: &mut Facts) {
        facts.risk_score = self.risk_score.unwrap_or(0);
        facts.approved = self.approved.unwrap_or(false);
        facts.approver = self
            .approver
            .as_ref()
            .map(super::testing::ApproverSpec::facts);
        if let Some(d) = &self.delegation {
            facts.delegation = Some(d.facts());
        }
        facts.source_ip = self.source_ip;
        if let Some(env) = self.environment {
            facts.environment = env;
        }
    }
}

/// The answer for a decision: `decision` is true only for a permit; the context says which
/// policies decided and whether a human's approval would do.
fn decision_answer(d: &super::Decision) -> Value {
    let mut ctx = json!({
        "decision": d.decision.as_str(),
        "reasons": d.reasons,
        "step_up": d.decision == Outcome::StepUp,
    });
    if !d.errors.is_empty() {
        ctx["errors"] = json!(d.errors);
    }
    answer(d.decision == Outcome::Permit, ctx)
}

/// A tool call by an MCP client for `person` (their token was presented): the principal is
/// `Human::"<email>"`, the client is `context.client`, and the person is also
/// `context.delegation` (as on the token endpoint).
fn person_answer(
    registry: &Registry,
    caller: &McpServer,
    tool: &crate::resources::Tool,
    person: &HumanFacts,
    facts: &Facts,
) -> Value {
    let engine = &registry.policy;
    let features = engine.features(facts);
    decision_answer(&engine.decide_human(person, caller, tool, &features, facts))
}

fn answer(decision: bool, context: Value) -> Value {
    json!({ "decision": decision, "context": context })
}

fn denied(reason: &str) -> Value {
    answer(
        false,
        json!({ "decision": "deny", "reason": reason, "step_up": false }),
    )
}

/// Whether `scope` (a token's) covers `tool` of class `class`.
fn scope_covers(scope: &str, tool: &str, class: ToolClass) -> bool {
    scope
        .split(' ')
        .filter_map(|s| s.strip_prefix("tools:"))
        .any(|s| s == tool || s == class.as_str())
}

impl App {
    /// Evaluates one request from `caller` (an authenticated MCP server).
    pub fn authzen_evaluate(
        &self,
        registry: &Registry,
        caller: &McpServer,
        e: &Evaluation,
    ) -> Result<Value, AuthzenError> {
        let now = self.clock.now();
        // The resource: a tool of the calling server, never another server's.
        if e.resource.kind != "tool" {
            return Err(bad("resource.type must be \"tool\""));
        }
        if let Some(server) = e.resource.properties.as_ref().and_then(|p| p.get("server")) {
            let server = server
                .as_str()
                .ok_or_else(|| bad("resource.properties.server must be a string"))?;
            let canon = crate::resources::canonical_resource(server)
                .map_err(|m| bad(format!("resource.properties.server: {m}")))?;
            if canon != caller.resource {
                return Err(AuthzenError::Forbidden(
                    "an MCP server may only ask about its own tools".into(),
                ));
            }
        }
        let class = match e.action.name.as_str() {
            "call" | "tools/call" => None,
            other => Some(ToolClass::parse(other).ok_or_else(|| {
                bad("action.name must be call, tools/call, read, write or execute")
            })?),
        };
        let passed: PassedContext = match &e.context {
            None | Some(Value::Null) => PassedContext::default(),
            Some(v @ Value::Object(_)) => {
                serde_json::from_value(v.clone()).map_err(|err| bad(format!("context: {err}")))?
            }
            Some(_) => return Err(bad("context must be an object")),
        };
        if passed.risk_score.is_some_and(|r| !(0..=100).contains(&r)) {
            return Err(bad("context.risk_score must be 0-100"));
        }
        let Some(tool) = caller.tools.get(&e.resource.id) else {
            return Ok(denied("unknown_tool"));
        };
        if class.is_some_and(|c| c != tool.class) {
            return Ok(denied("action_does_not_match_tool_class"));
        }
        // The subject: an agent by id, or the access token presented: an agent's, or an MCP
        // client's for a person (then the person is the principal).
        let agent = match e.subject.kind.as_str() {
            "agent" => match registry.agent(&e.subject.id) {
                Some(a) => a.clone(),
                None => return Ok(denied("unknown_subject")),
            },
            "token" => {
                let Ok(c) = self.verified.verify(
                    &e.subject.id,
                    &registry.keys,
                    &self.issuer,
                    now,
                    self.config.access_token_ttl_secs,
                ) else {
                    return Ok(denied("invalid_token"));
                };
                if c.aud != caller.resource {
                    return Ok(denied("token_not_for_this_server"));
                }
                if !self.backend.healthy() || self.replica.covers(&c) {
                    return Ok(denied("invalid_token"));
                }
                if !scope_covers(&c.scope, &tool.name, tool.class) {
                    return Ok(denied("insufficient_scope"));
                }
                match (registry.agent(&c.client_id), &c.person) {
                    (Some(a), _) => a.clone(),
                    (None, Some(p)) => {
                        let person = HumanFacts::new(p.email.clone(), p.roles.clone());
                        let client = ClientFacts {
                            id: c.client_id.clone(),
                            name: None,
                        };
                        let mut facts = Facts {
                            now,
                            utc_offset_secs: self.config.policy_offset_secs(now),
                            environment: caller.environment.clone(),
                            delegation: Some(person.clone()),
                            client: Some(client),
                            ..Facts::default()
                        };
                        passed.apply(&mut facts);
                        return Ok(person_answer(registry, caller, tool, &person, &facts));
                    }
                    (None, None) => return Ok(denied("unknown_subject")),
                }
            }
            _ => return Err(bad("subject.type must be \"agent\" or \"token\"")),
        };
        if agent.status != crate::agents::AgentStatus::Active {
            return Ok(denied("subject_suspended"));
        }
        let mut facts = Facts::for_agent(&agent, now, self.config.policy_offset_secs(now), None);
        passed.apply(&mut facts);
        let engine = &registry.policy;
        let features = engine.features(&facts);
        let d = engine.decide(&agent, caller, tool, &features, &facts);
        Ok(decision_answer(&d))
    }

    /// Evaluates a batch with its semantic (AuthZEN §7.1): `execute_all` answers every item;
    /// the other two stop after the first deny or permit. Returns the answer and the resolved
    /// items (their answers are the answer's `evaluations`, in order).
    pub fn authzen_evaluations(
        &self,
        registry: &Registry,
        caller: &McpServer,
        b: &Evaluations,
    ) -> Result<(Value, Vec<Evaluation>), AuthzenError> {
        if b.evaluations.len() > MAX_BATCH {
            return Err(bad(format!("at most {MAX_BATCH} evaluations per request")));
        }
        // Resolve every item first: a malformed one refuses the whole batch.
        let mut items = Vec::with_capacity(b.evaluations.len());
        for (i, it) in b.evaluations.iter().enumerate() {
            let pick = |name: &str| bad(format!("evaluations[{i}]: {name} is missing"));
            items.push(Evaluation {
                subject: it
                    .subject
                    .clone()
                    .or_else(|| b.defaults.subject.clone())
                    .ok_or_else(|| pick("subject"))?,
                action: it
                    .action
                    .clone()
                    .or_else(|| b.defaults.action.clone())
                    .ok_or_else(|| pick("action"))?,
                resource: it
                    .resource
                    .clone()
                    .or_else(|| b.defaults.resource.clone())
                    .ok_or_else(|| pick("resource"))?,
                context: it.context.clone().or_else(|| b.defaults.context.clone()),
            });
        }
        let mut out = Vec::with_capacity(items.len());
        for e in &items {
            let r = self.authzen_evaluate(registry, caller, e)?;
            let permit = r["decision"].as_bool().unwrap_or(false);
            out.push(r);
            match b.options.evaluations_semantic {
                Semantic::DenyOnFirstDeny if !permit => break,
                Semantic::PermitOnFirstPermit if permit => break,
                _ => {}
            }
        }
        Ok((json!({ "evaluations": out }), items))
    }
}

/// `/.well-known/authzen-configuration` (AuthZEN §9).
pub fn metadata(issuer: &str) -> Value {
    json!({
        "policy_decision_point": issuer,
        "access_evaluation_endpoint": format!("{issuer}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{issuer}/access/v1/evaluations"),
    })
}
