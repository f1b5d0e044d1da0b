//! The policy engine: Cedar policies decide every grant and every tool call, with reasons.
//!
//! A policy set is compiled (parsed, given ids from `@id` annotations, validated against the
//! schema) into an [`Engine`] together with the registry's agents, servers and tools as Cedar
//! entities. The engine lives inside the registry snapshot, so a policy or registry change swaps
//! both atomically, and a decision never touches the database. Decisions are deterministic in
//! (agent, tool, the context features the policies read), so each engine memoises them: the
//! steady-state token path is a hash lookup per tool.
pub mod authzen;
mod cache;
mod compile;
mod entities;
pub mod service;
pub mod store;
pub mod testing;

pub use compile::{Compiled, PolicyInfo, compile};
pub use entities::sensitivity_str as sensitivity_name;

use crate::agents::Agent;
use crate::registry::Registry;
use crate::resources::{McpServer, Tool, ToolClass};
use cache::{DecisionCache, Features};
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression, Schema,
};
use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The Cedar schema policies are validated against.
pub const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
/// The policies installed on first start.
pub const DEFAULT_POLICIES: &str = include_str!("../../policies/default.cedar");

/// Policy layer errors.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Cedar refused the policy text (parse or validation); the message is Cedar's.
    #[error("{0}")]
    Invalid(String),
    /// The set would deny everything; `force` applies it anyway.
    #[error("{0}")]
    Lockout(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<sea_orm::DbErr> for PolicyError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(crate::store::StoreError::Db(e))
    }
}

/// What policy says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Permit,
    Deny,
    /// Permitted only with a human's approval.
    StepUp,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permit => "permit",
            Self::Deny => "deny",
            Self::StepUp => "step_up",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "permit" => Some(Self::Permit),
            "deny" => Some(Self::Deny),
            "step_up" => Some(Self::StepUp),
            _ => None,
        }
    }
}

/// A decision with its reasons: the ids of the policies that determined it (none for the
/// default deny) and any evaluation errors.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    pub decision: Outcome,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Decision {
    fn deny(errors: Vec<String>) -> Self {
        Self {
            decision: Outcome::Deny,
            reasons: Vec::new(),
            errors,
        }
    }
}

/// The request facts policies can read through `context` (see the schema).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Unix seconds.
    pub now: i64,
    /// Offset of the deployment's zone, for `context.time.hour` and `weekday`.
    pub utc_offset_secs: i64,
    pub risk_score: i64,
    pub approved: bool,
    pub approver: Option<String>,
    /// The human the agent acts for, and their roles.
    pub delegation: Option<(String, Vec<String>)>,
    pub source_ip: Option<IpAddr>,
    /// The environment of the request; the agent's when empty.
    pub environment: String,
}

impl Facts {
    /// Facts of a request by `agent` at `now` (no approval, risk 0).
    pub fn for_agent(agent: &Agent, now: i64, utc_offset_secs: i64, ip: Option<IpAddr>) -> Self {
        Self {
            now,
            utc_offset_secs,
            source_ip: ip,
            environment: agent.environment.clone(),
            ..Self::default()
        }
    }

    fn local(&self) -> (i64, i64) {
        let t = self.now + self.utc_offset_secs;
        let days = t.div_euclid(86_400);
        let hour = t.rem_euclid(86_400) / 3600;
        // 1970-01-01 was a Thursday (ISO 4).
        let weekday = (days + 3).rem_euclid(7) + 1;
        (hour, weekday)
    }
}

/// The compiled policy set and the registry as Cedar entities, with a decision cache.
pub struct Engine {
    /// Version of the policy set (0: none installed).
    pub version: i64,
    compiled: Option<Compiled>,
    /// Why the stored set could not be loaded (then everything is denied).
    pub load_error: Option<String>,
    schema: Option<Schema>,
    entities: Entities,
    types: Option<Types>,
    cache: DecisionCache,
}

struct Types {
    agent: EntityTypeName,
    tool: EntityTypeName,
    server: EntityTypeName,
    actions: [EntityUid; 3],
}

impl Types {
    fn new() -> Option<Self> {
        let action = |a: &str| EntityUid::from_str(&format!("Action::\"{a}\"")).ok();
        Some(Self {
            agent: EntityTypeName::from_str("Agent").ok()?,
            tool: EntityTypeName::from_str("Tool").ok()?,
            server: EntityTypeName::from_str("McpServer").ok()?,
            actions: [action("read")?, action("write")?, action("execute")?],
        })
    }
    fn action(&self, class: ToolClass) -> &EntityUid {
        match class {
            ToolClass::Read => &self.actions[0],
            ToolClass::Write => &self.actions[1],
            ToolClass::Execute => &self.actions[2],
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            version: 0,
            compiled: None,
            load_error: None,
            schema: None,
            entities: Entities::empty(),
            types: None,
            cache: DecisionCache::default(),
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("version", &self.version)
            .field("policies", &self.compiled.as_ref().map(|c| c.info.len()))
            .field("load_error", &self.load_error)
            .finish_non_exhaustive()
    }
}

/// The Cedar id of a tool: its server's URI, `#`, its name (resource URIs have no fragment).
pub fn tool_uid(server: &McpServer, tool: &Tool) -> String {
    format!("{}#{}", server.resource, tool.name)
}

/// Parses the embedded schema.
pub fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _warnings)| s)
        .map_err(|e| PolicyError::Invalid(format!("schema: {e}")))
}

impl Engine {
    /// Compiles `source` (version `version`) against the registry. A set that does not compile
    /// (say, stored by an older release against an older schema) yields an engine that denies
    /// everything and says why.
    pub fn build(version: i64, source: Option<&str>, registry: &Registry) -> Self {
        let mut engine = Self {
            version,
            ..Self::default()
        };
        let result = (|| -> Result<(), PolicyError> {
            let schema = schema()?;
            engine.entities = entities::build(registry, &schema).map_err(PolicyError::Invalid)?;
            if let Some(src) = source {
                engine.compiled = Some(compile(src, &schema)?);
            }
            engine.types = Types::new();
            engine.schema = Some(schema);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(version, error = %e, "policy set not loaded: every request is denied");
            engine.load_error = Some(e.to_string());
            engine.compiled = None;
        }
        engine
    }

    /// An engine for one policy text and explicit entities (tests, what-if).
    pub fn with_entities(compiled: Compiled, entities: Entities, schema: Schema) -> Self {
        Self {
            version: 0,
            compiled: Some(compiled),
            load_error: None,
            schema: Some(schema),
            entities,
            types: Types::new(),
            cache: DecisionCache::default(),
        }
    }

    /// The policies in force.
    pub fn policies(&self) -> &[PolicyInfo] {
        self.compiled.as_ref().map_or(&[], |c| c.info.as_slice())
    }

    /// The cache key part that comes from the request: only the features policies read.
    pub fn features(&self, facts: &Facts) -> Features {
        let reads = self.compiled.as_ref().map(|c| c.reads).unwrap_or_default();
        Features::of(facts, &reads)
    }

    /// May `agent` use `tool` of `server`? Memoised per (agent, tool, features).
    pub fn decide(
        &self,
        agent: &Agent,
        server: &McpServer,
        tool: &Tool,
        features: &Features,
        facts: &Facts,
    ) -> Arc<Decision> {
        if let Some(d) = self
            .cache
            .get(&agent.id, &server.resource, &tool.name, features)
        {
            return d;
        }
        let d = Arc::new(self.evaluate(&agent.id, &tool_uid(server, tool), tool.class, facts));
        tracing::debug!(agent = %agent.id, tool = %tool.name, server = %server.resource,
            decision = d.decision.as_str(), reasons = ?d.reasons, "policy decision");
        self.cache.insert(
            &agent.id,
            &server.resource,
            &tool.name,
            features.clone(),
            d.clone(),
        );
        d
    }

    /// May `agent_id` impersonate the human it acts for on `tool_id` (RFC 8693 token exchange
    /// without an `act` claim naming the agent)? `Action::"impersonate"`, which no default
    /// policy permits. Uncached: asked only on token exchange.
    pub fn permits_impersonation(&self, agent_id: &str, tool_id: &str, facts: &Facts) -> Decision {
        let (Some(c), Some(types), Some(schema)) = (&self.compiled, &self.types, &self.schema)
        else {
            return Decision::deny(vec!["no policy set is installed".into()]);
        };
        let principal =
            EntityUid::from_type_name_and_id(types.agent.clone(), EntityId::new(agent_id));
        let resource = EntityUid::from_type_name_and_id(types.tool.clone(), EntityId::new(tool_id));
        let server_uri = tool_id.rsplit_once('#').map_or(tool_id, |(s, _)| s);
        let server =
            EntityUid::from_type_name_and_id(types.server.clone(), EntityId::new(server_uri));
        let Ok(action) = EntityUid::from_str("Action::\"impersonate\"") else {
            return Decision::deny(vec!["no impersonate action".into()]);
        };
        let (full, _) = match c.slice(&principal, &resource, &server) {
            Ok(s) => s,
            Err(e) => return Decision::deny(vec![e.to_string()]),
        };
        let request = context(facts, facts.approved)
            .map_err(|e| format!("context: {e}"))
            .and_then(|ctx| {
                Request::new(principal, action, resource, ctx, Some(schema))
                    .map_err(|e| format!("request: {e}"))
            });
        match request {
            Ok(r) => self
                .run(&self.entities, &full, &r, &c.forbids)
                .into_decision(Outcome::Permit),
            Err(e) => Decision::deny(vec![e]),
        }
    }

    /// One uncached decision.
    pub fn evaluate(
        &self,
        agent_id: &str,
        tool_id: &str,
        class: ToolClass,
        facts: &Facts,
    ) -> Decision {
        self.evaluate_in(&self.entities, agent_id, tool_id, class, facts)
    }

    /// The registry's entities plus `principal`, a client that is not a registered agent (an
    /// MCP client acting for a person), for [`Engine::evaluate_in`]. `None` when it cannot be
    /// added (then every decision for it is a deny).
    pub fn entities_with(&self, principal: &Agent) -> Option<Entities> {
        let schema = self.schema.as_ref()?;
        let e = entities::agent_entity(principal).ok()?;
        self.entities.clone().add_entities([e], Some(schema)).ok()
    }

    /// One uncached decision against `entities`.
    pub fn evaluate_in(
        &self,
        entities: &Entities,
        agent_id: &str,
        tool_id: &str,
        class: ToolClass,
        facts: &Facts,
    ) -> Decision {
        let (Some(c), Some(types), Some(schema)) = (&self.compiled, &self.types, &self.schema)
        else {
            let why = self
                .load_error
                .clone()
                .unwrap_or_else(|| "no policy set is installed".into());
            return Decision::deny(vec![why]);
        };
        let principal =
            EntityUid::from_type_name_and_id(types.agent.clone(), EntityId::new(agent_id));
        let resource = EntityUid::from_type_name_and_id(types.tool.clone(), EntityId::new(tool_id));
        let server_uri = tool_id.rsplit_once('#').map_or(tool_id, |(s, _)| s);
        let server =
            EntityUid::from_type_name_and_id(types.server.clone(), EntityId::new(server_uri));
        let (full, unapproved) = match c.slice(&principal, &resource, &server) {
            Ok(s) => s,
            Err(e) => return Decision::deny(vec![e.to_string()]),
        };
        let action = types.action(class);
        let request = |approved: bool| -> Result<Request, String> {
            let ctx = context(facts, approved).map_err(|e| format!("context: {e}"))?;
            Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                ctx,
                Some(schema),
            )
            .map_err(|e| format!("request: {e}"))
        };
        let actual = match request(facts.approved) {
            Ok(r) => r,
            Err(e) => return Decision::deny(vec![e]),
        };
        if facts.approved || !c.step_up_possible {
            return self
                .run(entities, &full, &actual, &c.forbids)
                .into_decision(Outcome::Permit);
        }
        let without = self.run(entities, &unapproved, &actual, &c.forbids);
        if without.allow {
            return without.into_decision(Outcome::Permit);
        }
        let hypothetical = match request(true) {
            Ok(r) => r,
            Err(e) => return Decision::deny(vec![e]),
        };
        let with = self.run(entities, &full, &hypothetical, &c.forbids);
        if with.allow {
            return with.into_decision(Outcome::StepUp);
        }
        without.into_decision(Outcome::Permit)
    }

    fn run(
        &self,
        entities: &Entities,
        set: &PolicySet,
        req: &Request,
        forbids: &HashSet<String>,
    ) -> Run {
        let resp = Authorizer::new().is_authorized(req, set, entities);
        let diag = resp.diagnostics();
        let errors: Vec<String> = diag.errors().map(ToString::to_string).collect();
        // Cedar skips a policy whose evaluation fails; for a forbid that would permit what it
        // was meant to stop, so an erroring forbid denies (fail closed).
        let failed_forbids: Vec<String> = diag
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                    p.policy_id().to_string()
                }
            })
            .filter(|id| forbids.contains(id))
            .collect();
        if !failed_forbids.is_empty() {
            return Run {
                allow: false,
                reasons: failed_forbids,
                errors,
            };
        }
        Run {
            allow: resp.decision() == CedarDecision::Allow,
            reasons: diag.reason().map(ToString::to_string).collect(),
            errors,
        }
    }
}

struct Run {
    allow: bool,
    reasons: Vec<String>,
    errors: Vec<String>,
}

impl Run {
    fn into_decision(self, allowed: Outcome) -> Decision {
        Decision {
            decision: if self.allow { allowed } else { Outcome::Deny },
            reasons: self.reasons,
            errors: self.errors,
        }
    }
}

fn context(facts: &Facts, approved: bool) -> Result<Context, String> {
    let (hour, weekday) = facts.local();
    let s = |v: &str| RestrictedExpression::new_string(v.to_string());
    let human = |id: &str| -> Result<RestrictedExpression, String> {
        Ok(RestrictedExpression::new_entity_uid(
            EntityUid::from_type_name_and_id(
                EntityTypeName::from_str("Human").map_err(|e| e.to_string())?,
                EntityId::new(id),
            ),
        ))
    };
    let time = RestrictedExpression::new_record([
        (
            "timestamp".to_string(),
            RestrictedExpression::new_long(facts.now),
        ),
        ("hour".to_string(), RestrictedExpression::new_long(hour)),
        (
            "weekday".to_string(),
            RestrictedExpression::new_long(weekday),
        ),
    ])
    .map_err(|e| e.to_string())?;
    let mut approval = vec![(
        "approved".to_string(),
        RestrictedExpression::new_bool(approved),
    )];
    if approved && let Some(a) = &facts.approver {
        approval.push(("approver".to_string(), human(a)?));
    }
    let mut pairs = vec![
        ("time".to_string(), time),
        (
            "risk_score".to_string(),
            RestrictedExpression::new_long(facts.risk_score.clamp(0, 100)),
        ),
        (
            "approval".to_string(),
            RestrictedExpression::new_record(approval).map_err(|e| e.to_string())?,
        ),
        ("environment".to_string(), s(&facts.environment)),
    ];
    if let Some((who, roles)) = &facts.delegation {
        pairs.push((
            "delegation".to_string(),
            RestrictedExpression::new_record([
                ("human".to_string(), human(who)?),
                (
                    "roles".to_string(),
                    RestrictedExpression::new_set(roles.iter().map(|r| s(r))),
                ),
            ])
            .map_err(|e| e.to_string())?,
        ));
    }
    if let Some(ip) = facts.source_ip {
        pairs.push((
            "source_ip".to_string(),
            RestrictedExpression::new_ip(ip.to_string()),
        ));
    }
    Context::from_pairs(pairs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
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
        assert!(c.step_up_possible);
    }
}
