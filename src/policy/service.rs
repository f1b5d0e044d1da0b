//! Policy changes, shared by the CLI and the admin API: validate against the schema, refuse a
//! set that would lock everyone out unless forced, store as a new version (which every node
//! picks up through the registry version), roll back, and compare.
use super::store::{self, NewVersion, PolicyVersion};
use super::{ClientFacts, Engine, Facts, HumanFacts, Outcome, PolicyError, compile, schema};
use crate::registry::Registry;
use crate::store::Store;

/// The result of a change.
#[derive(Debug, serde::Serialize)]
pub struct Applied {
    pub version: i64,
    pub digest: String,
    pub policies: usize,
    /// Validator warnings (the set was saved).
    pub warnings: Vec<String>,
    /// Set when `force` overrode a lockout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced_past: Option<String>,
}

/// Largest number of (agent, tool) pairs tried when looking for a lockout.
const LOCKOUT_SAMPLE: usize = 20_000;

/// Checks `source` compiles and does not deny everything: some registered agent, or some
/// registered person acting through an MCP client (`people`), must be permitted (or asked
/// for approval) on some registered tool. Returns the validator warnings and, for a lockout,
/// why.
pub fn check(
    source: &str,
    registry: &Registry,
    people: &[HumanFacts],
) -> Result<(Vec<String>, Option<String>), PolicyError> {
    let schema = schema()?;
    let compiled = compile(source, &schema)?;
    let warnings = compiled.warnings.clone();
    if !compiled.info.iter().any(|p| p.effect == "permit") {
        return Ok((
            warnings,
            Some("the policy set has no permit policy: it would deny every request".into()),
        ));
    }
    // Try what registered agents may reach and what people may reach through a client, as if
    // a human approved and risk were nil: when nothing at all is permitted, the set locks
    // everyone out.
    let engine = Engine::build(0, Some(source), registry);
    let mut tried = 0usize;
    for agent in registry.agents() {
        for uri in &agent.allowed_resources {
            let Some(server) = registry.server_by_resource(uri) else {
                continue;
            };
            for tool in server.tools.values() {
                tried += 1;
                let facts = Facts {
                    approved: true,
                    ..Facts::for_agent(agent, 0, 0, None)
                };
                let d = engine.evaluate(
                    &agent.id,
                    &super::tool_uid(server, tool),
                    tool.class,
                    &facts,
                );
                if d.decision != Outcome::Deny || tried >= LOCKOUT_SAMPLE {
                    return Ok((warnings, None));
                }
            }
        }
    }
    for person in people {
        for server in registry.servers() {
            let facts = Facts {
                approved: true,
                environment: server.environment.clone(),
                delegation: Some(person.clone()),
                client: Some(ClientFacts {
                    id: "lockout-check".into(),
                    name: None,
                }),
                ..Facts::default()
            };
            for tool in server.tools.values() {
                tried += 1;
                let d = engine.evaluate_human(person, server, tool, &facts);
                if d.decision != Outcome::Deny || tried >= LOCKOUT_SAMPLE {
                    return Ok((warnings, None));
                }
            }
        }
    }
    if tried == 0 {
        return Ok((warnings, None));
    }
    Ok((
        warnings,
        Some(format!(
            "the policy set denies every one of the {tried} (principal, tool) pair(s) registered agents and people may reach"
        )),
    ))
}

/// The policy write service.
pub struct PolicyAdmin<'a> {
    pub store: &'a Store,
    pub now: i64,
    /// Who is changing policy, for the audit log.
    pub trail: crate::audit::Trail,
}

impl PolicyAdmin<'_> {
    /// Validates and stores `source` as the new version in force.
    pub async fn apply(
        &self,
        source: &str,
        author: &str,
        message: &str,
        force: bool,
        registry: &Registry,
    ) -> Result<Applied, PolicyError> {
        self.save(source, author, message, None, force, registry)
            .await
    }

    /// Puts an earlier version back in force, as a new version.
    pub async fn rollback(
        &self,
        to: i64,
        author: &str,
        force: bool,
        registry: &Registry,
    ) -> Result<Applied, PolicyError> {
        let old = store::get(self.store, to)
            .await?
            .ok_or_else(|| PolicyError::NotFound(format!("policy version {to}")))?;
        let message = format!("rollback to version {to}");
        self.save(&old.source, author, &message, Some(to), force, registry)
            .await
    }

    async fn save(
        &self,
        source: &str,
        author: &str,
        message: &str,
        rollback_of: Option<i64>,
        force: bool,
        registry: &Registry,
    ) -> Result<Applied, PolicyError> {
        // People with their roles, for the lockout check (when they cannot be read, the
        // check tries agents only, which can only report a lockout more often).
        let people: Vec<HumanFacts> = match crate::humans::list(self.store).await {
            Ok(list) => list
                .into_iter()
                .filter(|h| h.disabled_at.is_none())
                .map(|h| h.human.policy_facts())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "policy lockout check: people not read");
                Vec::new()
            }
        };
        let (warnings, lockout) = check(source, registry, &people)?;
        if let Some(why) = &lockout
            && !force
        {
            return Err(PolicyError::Lockout(format!(
                "{why}; apply with force to save it anyway"
            )));
        }
        let saved: PolicyVersion = store::insert(
            self.store,
            NewVersion {
                source,
                author,
                message,
                rollback_of,
                forced_past: lockout.as_deref(),
                now: self.now,
            },
            &self.trail,
        )
        .await?;
        let policies = compile(source, &schema()?)?.info.len();
        Ok(Applied {
            version: saved.version,
            digest: saved.digest,
            policies,
            warnings,
            forced_past: lockout,
        })
    }
}

/// A line diff of two policy texts (`-` removed, `+` added, two lines of context).
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() * b.len() > 25_000_000 {
        return "(texts too large to compare line by line)\n".into();
    }
    // Longest common subsequence table, from the end.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::new();
    let mut last_printed: Option<usize> = None;
    for (k, op) in ops.iter().enumerate() {
        let near = changed.iter().any(|&c| c.abs_diff(k) <= 2);
        if !near {
            continue;
        }
        if last_printed.is_some_and(|l| l + 1 != k) {
            out.push_str("...\n");
        }
        out.push(op.0);
        out.push(' ');
        out.push_str(op.1);
        out.push('\n');
        last_printed = Some(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_changes_with_context() {
        let d = diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nX\ne\nf\ng\n");
        assert_eq!(d, "  b\n  c\n- d\n+ X\n  e\n  f\n");
        assert_eq!(diff("same\n", "same\n"), "");
    }

    #[test]
    fn a_set_without_permits_is_a_lockout() {
        let (_, lockout) = check(
            "forbid(principal, action, resource);",
            &Registry::default(),
            &[],
        )
        .unwrap();
        assert!(lockout.is_some());
        let (_, lockout) =
            check(super::super::DEFAULT_POLICIES, &Registry::default(), &[]).unwrap();
        assert!(lockout.is_none());
    }
}
