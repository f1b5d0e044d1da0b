//! Dynamic Client Registration (RFC 7591) with the read and delete parts of RFC 7592, for MCP
//! clients. Who may register is a deployment policy ([`RegistrationPolicy`]).
use super::{
    ApplicationType, ClientAuthMethod, ClientError, ClientMetadata, check_grant_types,
    check_redirect_uri, check_response_types,
};
use serde_json::{Value, json};

/// Who may call `POST /register` (config `registration_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationPolicy {
    /// Anyone (RFC 7591 open registration).
    Open,
    /// Only with an initial access token (RFC 7591 §3: an admin API token).
    InitialAccessToken,
    /// No dynamic registration: clients use CIMD or are registered by an admin.
    Off,
}

impl RegistrationPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "initial_access_token" => Some(Self::InitialAccessToken),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

fn strings(v: &Value, key: &str) -> Result<Option<Vec<String>>, ClientError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ClientError::InvalidMetadata(format!("{key} must be an array of strings"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ClientError::InvalidMetadata(format!(
            "{key} must be an array of strings"
        ))),
    }
}

fn string(v: &Value, key: &str) -> Result<Option<String>, ClientError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ClientError::InvalidMetadata(format!(
            "{key} must be a string"
        ))),
    }
}

/// Reads the metadata shared by registration requests and metadata documents. `default_auth`
/// is RFC 7591's `client_secret_basic` for registration and `none` for documents.
pub fn parse_metadata(
    v: &Value,
    default_auth: ClientAuthMethod,
) -> Result<ClientMetadata, ClientError> {
    if !v.is_object() {
        return Err(ClientError::InvalidMetadata(
            "client metadata must be a JSON object".into(),
        ));
    }
    let redirect_uris = strings(v, "redirect_uris")?.unwrap_or_default();
    let application_type = match string(v, "application_type")?.as_deref() {
        // Older MCP clients omit it: a client whose redirect URIs are not all https is native.
        None if redirect_uris.iter().any(|r| !r.starts_with("https://")) => ApplicationType::Native,
        None | Some("web") => ApplicationType::Web,
        Some("native") => ApplicationType::Native,
        Some(other) => {
            return Err(ClientError::InvalidMetadata(format!(
                "application_type {other:?} is neither web nor native"
            )));
        }
    };
    if redirect_uris.is_empty() {
        return Err(ClientError::InvalidRedirectUri(
            "redirect_uris is required".into(),
        ));
    }
    if redirect_uris.len() > 20 {
        return Err(ClientError::InvalidRedirectUri(
            "at most 20 redirect URIs".into(),
        ));
    }
    for r in &redirect_uris {
        check_redirect_uri(r, application_type)?;
    }
    let token_endpoint_auth_method = match string(v, "token_endpoint_auth_method")? {
        None => default_auth,
        Some(m) => ClientAuthMethod::parse(&m).ok_or_else(|| {
            ClientError::InvalidMetadata(format!(
                "token_endpoint_auth_method {m:?} is not supported (none, client_secret_basic, \
                 client_secret_post)"
            ))
        })?,
    };
    let grant_types =
        strings(v, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".into()]);
    check_grant_types(&grant_types)?;
    if let Some(rt) = strings(v, "response_types")? {
        check_response_types(&rt)?;
    }
    let client_name = string(v, "client_name")?.unwrap_or_default();
    if client_name.chars().count() > 120 || client_name.chars().any(char::is_control) {
        return Err(ClientError::InvalidMetadata(
            "client_name must be at most 120 printable characters".into(),
        ));
    }
    let client_uri = string(v, "client_uri")?;
    if let Some(u) = &client_uri
        && !url::Url::parse(u).is_ok_and(|u| u.scheme() == "https" || u.scheme() == "http")
    {
        return Err(ClientError::InvalidMetadata(
            "client_uri must be an http(s) URL".into(),
        ));
    }
    let scope = string(v, "scope")?;
    Ok(ClientMetadata {
        client_name,
        redirect_uris,
        application_type,
        token_endpoint_auth_method,
        grant_types,
        client_uri,
        scope,
    })
}

/// Checks an RFC 7591 registration request.
pub fn parse_registration(v: &Value) -> Result<ClientMetadata, ClientError> {
    for forbidden in ["client_id", "client_secret", "software_statement"] {
        if v.get(forbidden).is_some() {
            return Err(ClientError::InvalidMetadata(format!(
                "{forbidden} cannot be chosen by the client"
            )));
        }
    }
    if v.get("jwks").is_some() || v.get("jwks_uri").is_some() {
        return Err(ClientError::InvalidMetadata(
            "private_key_jwt is not offered to dynamically registered clients".into(),
        ));
    }
    parse_metadata(v, ClientAuthMethod::ClientSecretBasic)
}

/// The RFC 7591 §3.2.1 response (also the RFC 7592 read response, without the secrets).
pub fn response(
    client_id: &str,
    meta: &ClientMetadata,
    issued_at: i64,
    secret: Option<&str>,
    registration_token: Option<&str>,
    registration_uri: &str,
) -> Value {
    let mut v = json!({
        "client_id": client_id,
        "client_id_issued_at": issued_at,
        "client_name": meta.client_name,
        "redirect_uris": meta.redirect_uris,
        "application_type": match meta.application_type {
            ApplicationType::Web => "web",
            ApplicationType::Native => "native",
        },
        "token_endpoint_auth_method": meta.token_endpoint_auth_method.as_str(),
        "grant_types": meta.grant_types,
        "response_types": ["code"],
        "registration_client_uri": registration_uri,
    });
    if let Some(s) = secret {
        v["client_secret"] = s.into();
        v["client_secret_expires_at"] = 0.into();
    }
    if let Some(t) = registration_token {
        v["registration_access_token"] = t.into();
    }
    if let Some(u) = &meta.client_uri {
        v["client_uri"] = u.as_str().into();
    }
    if let Some(s) = &meta.scope {
        v["scope"] = s.as_str().into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_defaults_and_rules() {
        let m = parse_registration(&json!({
            "redirect_uris": ["http://127.0.0.1:3000/cb"],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "CLI"
        }))
        .unwrap();
        assert_eq!(m.token_endpoint_auth_method, ClientAuthMethod::None);
        let m = parse_registration(&json!({"redirect_uris": ["https://a.example/cb"]})).unwrap();
        assert_eq!(
            m.token_endpoint_auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        assert_eq!(m.application_type, ApplicationType::Web);
        assert!(parse_registration(&json!({"redirect_uris": []})).is_err());
        assert!(
            parse_registration(&json!({
                "redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"
            }))
            .is_err(),
            "web clients need https"
        );
        let m = parse_registration(&json!({"redirect_uris": ["http://127.0.0.1/cb"]})).unwrap();
        assert_eq!(m.application_type, ApplicationType::Native);
        assert!(
            parse_registration(&json!({
                "redirect_uris": ["https://a.example/cb"],
                "grant_types": ["client_credentials"]
            }))
            .is_err()
        );
        assert!(
            parse_registration(&json!({
                "redirect_uris": ["https://a.example/cb"],
                "token_endpoint_auth_method": "private_key_jwt"
            }))
            .is_err()
        );
        assert!(parse_registration(&json!([1])).is_err());
    }
}
