//! The policy engine: Cedar policies decide every grant and every tool call, with reasons.
//!
//! A policy set is compiled (parsed, given ids from `@id` annotations, validated against the
//! schema) into an [`Engine`] together with the registry's agents, servers and tools as Cedar
//! entities. The engine lives inside the registry snapshot, so a policy or registry change swaps
//! both atomically, and a decision never touches the database. Decisions are deterministic in
//! (principal, tool, the context features the policies read), so each engine memoises them: the
//! steady-state token path is a hash lookup per tool. The principal is an `Agent` (from the
//! registry) or a `Human`, a person acting through an MCP client, built from what the request
//! or token says about them (email, roles; the client in `context.client`).
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
use cache::{DecisionCache, Features, PrincipalKey};
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression, Schema,
};
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The Cedar schema policies are validated against (version 2: `Agent` and `Human` principals).
pub const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
/// Schema version 1 (`Agent` principals only, an attribute-less `Human`). A stored set that
/// validates only against it still loads, in legacy mode: people acting through MCP clients
/// are then evaluated as before, as low-trust agents (see [`Engine::legacy`]).
pub const SCHEMA_V1: &str = include_str!("../../policies/v1/schema.cedarschema");
/// The policies installed on first start.
pub const DEFAULT_POLICIES: &str = include_str!("../../policies/default.cedar");
/// The defaults installed by releases before schema version 2 (still stored by deployments
/// that started then; they load in legacy mode).
pub const DEFAULT_POLICIES_V1: &str = include_str!("../../policies/v1/default.cedar");

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

/// A person as policies see them: `Human::"<email>"` with `email` and `roles`. Built from
/// what the request or token holds (never looked up while deciding).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HumanFacts {
    /// Their email (the entity id); for a person named by an identity provider, the value of
    /// its subject claim.
    pub email: String,
    /// Sorted, without duplicates (part of decision cache keys).
    pub roles: Vec<String>,
}

impl HumanFacts {
    pub fn new(email: impl Into<String>, roles: impl IntoIterator<Item = String>) -> Self {
        let mut roles: Vec<String> = roles.into_iter().collect();
        roles.sort_unstable();
        roles.dedup();
        Self {
            email: email.into(),
            roles,
        }
    }
}

/// The OAuth client a person acts through (`context.client`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientFacts {
    pub id: String,
    /// What the client calls itself; unknown when only its token is at hand.
    pub name: Option<String>,
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
    /// Who approved (in the context only when `approved`).
    pub approver: Option<HumanFacts>,
    /// The human the agent acts for (or the person acting through an MCP client).
    pub delegation: Option<HumanFacts>,
    /// The MCP client a person acts through.
    pub client: Option<ClientFacts>,
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

/// The principal of one evaluation.
#[derive(Clone, Copy)]
enum Who<'a> {
    Agent(&'a str),
    Human(&'a HumanFacts),
}

struct Types {
    agent: EntityTypeName,
    human: EntityTypeName,
    tool: EntityTypeName,
    server: EntityTypeName,
    actions: [EntityUid; 3],
}

impl Types {
    fn new() -> Option<Self> {
        let action = |a: &str| EntityUid::from_str(&format!("Action::\"{a}\"")).ok();
        Some(Self {
            agent: EntityTypeName::from_str("Agent").ok()?,
            human: EntityTypeName::from_str("Human").ok()?,
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

/// Parses the version 1 schema (legacy sets).
pub fn schema_v1() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA_V1)
        .map(|(s, _warnings)| s)
        .map_err(|e| PolicyError::Invalid(format!("schema v1: {e}")))
}

/// The schema `compiled` was validated against (entities and requests must match it).
pub fn schema_for(compiled: &Compiled) -> Result<Schema, PolicyError> {
    if compiled.legacy {
        schema_v1()
    } else {
        schema()
    }
}

/// The agent standing for an MCP client acting for `person` under a legacy (schema version 1)
/// policy set, as releases before Human principals evaluated it: trust level `low` (nobody
/// vetted the client), in the server's environment, owned by the person.
pub fn legacy_client_agent(client: &ClientFacts, person: &HumanFacts, server: &McpServer) -> Agent {
    use crate::agents::{AgentStatus, AuthMethod, TrustLevel};
    Agent {
        id: client.id.clone(),
        name: client.name.clone().unwrap_or_default(),
        purpose: "MCP client acting for a person".into(),
        justification: String::new(),
        owner: person.email.clone(),
        trust_level: TrustLevel::Low,
        environment: server.environment.clone(),
        allowed_resources: vec![server.resource.clone()],
        scope_ceiling: ["tools:read", "tools:write", "tools:execute"]
            .map(String::from)
            .to_vec(),
        token_ttl_cap: None,
        status: AgentStatus::Active,
        auth_method: AuthMethod::ClientSecretBasic,
        jwks: None,
        jwks_uri: None,
        created_at: 0,
        updated_at: 0,
        session_lifetime_secs: None,
        session_idle_secs: None,
        groups: Vec::new(),
    }
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
            let mut schema = schema()?;
            if let Some(src) = source {
                let compiled = compile(src, &schema)?;
                if compiled.legacy {
                    tracing::warn!(
                        version,
                        "the policy set in force was written for schema version 1: people \
                         acting through MCP clients are evaluated as low-trust agents until a \
                         set for version 2 is applied (see README \"Policies\")"
                    );
                    schema = schema_v1()?;
                }
                engine.compiled = Some(compiled);
            }
            engine.entities = entities::build(registry, &schema).map_err(PolicyError::Invalid)?;
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

    /// Whether the set in force was written for schema version 1 (no Human principals): people
    /// acting through MCP clients are then evaluated as low-trust agents, as before.
    pub fn legacy(&self) -> bool {
        self.compiled.as_ref().is_some_and(|c| c.legacy)
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
        let key = PrincipalKey::Agent(agent.id.as_str().into());
        self.memoised(key, server, tool, features, || {
            self.evaluate(&agent.id, &tool_uid(server, tool), tool.class, facts)
        })
    }

    /// The cached decision under `key` for `tool`, else `evaluate`'s, cached.
    fn memoised(
        &self,
        key: PrincipalKey,
        server: &McpServer,
        tool: &Tool,
        features: &Features,
        evaluate: impl FnOnce() -> Decision,
    ) -> Arc<Decision> {
        if let Some(d) = self.cache.get(&key, &server.resource, &tool.name, features) {
            return d;
        }
        let d = Arc::new(evaluate());
        tracing::debug!(principal = ?key, tool = %tool.name, server = %server.resource,
            decision = d.decision.as_str(), reasons = ?d.reasons, "policy decision");
        self.cache.insert(
            key,
            &server.resource,
            &tool.name,
            features.clone(),
            d.clone(),
        );
        d
    }

    /// May `person`, acting through the MCP client `facts.client`, use `tool` of `server`?
    /// The principal is `Human::"<email>"`; memoised per (email, roles, client, tool, features).
    /// Under a legacy set the client is evaluated as a low-trust agent instead, as before.
    pub fn decide_human(
        &self,
        person: &HumanFacts,
        server: &McpServer,
        tool: &Tool,
        features: &Features,
        facts: &Facts,
    ) -> Arc<Decision> {
        let key = PrincipalKey::Human {
            email: person.email.as_str().into(),
            roles: person.roles.clone(),
            client: facts.client.clone(),
        };
        self.memoised(key, server, tool, features, || {
            self.evaluate_human(person, server, tool, facts)
        })
    }

    /// One uncached decision for a person acting through an MCP client (see
    /// [`Engine::decide_human`]).
    pub fn evaluate_human(
        &self,
        person: &HumanFacts,
        server: &McpServer,
        tool: &Tool,
        facts: &Facts,
    ) -> Decision {
        let tool_id = tool_uid(server, tool);
        if !self.legacy() {
            return self.evaluate_core(
                &self.entities,
                Who::Human(person),
                &tool_id,
                tool.class,
                facts,
            );
        }
        let client = facts.client.clone().unwrap_or_default();
        let agent = legacy_client_agent(&client, person, server);
        let Some(entities) = self.entities_with(&agent) else {
            return Decision::deny(vec!["the MCP client cannot be evaluated".into()]);
        };
        self.evaluate_core(
            &entities,
            Who::Agent(&agent.id),
            &tool_id,
            tool.class,
            facts,
        )
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
        let entities = match self.request_entities(&self.entities, None, facts) {
            Ok(e) => e,
            Err(e) => return Decision::deny(vec![e]),
        };
        let request = context(facts, facts.approved, c.legacy)
            .map_err(|e| format!("context: {e}"))
            .and_then(|ctx| {
                Request::new(principal, action, resource, ctx, Some(schema))
                    .map_err(|e| format!("request: {e}"))
            });
        match request {
            Ok(r) => self
                .run(&entities, &full, &r, &c.forbids)
                .into_decision(Outcome::Permit),
            Err(e) => Decision::deny(vec![e]),
        }
    }

    /// `base` plus the people of this request as `Human` entities with their attributes
    /// (schema version 2): the human principal, the approver, the delegating human. Only
    /// evaluations that name people pay for the copy (the store is reference-counted). The first
    /// description of a person wins (principal, then approver, then delegation). Under a legacy
    /// set, or with nobody to add, `base` itself.
    fn request_entities<'e>(
        &self,
        base: &'e Entities,
        principal: Option<&HumanFacts>,
        facts: &Facts,
    ) -> Result<Cow<'e, Entities>, String> {
        if self.legacy() {
            return Ok(Cow::Borrowed(base));
        }
        // The approver even when not (yet) approved: step_up asks the hypothetical.
        let approver = facts.approver.as_ref();
        let mut people: Vec<&HumanFacts> = Vec::new();
        for h in [principal, approver, facts.delegation.as_ref()]
            .into_iter()
            .flatten()
        {
            if !people.iter().any(|p| p.email == h.email) {
                people.push(h);
            }
        }
        if people.is_empty() {
            return Ok(Cow::Borrowed(base));
        }
        let list = people
            .into_iter()
            .map(entities::human_entity)
            .collect::<Result<Vec<_>, _>>()?;
        base.clone()
            .add_entities(list, self.schema.as_ref())
            .map(Cow::Owned)
            .map_err(|e| format!("entities: {e}"))
    }

    /// One uncached decision.
    pub fn evaluate(
        &self,
        agent_id: &str,
        tool_id: &str,
        class: ToolClass,
        facts: &Facts,
    ) -> Decision {
        self.evaluate_core(&self.entities, Who::Agent(agent_id), tool_id, class, facts)
    }

    /// The registry's entities plus `principal`, an agent that is not registered (a legacy
    /// stand-in for an MCP client), for [`Engine::evaluate_in`]. `None` when it cannot be
    /// added (then every decision for it is a deny).
    pub fn entities_with(&self, principal: &Agent) -> Option<Entities> {
        let schema = self.schema.as_ref()?;
        let e = entities::agent_entity(principal).ok()?;
        self.entities.clone().add_entities([e], Some(schema)).ok()
    }

    /// One uncached decision for an agent against `entities`.
    pub fn evaluate_in(
        &self,
        entities: &Entities,
        agent_id: &str,
        tool_id: &str,
        class: ToolClass,
        facts: &Facts,
    ) -> Decision {
        self.evaluate_core(entities, Who::Agent(agent_id), tool_id, class, facts)
    }

    fn evaluate_core(
        &self,
        base: &Entities,
        who: Who<'_>,
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
        let (principal, person) = match who {
            Who::Agent(id) => (
                EntityUid::from_type_name_and_id(types.agent.clone(), EntityId::new(id)),
                None,
            ),
            Who::Human(_) if c.legacy => {
                return Decision::deny(vec![
                    "the policy set in force predates Human principals".into(),
                ]);
            }
            Who::Human(h) => (
                EntityUid::from_type_name_and_id(types.human.clone(), EntityId::new(&h.email)),
                Some(h),
            ),
        };
        let entities = match self.request_entities(base, person, facts) {
            Ok(e) => e,
            Err(e) => return Decision::deny(vec![e]),
        };
        let entities = entities.as_ref();
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
            let ctx = context(facts, approved, c.legacy).map_err(|e| format!("context: {e}"))?;
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

/// The Cedar context of `facts`; `legacy`: for a schema version 1 set (no `client`).
fn context(facts: &Facts, approved: bool, legacy: bool) -> Result<Context, String> {
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
        approval.push(("approver".to_string(), human(&a.email)?));
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
    if let Some(d) = &facts.delegation {
        pairs.push((
            "delegation".to_string(),
            RestrictedExpression::new_record([
                ("human".to_string(), human(&d.email)?),
                (
                    "roles".to_string(),
                    RestrictedExpression::new_set(d.roles.iter().map(|r| s(r))),
                ),
            ])
            .map_err(|e| e.to_string())?,
        ));
    }
    if let Some(c) = &facts.client
        && !legacy
    {
        let mut client = vec![("id".to_string(), s(&c.id))];
        if let Some(name) = &c.name {
            client.push(("name".to_string(), s(name)));
        }
        pairs.push((
            "client".to_string(),
            RestrictedExpression::new_record(client).map_err(|e| e.to_string())?,
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
mod tests;
