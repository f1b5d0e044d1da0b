//! Tool scopes of one MCP server: `tools:<tool>` and `tools:<class>` (a class scope covers
//! every tool of that class on the server). There is no all-access scope.
use super::OAuthError;
use crate::resources::{McpServer, Tool, ToolClass};
use std::collections::{BTreeMap, BTreeSet};

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
fn well_formed(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// The scopes a token gets: each requested scope cut down to what `permitted` allows on
/// `server` (no request: everything permitted). A class scope only partly permitted is
/// narrowed to the permitted tools. Nothing left is `invalid_scope`.
pub fn grant(
    requested: Option<&str>,
    permitted: &[String],
    server: &McpServer,
) -> Result<Vec<String>, OAuthError> {
    let out = narrow(requested, permitted, server, |_| true)?;
    if out.is_empty() {
        return Err(OAuthError::InvalidScope(
            "none of the requested scopes is permitted for this agent on this resource".into(),
        ));
    }
    Ok(out)
}

/// As [`grant`], with `allow` asked once for each requested tool within the ceiling (the
/// policy engine); may return nothing.
pub fn narrow(
    requested: Option<&str>,
    permitted: &[String],
    server: &McpServer,
    mut allow: impl FnMut(&Tool) -> bool,
) -> Result<Vec<String>, OAuthError> {
    if let Some(r) = requested
        && (r.len() > 4096 || !r.split(' ').filter(|t| !t.is_empty()).all(well_formed))
    {
        return Err(OAuthError::InvalidScope("scope is malformed".into()));
    }
    // The tools the ceiling reaches on this server.
    let mut ceiling: BTreeSet<&str> = BTreeSet::new();
    for s in permitted {
        let Some(name) = s.strip_prefix("tools:") else {
            continue;
        };
        match ToolClass::parse(name) {
            Some(class) => ceiling.extend(
                server
                    .tools
                    .values()
                    .filter(|t| t.class == class)
                    .map(|t| t.name.as_str()),
            ),
            None if server.tools.contains_key(name) => {
                ceiling.insert(name);
            }
            None => {}
        }
    }
    // Within the ceiling, each tool asked about once.
    let mut asked: BTreeMap<String, bool> = BTreeMap::new();
    let mut allowed = |t: &str| -> bool {
        if !ceiling.contains(t) {
            return false;
        }
        if let Some(v) = asked.get(t) {
            return *v;
        }
        let v = server.tools.get(t).is_some_and(&mut allow);
        asked.insert(t.to_string(), v);
        v
    };
    let wanted: Vec<&str> = match requested {
        Some(r) => r.split(' ').filter(|t| !t.is_empty()).collect(),
        None => permitted.iter().map(String::as_str).collect(),
    };
    let mut classes: BTreeSet<ToolClass> = BTreeSet::new();
    let mut tools: BTreeSet<&str> = BTreeSet::new();
    for w in wanted {
        let Some(name) = w.strip_prefix("tools:") else {
            continue;
        };
        match ToolClass::parse(name) {
            Some(class) => {
                let of_class: Vec<&str> = server
                    .tools
                    .values()
                    .filter(|t| t.class == class)
                    .map(|t| t.name.as_str())
                    .collect();
                if of_class.is_empty() {
                    continue;
                }
                let ok: Vec<&str> = of_class.iter().copied().filter(|t| allowed(t)).collect();
                if ok.len() == of_class.len() {
                    classes.insert(class);
                } else {
                    tools.extend(ok);
                }
            }
            None if allowed(name) => {
                tools.insert(name);
            }
            None => {}
        }
    }
    // A tool already covered by a granted class scope is not repeated.
    tools.retain(|t| {
        server
            .tools
            .get(*t)
            .is_some_and(|tool| !classes.contains(&tool.class))
    });
    Ok(classes
        .iter()
        .map(|c| format!("tools:{}", c.as_str()))
        .chain(tools.iter().map(|t| format!("tools:{t}")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Sensitivity;

    fn server() -> McpServer {
        let t = |n: &str, c| Tool {
            name: n.into(),
            class: c,
            sensitivity: Sensitivity::Internal,
        };
        McpServer {
            id: "srv".into(),
            resource: "https://m.example/".into(),
            name: "m".into(),
            environment: "prod".into(),
            tools: [
                t("search", ToolClass::Read),
                t("fetch", ToolClass::Read),
                t("write_doc", ToolClass::Write),
                t("run", ToolClass::Execute),
            ]
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn ceiling_cuts_requests() {
        let s = server();
        let ceiling = v("tools:read tools:write_doc");
        assert_eq!(
            grant(None, &ceiling, &s).unwrap(),
            v("tools:read tools:write_doc")
        );
        assert_eq!(
            grant(Some("tools:search tools:run"), &ceiling, &s).unwrap(),
            v("tools:search")
        );
        // Class scope wholly permitted stays a class scope; partly permitted is narrowed.
        assert_eq!(
            grant(Some("tools:write"), &ceiling, &s).unwrap(),
            v("tools:write")
        );
        let narrow = v("tools:search");
        assert_eq!(
            grant(Some("tools:read"), &narrow, &s).unwrap(),
            v("tools:search")
        );
        assert!(matches!(
            grant(Some("tools:run"), &ceiling, &s),
            Err(OAuthError::InvalidScope(_))
        ));
        assert!(matches!(
            grant(Some("tools:read \"x"), &ceiling, &s),
            Err(OAuthError::InvalidScope(_))
        ));
        // No wildcard, no unknown tools.
        assert!(grant(Some("tools:* tools:nope"), &ceiling, &s).is_err());
    }
}
