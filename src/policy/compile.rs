//! From policy text to something the engine runs: parse, name each policy by its `@id`,
//! check the annotations we give meaning to, validate against the schema (strict), and note
//! which context features the policies read (they make up the decision cache key).
use super::PolicyError;
use super::cache::Reads;
use cedar_policy::{
    Effect, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint,
    Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::Value;
use std::collections::HashMap;
use std::collections::HashSet;
use std::str::FromStr;

/// One policy as listed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PolicyInfo {
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// `@approval("human")`: counts only with a human's approval.
    pub approval: bool,
    /// The policy's own text.
    pub text: String,
}

/// A policy with what its scope says about principals and resources, for slicing.
#[derive(Clone)]
struct Indexed {
    policy: Policy,
    approval: bool,
    /// The entity the resource must be or be in; `None`: any.
    resource: Option<EntityUid>,
}

/// A validated policy set, ready to evaluate.
#[derive(Clone)]
pub struct Compiled {
    pub full: PolicySet,
    policies: Vec<Indexed>,
    /// Policies whose scope names no principal.
    any_principal: Vec<usize>,
    /// Policies by the principal their scope names (agents have no parents, so `in` is `==`).
    by_principal: HashMap<EntityUid, Vec<usize>>,
    pub forbids: HashSet<String>,
    pub reads: Reads,
    /// Whether any decision can be `step_up` (approval permits, or conditions on approval).
    pub step_up_possible: bool,
    pub info: Vec<PolicyInfo>,
    /// Validator warnings (the set is usable).
    pub warnings: Vec<String>,
    /// Valid only against schema version 1 (no Human principals): a set stored by an earlier
    /// release. It still runs; people acting through MCP clients are then evaluated as
    /// low-trust agents, as before.
    pub legacy: bool,
}

impl Compiled {
    /// The policies that can apply to `principal` and a tool `tool` of server `server` (by
    /// their scopes), as (all of them, without the approval permits). Cedar evaluates every
    /// policy of a set, so a thousand-policy set costs a thousand evaluations; a slice costs
    /// only the few that matter, with the same decision.
    pub fn slice(
        &self,
        principal: &EntityUid,
        tool: &EntityUid,
        server: &EntityUid,
    ) -> Result<(PolicySet, PolicySet), PolicyError> {
        let mut all: Vec<usize> = self
            .any_principal
            .iter()
            .chain(self.by_principal.get(principal).into_iter().flatten())
            .copied()
            .filter(|&i| {
                self.policies[i]
                    .resource
                    .as_ref()
                    .is_none_or(|r| r == tool || r == server)
            })
            .collect();
        all.sort_unstable();
        let err = |e: cedar_policy::PolicySetError| PolicyError::Invalid(e.to_string());
        let full = PolicySet::from_policies(all.iter().map(|&i| self.policies[i].policy.clone()))
            .map_err(err)?;
        let unapproved = PolicySet::from_policies(
            all.iter()
                .filter(|&&i| !self.policies[i].approval)
                .map(|&i| self.policies[i].policy.clone()),
        )
        .map_err(err)?;
        Ok((full, unapproved))
    }
}

/// `line:column` of a byte offset.
fn position(src: &str, offset: usize) -> String {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{col}")
}

/// A Cedar diagnostic as one line, with where it points and its help.
fn describe(src: &str, d: &dyn Diagnostic) -> String {
    let mut out = d.to_string();
    if let Some(label) = d.labels().and_then(|mut l| l.next()) {
        out = format!("{} (at {})", out, position(src, label.offset()));
    }
    if let Some(help) = d.help() {
        out = format!("{out}; help: {help}");
    }
    out
}

/// Parses and validates `src` against `schema`.
pub fn compile(src: &str, schema: &Schema) -> Result<Compiled, PolicyError> {
    if src.len() > 1_000_000 {
        return Err(PolicyError::Invalid(
            "a policy set is limited to 1 MB".into(),
        ));
    }
    let parsed = PolicySet::from_str(src).map_err(|errs| {
        PolicyError::Invalid(
            errs.iter()
                .map(|e| describe(src, e))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    if parsed.templates().next().is_some() {
        return Err(PolicyError::Invalid(
            "templates (policies with ?principal or ?resource) are not supported".into(),
        ));
    }
    // Keep the order of the text.
    let mut policies: Vec<_> = parsed.policies().collect();
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let mut full = PolicySet::new();
    let mut indexed = Vec::new();
    let mut any_principal = Vec::new();
    let mut by_principal: HashMap<EntityUid, Vec<usize>> = HashMap::new();
    let mut info = Vec::new();
    let mut forbids = HashSet::new();
    let mut seen = HashSet::new();
    let mut reads = Reads::default();
    let mut approval_permits = false;
    for p in policies {
        let id = match p.annotation("id") {
            Some(id) if !id.trim().is_empty() => id.to_string(),
            Some(_) => return Err(PolicyError::Invalid("@id must not be empty".into())),
            None => p.id().to_string(),
        };
        if !seen.insert(id.clone()) {
            return Err(PolicyError::Invalid(format!(
                "two policies have the id {id:?}"
            )));
        }
        let approval = match p.annotation("approval") {
            None => false,
            Some("human") if p.effect() == Effect::Permit => true,
            Some("human") => {
                return Err(PolicyError::Invalid(format!(
                    "policy {id}: @approval(\"human\") only applies to permit policies \
                     (write the condition as `unless {{ context.approval.approved }}`)"
                )));
            }
            Some(other) => {
                return Err(PolicyError::Invalid(format!(
                    "policy {id}: @approval({other:?}) is not known; the only value is \"human\""
                )));
            }
        };
        let renamed = p.new_id(PolicyId::new(&id));
        let json = renamed
            .to_json()
            .map_err(|e| PolicyError::Invalid(format!("policy {id}: {e}")))?;
        scan(&json, &mut reads);
        let effect = match p.effect() {
            Effect::Permit => "permit",
            Effect::Forbid => {
                forbids.insert(id.clone());
                "forbid"
            }
        };
        info.push(PolicyInfo {
            id: id.clone(),
            effect,
            approval,
            text: p.to_string(),
        });
        approval_permits |= approval;
        let slot = indexed.len();
        match renamed.principal_constraint() {
            PrincipalConstraint::Eq(u)
            | PrincipalConstraint::In(u)
            | PrincipalConstraint::IsIn(_, u) => by_principal.entry(u).or_default().push(slot),
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => any_principal.push(slot),
        }
        let resource = match renamed.resource_constraint() {
            ResourceConstraint::Eq(u)
            | ResourceConstraint::In(u)
            | ResourceConstraint::IsIn(_, u) => Some(u),
            ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
        };
        indexed.push(Indexed {
            policy: renamed.clone(),
            approval,
            resource,
        });
        full.add(renamed)
            .map_err(|e| PolicyError::Invalid(e.to_string()))?;
    }
    let result = Validator::new(schema.clone()).validate(&full, ValidationMode::Strict);
    let errors: Vec<String> = result
        .validation_errors()
        .map(|e| describe(src, e))
        .collect();
    let mut legacy = false;
    let mut warnings: Vec<String> = result
        .validation_warnings()
        .map(|w| format!("policy {}: {w}", w.policy_id()))
        .collect();
    if !errors.is_empty() {
        // A set written for schema version 1 (say, the defaults an earlier release stored)
        // reads agent attributes of any principal, which a Human principal does not have.
        // It keeps working as it did: legacy mode.
        let v1 = Validator::new(super::schema_v1()?).validate(&full, ValidationMode::Strict);
        // A set with policies for Human principals (dead under version 1) is written for
        // the current schema: its errors stand.
        if v1.validation_passed() && never_apply(&v1).is_subset(&never_apply(&result)) {
            legacy = true;
            warnings = v1
                .validation_warnings()
                .map(|w| format!("policy {}: {w}", w.policy_id()))
                .collect();
            warnings.push(format!(
                "this set is valid only for schema version 1 (Agent principals): people acting \
                 through MCP clients are evaluated as low-trust agents, as before. To give \
                 them Human principals, start from this release's policies/default.cedar or \
                 scope agent conditions with `principal is Agent`; against the current \
                 schema: {}",
                errors.join("; ")
            ));
        } else {
            let mut msg = errors.join("\n");
            if errors.iter().any(|e| e.contains("`Human`")) {
                msg.push_str(
                    "\nhint: the principal may be a Human (a person acting through an MCP \
                     client), which has only `email` and `roles`: scope agent rules with \
                     `principal is Agent` or start their condition with `principal is Agent &&`",
                );
            }
            return Err(PolicyError::Invalid(msg));
        }
    }
    Ok(Compiled {
        full,
        policies: indexed,
        any_principal,
        by_principal,
        forbids,
        step_up_possible: approval_permits || reads.approved || reads.approver,
        reads,
        info,
        warnings,
        legacy,
    })
}

/// The policies a validation found can never apply.
fn never_apply(r: &cedar_policy::ValidationResult) -> HashSet<String> {
    r.validation_warnings()
        .filter(|w| {
            matches!(
                w,
                cedar_policy::ValidationWarning::ImpossiblePolicy(_)
                    | cedar_policy::ValidationWarning::InvalidActionApplication(_)
            )
        })
        .map(|w| w.policy_id().to_string())
        .collect()
}

fn is_var_context(v: &Value) -> bool {
    v.get("Var").and_then(Value::as_str) == Some("context")
}

/// `context.<attr>` as `(attr)` when `v` is such an access.
fn context_attr(v: &Value) -> Option<&str> {
    let inner = v.get(".").or_else(|| v.get("has"))?;
    if is_var_context(inner.get("left")?) {
        inner.get("attr")?.as_str()
    } else {
        None
    }
}

/// Records which context features a policy (as Cedar's JSON form) reads. Anything it cannot
/// place (the whole `context`, or a whole record of it) counts as reading all of that.
fn scan(v: &Value, reads: &mut Reads) {
    match v {
        Value::Object(map) => {
            for op in [".", "has"] {
                if let Some(inner) = map.get(op)
                    && let (Some(left), Some(attr)) =
                        (inner.get("left"), inner.get("attr").and_then(Value::as_str))
                {
                    if is_var_context(left) {
                        reads.top(attr);
                        return;
                    }
                    if let Some(top) = context_attr(left) {
                        reads.sub(top, attr);
                        return;
                    }
                }
            }
            if is_var_context(v) {
                reads.everything();
                return;
            }
            for child in map.values() {
                scan(child, reads);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| scan(i, reads)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_of(src: &str) -> Reads {
        compile(src, &super::super::schema().unwrap())
            .unwrap()
            .reads
    }

    #[test]
    fn reads_only_what_policies_name() {
        let r = reads_of("permit(principal, action, resource) when { context.risk_score < 50 };");
        assert!(r.risk && !r.hour && !r.timestamp && !r.approved);
        let r = reads_of(
            "permit(principal, action, resource) when { context.time.hour >= 9 && context.approval.approved };",
        );
        assert!(r.hour && !r.weekday && !r.timestamp && r.approved && !r.approver);
        let r =
            reads_of("permit(principal, action, resource) when { context.time == context.time };");
        assert!(r.hour && r.weekday && r.timestamp);
    }

    #[test]
    fn bad_policies_are_refused_with_cedars_message() {
        let schema = super::super::schema().unwrap();
        let err = |src: &str| match compile(src, &schema) {
            Err(PolicyError::Invalid(m)) => m,
            other => panic!("{src}: {:?}", other.map(|c| c.info)),
        };
        assert!(err("permit(principal, action, resource").contains("1:"));
        assert!(
            err("permit(principal, action, resource) when { principal.nope == 1 };")
                .contains("nope")
        );
        assert!(err("permit(principal == User::\"x\", action, resource);").contains("User"));
        assert!(err("@approval(\"robot\") permit(principal, action, resource);").contains("robot"));
        assert!(
            err("@id(\"a\") permit(principal, action, resource); @id(\"a\") forbid(principal, action, resource);")
                .contains("\"a\"")
        );
    }
}
