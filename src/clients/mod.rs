//! OAuth clients that act for a person (MCP clients: desktop assistants, IDEs, CLIs), as
//! opposed to agents: registered dynamically (RFC 7591, `/register`) or identified by the URL of
//! their Client ID Metadata Document (CIMD). They may only use the authorization-code flow and
//! refresh tokens; they get no `client_credentials` unless an admin registers them as an agent.
pub mod cimd;
pub mod consents;
pub mod dcr;
pub mod registration;
pub mod store;

use serde::{Deserialize, Serialize};

/// Prefix of dynamically registered client ids (never `https://`, so they cannot clash with
/// CIMD ids: CIMD §"Client Identifier").
pub const CLIENT_ID_PREFIX: &str = "mcl_";
/// Prefix of registration access tokens (RFC 7592).
pub const REGISTRATION_TOKEN_PREFIX: &str = "mnd_rat_";
/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "mnd_rt_";
/// Prefix of authorization codes.
pub const CODE_PREFIX: &str = "mnd_ac_";

/// How a client authenticates at `/token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// A public client: PKCE is its only proof.
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl ClientAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }
}

/// `application_type` (OIDC Registration §2, required of MCP clients by SEP-837).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationType {
    Web,
    Native,
}

/// Where a client's metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSource {
    /// `POST /register`.
    Registered,
    /// Fetched from its `client_id` URL.
    MetadataDocument,
}

/// The metadata Mandate keeps about a client (stored as JSON for registered clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub application_type: ApplicationType,
    pub token_endpoint_auth_method: ClientAuthMethod,
    pub grant_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A client as the authorization and token endpoints see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub source: ClientSource,
    pub meta: ClientMetadata,
    /// SHA-256 of the client secret (confidential registered clients).
    pub secret_hash: Option<[u8; 32]>,
}

impl OAuthClient {
    /// Whether refresh tokens may be issued to it (it asked for the grant).
    pub fn refresh_allowed(&self) -> bool {
        self.meta.grant_types.iter().any(|g| g == "refresh_token")
    }

    /// The host shown on the consent page for a CIMD client (the document's host).
    pub fn document_host(&self) -> Option<String> {
        match self.source {
            ClientSource::MetadataDocument => url::Url::parse(&self.client_id)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string)),
            ClientSource::Registered => None,
        }
    }
}

/// Why a client cannot be used or registered. Codes are RFC 7591 §3.2.2 (registration) or
/// what the authorization endpoint shows on its error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("invalid_redirect_uri: {0}")]
    InvalidRedirectUri(String),
    #[error("invalid_client_metadata: {0}")]
    InvalidMetadata(String),
    /// The client id names no client (unknown, deleted, or a document that could not be used).
    #[error("unknown client: {0}")]
    Unknown(String),
    /// The store or the network failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ClientError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRedirectUri(_) => "invalid_redirect_uri",
            Self::InvalidMetadata(_) => "invalid_client_metadata",
            Self::Unknown(_) => "invalid_client",
            Self::Unavailable(_) => "temporarily_unavailable",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidRedirectUri(m)
            | Self::InvalidMetadata(m)
            | Self::Unknown(m)
            | Self::Unavailable(m) => m,
        }
    }
}

/// Whether `host` is a loopback name or address (RFC 8252 §7.3).
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
    }
}

/// Checks one redirect URI against the rules for its application type: absolute, no fragment;
/// `web`: https only; `native`: https, loopback http (any port, RFC 8252 §7.3) or a private-use
/// scheme (RFC 8252 §7.1) other than a few that can run code or read files.
pub fn check_redirect_uri(raw: &str, app: ApplicationType) -> Result<(), ClientError> {
    let bad = |m: &str| ClientError::InvalidRedirectUri(format!("{raw:?}: {m}"));
    if raw.len() > 2000 {
        return Err(bad("too long"));
    }
    let u = url::Url::parse(raw).map_err(|_| bad("not an absolute URI"))?;
    if u.fragment().is_some() || raw.contains('#') {
        return Err(bad(
            "a redirect URI must not have a fragment (RFC 6749 §3.1.2)",
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("a redirect URI must not carry credentials"));
    }
    match u.scheme() {
        "https" => {
            if u.host().is_none() {
                return Err(bad("https redirect URI without a host"));
            }
            Ok(())
        }
        "http" => match (app, u.host()) {
            (ApplicationType::Native, Some(h)) if is_loopback_host(&h) => Ok(()),
            (ApplicationType::Native, _) => Err(bad(
                "native clients may use http only on a loopback address (RFC 8252 §7.3)",
            )),
            (ApplicationType::Web, _) => Err(bad("web clients must use https redirect URIs")),
        },
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "ftp" | "ws" | "wss" => {
            Err(bad("this scheme cannot be a redirect URI"))
        }
        _ => match app {
            ApplicationType::Native => Ok(()),
            ApplicationType::Web => Err(bad(
                "private-use URI schemes are for native clients (application_type native)",
            )),
        },
    }
}

/// `grant_types` a client acting for a person may have.
pub fn check_grant_types(grants: &[String]) -> Result<(), ClientError> {
    for g in grants {
        match g.as_str() {
            "authorization_code" | "refresh_token" => {}
            "client_credentials" => {
                return Err(ClientError::InvalidMetadata(
                    "client_credentials is for agents, which an administrator registers".into(),
                ));
            }
            other => {
                return Err(ClientError::InvalidMetadata(format!(
                    "grant type {other:?} is not available to registered clients"
                )));
            }
        }
    }
    if !grants.iter().any(|g| g == "authorization_code") {
        return Err(ClientError::InvalidMetadata(
            "grant_types must include authorization_code".into(),
        ));
    }
    Ok(())
}

/// `response_types`: only `code`.
pub fn check_response_types(types: &[String]) -> Result<(), ClientError> {
    if types.iter().all(|t| t == "code") {
        Ok(())
    } else {
        Err(ClientError::InvalidMetadata(
            "the only response type is code".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        use ApplicationType::{Native, Web};
        assert!(check_redirect_uri("https://app.example/cb", Web).is_ok());
        assert!(check_redirect_uri("http://app.example/cb", Web).is_err());
        assert!(check_redirect_uri("http://127.0.0.1:7777/cb", Web).is_err());
        assert!(check_redirect_uri("http://127.0.0.1:7777/cb", Native).is_ok());
        assert!(check_redirect_uri("http://localhost/cb", Native).is_ok());
        assert!(check_redirect_uri("http://[::1]:9/cb", Native).is_ok());
        assert!(check_redirect_uri("http://evil.example/cb", Native).is_err());
        assert!(check_redirect_uri("com.example.app:/cb", Native).is_ok());
        assert!(check_redirect_uri("com.example.app:/cb", Web).is_err());
        assert!(check_redirect_uri("https://app.example/cb#x", Web).is_err());
        assert!(check_redirect_uri("javascript:alert(1)", Native).is_err());
        assert!(check_redirect_uri("/relative", Native).is_err());
        assert!(check_redirect_uri("https://u:p@app.example/cb", Web).is_err());
    }

    #[test]
    fn grant_type_rules() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_grant_types(&v(&["authorization_code", "refresh_token"])).is_ok());
        assert!(check_grant_types(&v(&["client_credentials"])).is_err());
        assert!(check_grant_types(&v(&["refresh_token"])).is_err());
        assert!(check_response_types(&v(&["code"])).is_ok());
        assert!(check_response_types(&v(&["token"])).is_err());
    }
}
