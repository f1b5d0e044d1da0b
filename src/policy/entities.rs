//! The registry as Cedar entities: agents, MCP servers, and tools inside their servers; and
//! the people of a request (built per request, from what it holds).
use crate::agents::{Agent, TrustLevel};
use crate::registry::Registry;
use crate::resources::{McpServer, Sensitivity, Tool};
use cedar_policy::{
    Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema,
};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    Ok(EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(ty).map_err(|e| e.to_string())?,
        EntityId::new(id),
    ))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_string())
}

pub fn trust_rank(t: TrustLevel) -> i64 {
    match t {
        TrustLevel::Low => 1,
        TrustLevel::Medium => 2,
        TrustLevel::High => 3,
    }
}

pub fn sensitivity_str(s: Sensitivity) -> &'static str {
    match s {
        Sensitivity::Public => "public",
        Sensitivity::Internal => "internal",
        Sensitivity::Confidential => "confidential",
        Sensitivity::Restricted => "restricted",
    }
}

pub fn sensitivity_rank(s: Sensitivity) -> i64 {
    match s {
        Sensitivity::Public => 1,
        Sensitivity::Internal => 2,
        Sensitivity::Confidential => 3,
        Sensitivity::Restricted => 4,
    }
}

pub fn agent_entity(a: &Agent) -> Result<Entity, String> {
    let attrs = HashMap::from([
        ("name".to_string(), s(&a.name)),
        ("trust_level".to_string(), s(a.trust_level.as_str())),
        (
            "trust_rank".to_string(),
            RestrictedExpression::new_long(trust_rank(a.trust_level)),
        ),
        ("environment".to_string(), s(&a.environment)),
        ("owner".to_string(), s(&a.owner)),
        ("purpose".to_string(), s(&a.purpose)),
        (
            "groups".to_string(),
            RestrictedExpression::new_set(a.groups.iter().map(|g| s(g))),
        ),
    ]);
    Entity::new(uid("Agent", &a.id)?, attrs, HashSet::new()).map_err(|e| e.to_string())
}

/// A person: `Human::"<email>"` with `email` and `roles` (schema version 2).
pub fn human_entity(h: &super::HumanFacts) -> Result<Entity, String> {
    let attrs = HashMap::from([
        ("email".to_string(), s(&h.email)),
        (
            "roles".to_string(),
            RestrictedExpression::new_set(h.roles.iter().map(|r| s(r))),
        ),
    ]);
    Entity::new(uid("Human", &h.email)?, attrs, HashSet::new()).map_err(|e| e.to_string())
}

pub fn server_entity(m: &McpServer) -> Result<Entity, String> {
    let attrs = HashMap::from([
        ("uri".to_string(), s(&m.resource)),
        ("name".to_string(), s(&m.name)),
        ("environment".to_string(), s(&m.environment)),
    ]);
    Entity::new(uid("McpServer", &m.resource)?, attrs, HashSet::new()).map_err(|e| e.to_string())
}

pub fn tool_entity(m: &McpServer, t: &Tool) -> Result<Entity, String> {
    let attrs = HashMap::from([
        ("name".to_string(), s(&t.name)),
        ("server".to_string(), s(&m.resource)),
        ("environment".to_string(), s(&m.environment)),
        ("class".to_string(), s(t.class.as_str())),
        ("sensitivity".to_string(), s(sensitivity_str(t.sensitivity))),
        (
            "sensitivity_rank".to_string(),
            RestrictedExpression::new_long(sensitivity_rank(t.sensitivity)),
        ),
    ]);
    Entity::new(
        uid("Tool", &super::tool_uid(m, t))?,
        attrs,
        HashSet::from([uid("McpServer", &m.resource)?]),
    )
    .map_err(|e| e.to_string())
}

/// Every agent, server and tool of `registry`, plus the action hierarchy, checked against
/// the schema.
pub fn build(registry: &Registry, schema: &Schema) -> Result<Entities, String> {
    let mut all = Vec::new();
    for a in registry.agents() {
        all.push(agent_entity(a)?);
    }
    for m in registry.servers() {
        all.push(server_entity(m)?);
        for t in m.tools.values() {
            all.push(tool_entity(m, t)?);
        }
    }
    from_list(all, schema)
}

/// Entities from a list; the schema adds its actions.
pub fn from_list(list: Vec<Entity>, schema: &Schema) -> Result<Entities, String> {
    Entities::from_entities(list, Some(schema)).map_err(|e| format!("entities: {e}"))
}
