//! The authorization endpoint's decisions (OAuth 2.1 §4.1): which client and redirect URI,
//! PKCE (S256 only), the MCP server (RFC 8707 `resource`), the tool scopes policy allows for the
//! person, consent, and the code. Plain Rust: the HTTP layer renders pages and redirects.
//!
//! Errors come in two kinds (RFC 6749 §4.1.2.1): while the client or its redirect URI is not
//! established, the person sees an error page and nothing is redirected; after that, errors go
//! back to the client's redirect URI with `state` and `iss` (RFC 9207).
use crate::app::App;
use crate::clients::cimd::{self, FetchPolicy};
use crate::clients::store::{ClientStore, authorization_code};
use crate::clients::{ClientError, ClientSource, OAuthClient};
use crate::oauth::{OAuthError, Params, scopes};
use crate::policy::{Facts, Outcome};
use crate::resources::{McpServer, canonical_resource};
use std::net::IpAddr;
use std::sync::Arc;

/// A signed-in person, as the flow needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: String,
    pub email: String,
    /// `admin`, `approver`, `viewer`.
    pub roles: Vec<String>,
}

impl From<&crate::humans::Human> for Person {
    fn from(h: &crate::humans::Human) -> Self {
        Self {
            id: h.id.clone(),
            email: h.email.clone(),
            roles: h.roles.iter().map(|r| r.as_str().to_string()).collect(),
        }
    }
}

/// `prompt` (OIDC Core §3.1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Default,
    /// Show the consent page even when consent is on file.
    Consent,
    /// Never show a page: `login_required` / `consent_required` instead.
    None,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client: OAuthClient,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub server: Arc<McpServer>,
    /// The `scope` asked for (well formed), if any.
    pub scope: Option<String>,
    pub prompt: Prompt,
}

/// An error sent back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub error: &'static str,
    pub description: String,
    pub state: Option<String>,
}

/// Why an authorization request cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown to the person; never redirected (no trustworthy redirect URI).
    Page {
        status: u16,
        title: String,
        detail: String,
    },
    /// Sent to the client's redirect URI.
    Redirect(ErrorRedirect),
}

/// What policy says about one tool asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolDecision {
    pub name: String,
    pub class: &'static str,
    pub sensitivity: &'static str,
    /// `permit`, `deny` or `step_up`.
    pub outcome: &'static str,
}

/// The tools asked for and the scopes that would be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDecision {
    pub tools: Vec<ToolDecision>,
    pub granted: Vec<String>,
    /// The policies behind the decisions (sorted, once each), for the audit record.
    pub reasons: Vec<String>,
}

fn page(status: u16, title: &str, detail: impl Into<String>) -> AuthorizeError {
    AuthorizeError::Page {
        status,
        title: title.to_string(),
        detail: detail.into(),
    }
}

/// RFC 7636 §4.1: 43-128 characters of `[A-Za-z0-9-._~]` (challenge and verifier alike).
pub fn pkce_value_ok(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) == challenge, compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref());
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// What policy knows of `person` acting through `client`: the principal `Human::"<email>"`
/// with their roles, and the client for `context.client`.
pub fn person_facts(
    client: &OAuthClient,
    person: &Person,
) -> (crate::policy::HumanFacts, crate::policy::ClientFacts) {
    (
        crate::policy::HumanFacts::new(person.email.clone(), person.roles.clone()),
        crate::policy::ClientFacts {
            id: client.client_id.clone(),
            name: Some(client.meta.client_name.clone()),
        },
    )
}

fn all_classes() -> Vec<String> {
    ["tools:read", "tools:write", "tools:execute"]
        .map(String::from)
        .to_vec()
}

/// Splits a scope string into its tokens.
pub fn scope_set(s: &str) -> std::collections::BTreeSet<&str> {
    s.split(' ').filter(|t| !t.is_empty()).collect()
}

impl App {
    /// How metadata documents are fetched here.
    pub fn cimd_policy(&self) -> FetchPolicy {
        FetchPolicy {
            allow_loopback: self.config.dev_allow_loopback_clients
                && self.config.listen.ip().is_loopback(),
            timeout: std::time::Duration::from_millis(self.config.cimd_fetch_timeout_ms.max(100)),
        }
    }

    /// The client named by `client_id`: a registered one, or the one its metadata document
    /// describes.
    pub async fn oauth_client(&self, client_id: &str) -> Result<OAuthClient, ClientError> {
        if cimd::looks_like_url(client_id) {
            return self
                .client_documents
                .resolve(client_id, &self.cimd_policy(), self.clock.now())
                .await;
        }
        if !client_id.starts_with(crate::clients::CLIENT_ID_PREFIX) || client_id.len() > 64 {
            return Err(ClientError::Unknown("unknown client_id".into()));
        }
        ClientStore(&self.store)
            .client(client_id)
            .await
            .map_err(|e| ClientError::Unavailable(e.to_string()))?
            .ok_or_else(|| ClientError::Unknown("unknown client_id".into()))
    }

    /// Checks an authorization request (query or form parameters).
    pub async fn authorization_request(&self, p: &Params) -> Result<AuthRequest, AuthorizeError> {
        // 1. Client and redirect URI: until both are established, errors are a page.
        let client_id = p
            .get("client_id")
            .ok_or_else(|| page(400, "Missing client", "The request names no client_id."))?;
        let client = match self.oauth_client(client_id).await {
            Ok(c) => c,
            Err(ClientError::Unavailable(e)) => {
                tracing::warn!(error = %e, "client lookup failed");
                return Err(page(
                    503,
                    "Temporarily unavailable",
                    "The client could not be looked up. Try again shortly.",
                ));
            }
            Err(e) => {
                return Err(page(400, "Unknown client", e.message().to_string()));
            }
        };
        let redirect_uri = p.get("redirect_uri").ok_or_else(|| {
            page(
                400,
                "Missing redirect URI",
                "The request has no redirect_uri; it is required.",
            )
        })?;
        // Exact string comparison (OAuth 2.1 §2.3.1); loopback ports are not relaxed.
        if !client.meta.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(page(
                400,
                "Redirect URI not registered",
                "The redirect_uri is not one this client registered, so Mandate will not \
                 send you there.",
            ));
        }
        let redirect_uri = redirect_uri.to_string();
        let state = p.get("state").map(str::to_string);
        let fail = |error: &'static str, description: &str| {
            AuthorizeError::Redirect(ErrorRedirect {
                redirect_uri: redirect_uri.clone(),
                error,
                description: description.to_string(),
                state: state.clone(),
            })
        };
        // 2. Everything else goes back to the client.
        match p.get("response_type") {
            Some("code") => {}
            None => return Err(fail("invalid_request", "response_type is required")),
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "the only response_type is code",
                ));
            }
        }
        match p.get("code_challenge_method") {
            Some("S256") => {}
            None => {
                return Err(fail(
                    "invalid_request",
                    "code_challenge_method S256 is required (PKCE)",
                ));
            }
            Some(_) => {
                return Err(fail(
                    "invalid_request",
                    "only the S256 code_challenge_method is supported",
                ));
            }
        }
        let code_challenge = match p.get("code_challenge") {
            Some(c) if pkce_value_ok(c) => c.to_string(),
            Some(_) => return Err(fail("invalid_request", "code_challenge is malformed")),
            None => return Err(fail("invalid_request", "code_challenge is required (PKCE)")),
        };
        let prompt = match p.get("prompt") {
            None => Prompt::Default,
            Some(v) => {
                let words = scope_set(v);
                if words.contains("none") && words.len() > 1 {
                    return Err(fail("invalid_request", "prompt=none cannot be combined"));
                }
                if words.contains("none") {
                    Prompt::None
                } else if words.contains("consent") {
                    Prompt::Consent
                } else {
                    Prompt::Default
                }
            }
        };
        if p.get("request").is_some() || p.get("request_uri").is_some() {
            return Err(fail(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        let server = self
            .resolve_person_resource(&p.all("resource"))
            .map_err(|e| fail(e.code(), e.description().unwrap_or("invalid resource")))?;
        let scope = p.get("scope").map(str::to_string);
        if let Some(s) = &scope {
            // Grammar only here; what the person may grant is decided with them.
            scopes::narrow(Some(s), &[], &server, |_| false)
                .map_err(|_| fail("invalid_scope", "scope is malformed"))?;
        }
        Ok(AuthRequest {
            client,
            redirect_uri,
            state,
            code_challenge,
            server,
            scope,
            prompt,
        })
    }

    /// The MCP server of a request: the one `resource` given (RFC 8707), or, when none is
    /// given and exactly one server is registered, that one.
    pub fn resolve_person_resource(&self, given: &[&str]) -> Result<Arc<McpServer>, OAuthError> {
        let registry = self.registry();
        let canon = match given {
            [] => {
                let mut all = registry.servers();
                return match (all.next(), all.next()) {
                    (Some(only), None) => Ok(only.clone()),
                    _ => Err(OAuthError::InvalidTarget(
                        "resource is required: name the MCP server (RFC 8707)".into(),
                    )),
                };
            }
            [first, rest @ ..] => {
                let canon =
                    canonical_resource(first).map_err(|e| OAuthError::InvalidTarget(e.into()))?;
                if rest
                    .iter()
                    .any(|r| canonical_resource(r).ok().as_deref() != Some(&canon))
                {
                    return Err(OAuthError::InvalidTarget(
                        "one resource per grant: authorize each MCP server separately".into(),
                    ));
                }
                canon
            }
        };
        registry
            .server_by_resource(&canon)
            .cloned()
            .ok_or_else(|| OAuthError::InvalidTarget("unknown resource".into()))
    }

    /// Asks policy, tool by tool, what `client` may do for `person` on `server` within
    /// `requested` (everything when absent). The principal is the person (`Human::"<email>"`,
    /// with their roles), the client is `context.client`, and the person is also
    /// `context.delegation` (for policies written before Human principals).
    pub fn person_scopes(
        &self,
        client: &OAuthClient,
        server: &McpServer,
        person: &Person,
        requested: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<ScopeDecision, OAuthError> {
        let registry = self.registry();
        let engine = &registry.policy;
        let (human, client) = person_facts(client, person);
        let now = self.clock.now();
        let facts = Facts {
            now,
            utc_offset_secs: self.config.policy_offset_secs(now),
            source_ip: ip,
            environment: server.environment.clone(),
            delegation: Some(human.clone()),
            client: Some(client),
            ..Facts::default()
        };
        let features = engine.features(&facts);
        let mut tools = Vec::new();
        let mut reasons = Vec::new();
        let granted = scopes::narrow(requested, &all_classes(), server, |tool| {
            let d = engine.decide_human(&human, server, tool, &features, &facts);
            reasons.extend(d.reasons.iter().cloned());
            let outcome = d.decision;
            tools.push(ToolDecision {
                name: tool.name.clone(),
                class: tool.class.as_str(),
                sensitivity: crate::policy::sensitivity_name(tool.sensitivity),
                outcome: outcome.as_str(),
            });
            outcome == Outcome::Permit
        })?;
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        reasons.sort();
        reasons.dedup();
        Ok(ScopeDecision {
            tools,
            granted,
            reasons,
        })
    }

    /// Whether `person` already consented to at least `granted` for this client and server.
    pub async fn consent_on_file(
        &self,
        req: &AuthRequest,
        person: &Person,
        granted: &[String],
    ) -> Result<bool, OAuthError> {
        let c = ClientStore(&self.store)
            .consent(&person.id, &req.client.client_id, &req.server.resource)
            .await
            .map_err(|e| OAuthError::ServerError(e.to_string().into()))?;
        Ok(c.is_some_and(|c| {
            let have = scope_set(&c.scope);
            granted.iter().all(|g| have.contains(g.as_str()))
        }))
    }

    /// The person approved: remember the consent (when asked), issue a code, and return the
    /// redirect URL carrying it.
    pub async fn approve(
        &self,
        req: &AuthRequest,
        person: &Person,
        granted: &[String],
        remember: bool,
    ) -> Result<String, OAuthError> {
        let now = self.clock.now();
        let store = ClientStore(&self.store);
        let scope = granted.join(" ");
        if remember {
            store
                .grant_consent(
                    &person.id,
                    &req.client.client_id,
                    &req.server.resource,
                    &scope,
                    now,
                )
                .await
                .map_err(|e| OAuthError::ServerError(e.to_string().into()))?;
            let ev = self
                .audit
                .trail(crate::audit::Actor::new(
                    crate::audit::ActorKind::Human,
                    &person.id,
                ))
                .event(crate::audit::kinds::CONSENT_GRANTED, now)
                .subject(req.client.client_id.clone())
                .server(req.server.id.clone())
                .action("consent")
                .detail_str("scope", scope.clone())
                .detail_str("resource", req.server.resource.clone());
            self.audit
                .record(ev)
                .await
                .map_err(|_| OAuthError::TemporarilyUnavailable("audit log unavailable".into()))?;
        }
        let code = crate::secrets::generate(crate::clients::CODE_PREFIX);
        store
            .insert_code(authorization_code::Model {
                code_hash: crate::clients::store::secret_key(&code),
                client_id: req.client.client_id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                code_challenge: req.code_challenge.clone(),
                resource: req.server.resource.clone(),
                scope: scope.clone(),
                human_id: person.id.clone(),
                expires_at: now + self.config.authorization_code_ttl_secs,
                used_at: None,
                family_id: None,
                created_at: now,
            })
            .await
            .map_err(|e| OAuthError::ServerError(e.to_string().into()))?;
        let ev = self
            .audit
            .trail(crate::audit::Actor::new(
                crate::audit::ActorKind::Human,
                &person.id,
            ))
            .event(crate::audit::kinds::CODE_ISSUED, now)
            .subject(crate::secrets::fingerprint(&code))
            .server(req.server.id.clone())
            .action("authorize")
            .decision(crate::audit::Decision::Permit)
            .detail_str("client_id", req.client.client_id.clone())
            .detail_str("scope", scope)
            .detail_str("resource", req.server.resource.clone());
        self.audit
            .record(ev)
            .await
            .map_err(|_| OAuthError::TemporarilyUnavailable("audit log unavailable".into()))?;
        Ok(self.success_redirect(req, &code))
    }

    /// The redirect carrying a code (with `state` and `iss`).
    fn success_redirect(&self, req: &AuthRequest, code: &str) -> String {
        let mut pairs = vec![("code", code.to_string())];
        if let Some(s) = &req.state {
            pairs.push(("state", s.clone()));
        }
        pairs.push(("iss", self.issuer.clone()));
        with_query(&req.redirect_uri, &pairs)
    }

    /// The redirect carrying an error (with `state` and `iss`, RFC 9207).
    pub fn error_redirect(&self, e: &ErrorRedirect) -> String {
        let mut pairs = vec![
            ("error", e.error.to_string()),
            ("error_description", e.description.clone()),
        ];
        if let Some(s) = &e.state {
            pairs.push(("state", s.clone()));
        }
        pairs.push(("iss", self.issuer.clone()));
        with_query(&e.redirect_uri, &pairs)
    }

    /// Whether the client is described by a metadata document (for the consent page).
    pub fn is_document_client(client: &OAuthClient) -> bool {
        client.source == ClientSource::MetadataDocument
    }
}

/// `uri` with `pairs` added to its query (keeping any query it has).
pub fn with_query(uri: &str, pairs: &[(&str, String)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce() {
        // RFC 7636 Appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_value_ok(v));
        assert!(pkce_matches(
            v,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            v,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!pkce_value_ok("short"));
        assert!(!pkce_value_ok(&"a".repeat(129)));
        assert!(!pkce_value_ok(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(
            with_query("https://c.example/cb?x=1", &[("code", "a b".into())]),
            "https://c.example/cb?x=1&code=a+b"
        );
        assert_eq!(
            with_query("com.example.app:/cb", &[("state", "s".into())]),
            "com.example.app:/cb?state=s"
        );
    }
}
