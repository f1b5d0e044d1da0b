//! The event model, its stored form and its canonical bytes.
//!
//! A request builds an [`Event`] (a few owned strings, no JSON, no hashing) and hands it to the
//! audit writer. The writer turns it into a [`Row`]: stream, sequence number, id and the hash
//! chain. `hash = SHA-256(prev_hash || canonical(row))` in lower-case hex, where `prev_hash` is
//! the hex hash of the stream's previous event (64 zeros before the first) and `canonical` is
//! the JSON object written by [`Row::canonical`] (fixed member order, no whitespace).
use aws_lc_rs::digest::{Context, SHA256};
use serde_json::Value;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The hash before a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of the canonical form; part of the hashed bytes.
pub const CANONICAL_VERSION: u32 = 1;

/// What happened. New kinds are added to [`kinds`] (and to [`kinds::ALL`], which the query
/// filter accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(pub &'static str);

impl Kind {
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// Every event type Mandate writes today.
pub mod kinds {
    use super::Kind;
    pub const TOKEN_ISSUED: Kind = Kind("token.issued");
    pub const TOKEN_REFUSED: Kind = Kind("token.refused");
    pub const TOKEN_INTROSPECTED: Kind = Kind("token.introspected");
    pub const TOKEN_REVOKED: Kind = Kind("token.revoked");
    pub const AGENT_CREATED: Kind = Kind("agent.created");
    pub const AGENT_UPDATED: Kind = Kind("agent.updated");
    pub const AGENT_STATUS_CHANGED: Kind = Kind("agent.status_changed");
    pub const AGENT_DELETED: Kind = Kind("agent.deleted");
    pub const SERVER_CREATED: Kind = Kind("server.created");
    pub const SERVER_UPDATED: Kind = Kind("server.updated");
    pub const SERVER_DELETED: Kind = Kind("server.deleted");
    pub const SECRET_ROTATED: Kind = Kind("secret.rotated");
    pub const KEY_ADDED: Kind = Kind("key.added");
    pub const ADMIN_TOKEN_CREATED: Kind = Kind("admin_token.created");
    pub const AUDIT_PRUNED: Kind = Kind("audit.pruned");
    pub const AGENT_KILLED: Kind = Kind("agent.killed");
    pub const SESSION_STARTED: Kind = Kind("session.started");
    pub const POLICY_APPLIED: Kind = Kind("policy.applied");
    pub const POLICY_EVALUATED: Kind = Kind("policy.evaluated");
    pub const HUMAN_CREATED: Kind = Kind("human.created");
    pub const HUMAN_UPDATED: Kind = Kind("human.updated");
    pub const HUMAN_DISABLED: Kind = Kind("human.disabled");
    pub const HUMAN_INVITED: Kind = Kind("human.invited");
    pub const PASSKEY_ADDED: Kind = Kind("passkey.added");
    pub const PASSKEY_REMOVED: Kind = Kind("passkey.removed");
    pub const HUMAN_SIGNED_IN: Kind = Kind("human.signed_in");
    pub const HUMAN_SIGN_IN_FAILED: Kind = Kind("human.sign_in_failed");
    pub const HUMAN_SIGNED_OUT: Kind = Kind("human.signed_out");
    pub const HUMAN_SESSIONS_REVOKED: Kind = Kind("human.sessions_revoked");
    pub const CODE_ISSUED: Kind = Kind("authorization_code.issued");
    pub const CODE_REPLAYED: Kind = Kind("authorization_code.replayed");
    pub const REFRESH_REUSED: Kind = Kind("refresh_token.reused");
    pub const CONSENT_GRANTED: Kind = Kind("consent.granted");
    pub const CONSENT_REVOKED: Kind = Kind("consent.revoked");
    pub const CLIENT_REGISTERED: Kind = Kind("client.registered");
    pub const CLIENT_DELETED: Kind = Kind("client.deleted");
    pub const APPROVAL_REQUESTED: Kind = Kind("approval.requested");
    pub const APPROVAL_NOTIFIED: Kind = Kind("approval.notified");
    pub const APPROVAL_VIEWED: Kind = Kind("approval.viewed");
    pub const APPROVAL_APPROVED: Kind = Kind("approval.approved");
    pub const APPROVAL_DENIED: Kind = Kind("approval.denied");
    pub const APPROVAL_REDEEMED: Kind = Kind("approval.redeemed");

    /// The kinds a query may filter on.
    pub const ALL: &[Kind] = &[
        TOKEN_ISSUED,
        TOKEN_REFUSED,
        TOKEN_INTROSPECTED,
        TOKEN_REVOKED,
        AGENT_CREATED,
        AGENT_UPDATED,
        AGENT_STATUS_CHANGED,
        AGENT_KILLED,
        AGENT_DELETED,
        SESSION_STARTED,
        SERVER_CREATED,
        SERVER_UPDATED,
        SERVER_DELETED,
        SECRET_ROTATED,
        KEY_ADDED,
        ADMIN_TOKEN_CREATED,
        AUDIT_PRUNED,
        POLICY_APPLIED,
        POLICY_EVALUATED,
        HUMAN_CREATED,
        HUMAN_UPDATED,
        HUMAN_DISABLED,
        HUMAN_INVITED,
        PASSKEY_ADDED,
        PASSKEY_REMOVED,
        HUMAN_SIGNED_IN,
        HUMAN_SIGN_IN_FAILED,
        HUMAN_SIGNED_OUT,
        HUMAN_SESSIONS_REVOKED,
        CODE_ISSUED,
        CODE_REPLAYED,
        REFRESH_REUSED,
        CONSENT_GRANTED,
        CONSENT_REVOKED,
        CLIENT_REGISTERED,
        CLIENT_DELETED,
        APPROVAL_REQUESTED,
        APPROVAL_NOTIFIED,
        APPROVAL_VIEWED,
        APPROVAL_APPROVED,
        APPROVAL_DENIED,
        APPROVAL_REDEEMED,
    ];
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// An AI agent (OAuth client).
    Agent,
    /// An MCP server (resource server) calling Mandate.
    Server,
    /// A human (console sign-in; later issues).
    Human,
    /// A holder of an admin API token.
    Admin,
    /// An operator at the command line.
    Cli,
    /// Mandate itself (start-up, retention).
    System,
    /// A caller whose credentials did not verify.
    Anonymous,
    /// An OAuth client acting for a person (an MCP client: authorization code flow).
    Client,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Server => "server",
            Self::Human => "human",
            Self::Admin => "admin",
            Self::Cli => "cli",
            Self::System => "system",
            Self::Anonymous => "anonymous",
            Self::Client => "client",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    /// Agent or server id, admin token id, OS user, or the claimed client id of a caller that
    /// failed authentication (empty when none was claimed).
    pub id: String,
}

impl Actor {
    pub fn new(kind: ActorKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }
    pub fn system() -> Self {
        Self::new(ActorKind::System, "mandate")
    }
    /// The operator running the CLI (`$USER`).
    pub fn cli() -> Self {
        Self::new(
            ActorKind::Cli,
            std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        )
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit,
    Deny,
    StepUp,
}

impl Decision {
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

/// One type-specific detail. Serialised by the writer, not by the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
    Json(Value),
}

/// An audit event as a request builds it. Never a token, secret or assertion: a `jti` or a
/// [`crate::secrets::fingerprint`] instead.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    /// Seconds since the epoch, from the app's clock.
    pub time: i64,
    pub actor: Actor,
    /// What the event is about (an agent, server, token id, key id...).
    pub subject: Option<String>,
    /// The agent involved, if any (filterable).
    pub agent: Option<String>,
    /// The MCP server involved, by id (filterable).
    pub server: Option<String>,
    pub tool: Option<String>,
    pub action: Option<&'static str>,
    pub decision: Option<Decision>,
    /// Why: error codes today, policy ids once policies land.
    pub reasons: Vec<String>,
    pub request_id: Option<String>,
    pub source: Option<IpAddr>,
    pub details: Vec<(&'static str, Detail)>,
}

impl Event {
    pub fn new(kind: Kind, time: i64, actor: Actor) -> Self {
        Self {
            kind,
            time,
            actor,
            subject: None,
            agent: None,
            server: None,
            tool: None,
            action: None,
            decision: None,
            reasons: Vec::new(),
            request_id: None,
            source: None,
            details: Vec::new(),
        }
    }
    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }
    pub fn agent(mut self, s: impl Into<String>) -> Self {
        self.agent = Some(s.into());
        self
    }
    pub fn server(mut self, s: impl Into<String>) -> Self {
        self.server = Some(s.into());
        self
    }
    pub fn action(mut self, a: &'static str) -> Self {
        self.action = Some(a);
        self
    }
    pub fn decision(mut self, d: Decision) -> Self {
        self.decision = Some(d);
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reasons.push(r.into());
        self
    }
    pub fn source(mut self, ip: IpAddr) -> Self {
        self.source = Some(ip);
        self
    }
    pub fn request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }
    pub fn detail(mut self, k: &'static str, v: Detail) -> Self {
        self.details.push((k, v));
        self
    }
    pub fn detail_str(self, k: &'static str, v: impl Into<String>) -> Self {
        self.detail(k, Detail::Str(v.into()))
    }
}

/// An event as stored: the chain fields filled in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub pos: i64,
    pub id: String,
    pub stream: String,
    pub seq: i64,
    pub time: i64,
    pub node: String,
    pub kind: String,
    pub actor_kind: String,
    pub actor_id: String,
    pub subject: Option<String>,
    pub agent: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub decision: Option<String>,
    /// JSON array of strings, as hashed.
    pub reasons: String,
    pub request_id: Option<String>,
    pub source: Option<String>,
    /// JSON object, as hashed.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

fn json_str(out: &mut String, s: &str) {
    // serde_json's escaping is deterministic; writing into a String cannot fail.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

fn opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn details_json(details: &[(&'static str, Detail)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in details.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, k);
        out.push(':');
        match v {
            Detail::Str(s) => json_str(&mut out, s),
            Detail::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Detail::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Detail::List(l) => {
                out.push('[');
                for (j, s) in l.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    json_str(&mut out, s);
                }
                out.push(']');
            }
            Detail::Json(v) => out.push_str(&v.to_string()),
        }
    }
    out.push('}');
    out
}

impl Row {
    /// Fills in the chain fields of `e` (the hash is computed by [`Row::seal`]).
    pub fn from_event(e: Event, stream: &str, node: &str, seq: i64) -> Self {
        let mut reasons = String::from("[");
        for (i, r) in e.reasons.iter().enumerate() {
            if i > 0 {
                reasons.push(',');
            }
            json_str(&mut reasons, r);
        }
        reasons.push(']');
        Self {
            pos: 0,
            id: uuid::Uuid::now_v7().to_string(),
            stream: stream.to_string(),
            seq,
            time: e.time,
            node: node.to_string(),
            kind: e.kind.0.to_string(),
            actor_kind: e.actor.kind.as_str().to_string(),
            actor_id: e.actor.id,
            subject: e.subject,
            agent: e.agent,
            server: e.server,
            tool: e.tool,
            action: e.action.map(str::to_string),
            decision: e.decision.map(|d| d.as_str().to_string()),
            reasons,
            request_id: e.request_id,
            source: e.source.map(|ip| ip.to_string()),
            details: details_json(&e.details),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The canonical bytes: a JSON object with a fixed member order; `reasons` and `details`
    /// are embedded as stored.
    pub fn canonical(&self) -> String {
        let mut o = String::with_capacity(512 + self.details.len());
        let _ = write!(o, "{{\"v\":{CANONICAL_VERSION},\"id\":");
        json_str(&mut o, &self.id);
        o.push_str(",\"stream\":");
        json_str(&mut o, &self.stream);
        let _ = write!(o, ",\"seq\":{},\"time\":{},\"node\":", self.seq, self.time);
        json_str(&mut o, &self.node);
        o.push_str(",\"type\":");
        json_str(&mut o, &self.kind);
        o.push_str(",\"actor\":{\"kind\":");
        json_str(&mut o, &self.actor_kind);
        o.push_str(",\"id\":");
        json_str(&mut o, &self.actor_id);
        o.push_str("},\"subject\":");
        opt(&mut o, self.subject.as_deref());
        o.push_str(",\"agent\":");
        opt(&mut o, self.agent.as_deref());
        o.push_str(",\"server\":");
        opt(&mut o, self.server.as_deref());
        o.push_str(",\"tool\":");
        opt(&mut o, self.tool.as_deref());
        o.push_str(",\"action\":");
        opt(&mut o, self.action.as_deref());
        o.push_str(",\"decision\":");
        opt(&mut o, self.decision.as_deref());
        o.push_str(",\"reasons\":");
        o.push_str(&self.reasons);
        o.push_str(",\"request_id\":");
        opt(&mut o, self.request_id.as_deref());
        o.push_str(",\"source\":");
        opt(&mut o, self.source.as_deref());
        o.push_str(",\"details\":");
        o.push_str(&self.details);
        o.push('}');
        o
    }

    /// The hash this row should carry given its `prev_hash`.
    pub fn compute_hash(&self) -> String {
        let mut ctx = Context::new(&SHA256);
        ctx.update(self.prev_hash.as_bytes());
        ctx.update(self.canonical().as_bytes());
        crate::secrets::hex(ctx.finish().as_ref())
    }

    /// Links this row after `prev` and sets its hash.
    pub fn seal(&mut self, prev: &str) {
        self.prev_hash = prev.to_string();
        self.hash = self.compute_hash();
    }

    /// One JSON line (SIEM sink and export): the canonical object plus `prev` and `hash`.
    pub fn json_line(&self) -> String {
        let mut c = self.canonical();
        c.pop();
        let _ = write!(
            c,
            ",\"prev\":\"{}\",\"hash\":\"{}\"}}",
            self.prev_hash, self.hash
        );
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_is_json_and_hash_covers_it() {
        let e = Event::new(
            kinds::TOKEN_ISSUED,
            100,
            Actor::new(ActorKind::Agent, "agt_1"),
        )
        .agent("agt_1")
        .decision(Decision::Permit)
        .reason("ok \"quoted\"")
        .detail("n", Detail::Int(3))
        .detail("l", Detail::List(vec!["a".into()]));
        let mut r = Row::from_event(e, "s", "node", 1);
        r.seal(GENESIS);
        let v: Value = serde_json::from_str(&r.json_line()).unwrap();
        assert_eq!(v["details"]["n"], 3);
        assert_eq!(v["reasons"][0], "ok \"quoted\"");
        assert_eq!(v["hash"], r.hash.as_str());
        let h = r.hash.clone();
        r.details = "{\"n\":4}".into();
        assert_ne!(r.compute_hash(), h);
    }
}
