//! MCP servers (protected resources) and their tools.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a tool does, which is also the policy action and the class scope `tools:<class>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ToolClass {
    Read,
    Write,
    Execute,
}

impl ToolClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Execute => "execute",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "execute" => Some(Self::Execute),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Sensitivity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Self::Public),
            "internal" => Some(Self::Internal),
            "confidential" => Some(Self::Confidential),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    pub class: ToolClass,
    pub sensitivity: Sensitivity,
}

/// A registered MCP server: its canonical resource URI is the audience of its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    /// Also the client_id it uses to call introspection.
    pub id: String,
    pub resource: String,
    pub name: String,
    pub environment: String,
    /// Tools by name.
    pub tools: BTreeMap<String, Tool>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A server manifest, as imported from TOML/JSON or posted to the admin API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerManifest {
    pub resource: String,
    pub name: String,
    pub environment: String,
    #[serde(default)]
    pub tools: Vec<Tool>,
}

/// Canonical form of a resource indicator (RFC 8707 §2, MCP "canonical server URI"): an absolute
/// http(s) URI without fragment or userinfo; scheme and host lower-cased, default port dropped.
pub fn canonical_resource(raw: &str) -> Result<String, String> {
    if raw.contains('#') {
        return Err("resource must not contain a fragment".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("resource is not an absolute URI: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("resource must be an http or https URI".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("resource must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("resource must not contain user information".into());
    }
    Ok(url.to_string())
}

/// The issuer must be an https URL (http only for loopback) without query or fragment
/// (RFC 8414 §2).
pub fn validate_issuer(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("issuer is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("issuer must not have a query or fragment".into());
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err("issuer must be https (or http for local use)".into());
    }
    Ok(())
}

/// A tool or environment name: 1-64 of `A-Za-z0-9_.-`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl ServerManifest {
    /// Checks the manifest and returns the canonical resource and tools by name.
    pub fn validate(&self) -> Result<(String, BTreeMap<String, Tool>), String> {
        let resource = canonical_resource(&self.resource)?;
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("name must be 1-200 characters".into());
        }
        if !valid_name(&self.environment) {
            return Err("environment must be 1-64 characters of A-Z a-z 0-9 _ . -".into());
        }
        let mut tools = BTreeMap::new();
        for tool in &self.tools {
            if !valid_name(&tool.name) {
                return Err(format!("invalid tool name {:?}", tool.name));
            }
            if ToolClass::parse(&tool.name).is_some() {
                return Err(format!(
                    "tool name {:?} collides with the class scope tools:{}",
                    tool.name, tool.name
                ));
            }
            if tools.insert(tool.name.clone(), tool.clone()).is_some() {
                return Err(format!("tool {:?} is listed twice", tool.name));
            }
        }
        Ok((resource, tools))
    }
}

/// Parses `NAME:CLASS:SENSITIVITY` as given on the command line.
pub fn parse_tool_spec(spec: &str) -> Result<Tool, String> {
    let mut parts = spec.split(':');
    let (Some(name), Some(class), Some(sens), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("tool {spec:?} must be NAME:CLASS:SENSITIVITY"));
    };
    Ok(Tool {
        name: name.to_string(),
        class: ToolClass::parse(class)
            .ok_or_else(|| format!("tool class {class:?} must be read, write or execute"))?,
        sensitivity: Sensitivity::parse(sens).ok_or_else(|| {
            format!("sensitivity {sens:?} must be public, internal, confidential or restricted")
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_resources() {
        assert_eq!(
            canonical_resource("HTTPS://MCP.Example.com:443/mcp").unwrap(),
            "https://mcp.example.com/mcp"
        );
        assert_eq!(
            canonical_resource("https://mcp.example.com").unwrap(),
            "https://mcp.example.com/"
        );
        assert!(canonical_resource("https://mcp.example.com/#x").is_err());
        assert!(canonical_resource("mcp.example.com").is_err());
        assert!(canonical_resource("ftp://mcp.example.com/").is_err());
        assert!(canonical_resource("https://u:p@mcp.example.com/").is_err());
        // The path is case-sensitive.
        assert_ne!(
            canonical_resource("https://a.example/MCP").unwrap(),
            canonical_resource("https://a.example/mcp").unwrap()
        );
    }

    #[test]
    fn tool_specs() {
        let t = parse_tool_spec("search:read:internal").unwrap();
        assert_eq!(t.class, ToolClass::Read);
        assert!(parse_tool_spec("search:read").is_err());
        assert!(parse_tool_spec("search:delete:internal").is_err());
    }
}
