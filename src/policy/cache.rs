//! The decision cache. A decision depends only on the policy set, the registry (both fixed for
//! an engine), the principal, the tool, and the context features the policies read; so an
//! engine memoises decisions under (principal, server, tool, those features). An agent is
//! known by its id (its attributes come from the registry); a person by everything the request
//! says about them: email, roles and the MCP client, so no decision passes from one person (or
//! one set of roles, or one client) to another. A new policy set or registry means a new
//! engine, hence an empty cache: nothing stale can be served.
use super::{ClientFacts, Decision, Facts, HumanFacts};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// Which context features the policy set reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub timestamp: bool,
    pub hour: bool,
    pub weekday: bool,
    pub risk: bool,
    pub approved: bool,
    pub approver: bool,
    pub delegation: bool,
    pub client: bool,
    pub source_ip: bool,
    pub environment: bool,
}

/// Whom a cached decision is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKey {
    Agent(Box<str>),
    /// A person acting through an MCP client (roles sorted).
    Human {
        email: Box<str>,
        roles: Vec<String>,
        client: Option<ClientFacts>,
    },
}

impl Reads {
    /// `context.<attr>` read as a whole.
    pub fn top(&mut self, attr: &str) {
        match attr {
            "time" => {
                self.timestamp = true;
                self.hour = true;
                self.weekday = true;
            }
            "risk_score" => self.risk = true,
            "approval" => {
                self.approved = true;
                self.approver = true;
            }
            "delegation" => self.delegation = true,
            "client" => self.client = true,
            "source_ip" => self.source_ip = true,
            "environment" => self.environment = true,
            // Not in the schema (validation refuses it); be conservative anyway.
            _ => self.everything(),
        }
    }

    /// `context.<top>.<attr>`.
    pub fn sub(&mut self, top: &str, attr: &str) {
        match (top, attr) {
            ("time", "timestamp") => self.timestamp = true,
            ("time", "hour") => self.hour = true,
            ("time", "weekday") => self.weekday = true,
            ("approval", "approved") => self.approved = true,
            ("approval", "approver") => self.approver = true,
            (top, _) => self.top(top),
        }
    }

    pub fn everything(&mut self) {
        *self = Self {
            timestamp: true,
            hour: true,
            weekday: true,
            risk: true,
            approved: true,
            approver: true,
            delegation: true,
            client: true,
            source_ip: true,
            environment: true,
        };
    }
}

/// The part of a cache key that comes from the request: the features read, the rest zeroed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features {
    timestamp: i64,
    hour: i64,
    weekday: i64,
    risk: i64,
    approved: bool,
    approver: Option<HumanFacts>,
    delegation: Option<HumanFacts>,
    client: Option<ClientFacts>,
    source_ip: Option<IpAddr>,
    environment: Option<String>,
}

impl Features {
    pub fn of(f: &Facts, r: &Reads) -> Self {
        let (hour, weekday) = f.local();
        Self {
            timestamp: if r.timestamp { f.now } else { 0 },
            hour: if r.hour { hour } else { 0 },
            weekday: if r.weekday { weekday } else { 0 },
            risk: if r.risk {
                f.risk_score.clamp(0, 100)
            } else {
                0
            },
            // Approval changes the outcome between step_up and permit even when no
            // condition names it (an @approval permit), so it is always part of the key.
            approved: f.approved,
            approver: r.approver.then(|| f.approver.clone()).flatten(),
            delegation: r.delegation.then(|| f.delegation.clone()).flatten(),
            client: r.client.then(|| f.client.clone()).flatten(),
            source_ip: if r.source_ip { f.source_ip } else { None },
            environment: r.environment.then(|| f.environment.clone()),
        }
    }
}

struct Entry {
    principal: PrincipalKey,
    server: Box<str>,
    tool: Box<str>,
    features: Features,
    decision: Arc<Decision>,
}

const SHARDS: usize = 16;
/// Entries per shard before it is emptied (bounded memory: at most 16 x 4096 decisions).
const SHARD_CAP: usize = 4096;

type Shard = RwLock<(usize, HashMap<u64, Vec<Entry>>)>;

/// A small concurrent map, sharded, each shard under a read-mostly lock.
pub struct DecisionCache {
    shards: Vec<Shard>,
}

impl Default for DecisionCache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

fn hash(principal: &PrincipalKey, server: &str, tool: &str, features: &Features) -> u64 {
    let mut h = DefaultHasher::new();
    (principal, server, tool, features).hash(&mut h);
    h.finish()
}

impl DecisionCache {
    fn shard(&self, h: u64) -> Option<&Shard> {
        self.shards.get((h as usize) % SHARDS)
    }

    pub fn get(
        &self,
        principal: &PrincipalKey,
        server: &str,
        tool: &str,
        features: &Features,
    ) -> Option<Arc<Decision>> {
        let h = hash(principal, server, tool, features);
        let shard = self.shard(h)?.read().ok()?;
        shard.1.get(&h)?.iter().find_map(|e| {
            (e.principal == *principal
                && &*e.server == server
                && &*e.tool == tool
                && e.features == *features)
                .then(|| e.decision.clone())
        })
    }

    pub fn insert(
        &self,
        principal: PrincipalKey,
        server: &str,
        tool: &str,
        features: Features,
        decision: Arc<Decision>,
    ) {
        let h = hash(&principal, server, tool, &features);
        let Some(Ok(mut shard)) = self.shard(h).map(RwLock::write) else {
            return;
        };
        if shard.0 >= SHARD_CAP {
            shard.1.clear();
            shard.0 = 0;
        }
        let bucket = shard.1.entry(h).or_default();
        if bucket.iter().any(|e| {
            e.principal == principal
                && &*e.server == server
                && &*e.tool == tool
                && e.features == features
        }) {
            return;
        }
        bucket.push(Entry {
            principal,
            server: server.into(),
            tool: tool.into(),
            features,
            decision,
        });
        shard.0 += 1;
    }
}
