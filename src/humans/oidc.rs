//! Sign-in through an upstream OpenID Connect provider (`[oidc]` in the configuration), with
//! the `openidconnect` crate as the relying party: discovery, authorization code flow with
//! PKCE (S256), `state` bound to the browser by a cookie, `nonce`, and ID token validation
//! (signature against the provider's JWKS, `iss`, `aud`, `exp`, `nonce`).
//!
//! Who may sign in (the safe default): a person already in Mandate, found by the upstream
//! account linked at their first OIDC sign-in, else by a verified email. With `auto_create`,
//! a person whose verified email is in `allowed_domains` is created at first sign-in.
use super::{Human, HumanRecord, Role};
use crate::app::App;
use crate::audit::{Actor, ActorKind};
use crate::config::OidcConfig;
use crate::registry::admin::AdminError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// Seconds the discovered provider metadata (and its JWKS) is reused.
const METADATA_TTL_SECS: i64 = 3600;
/// Largest response accepted from the provider.
const MAX_RESPONSE_BYTES: usize = 512 * 1024;

/// The upstream provider: configuration, an HTTP client that follows no redirects, and the
/// cached discovery document.
pub struct Upstream {
    pub config: Option<OidcConfig>,
    http: reqwest::Client,
    metadata: Mutex<Option<(i64, CoreProviderMetadata)>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("issuer", &self.config.as_ref().map(|c| c.issuer.as_str()))
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(config: Option<OidcConfig>, timeout_secs: u64) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(timeout_secs.clamp(1, 30)))
            .build()
            .unwrap_or_default();
        Self {
            config,
            http,
            metadata: Mutex::new(None),
        }
    }
}

/// Why an upstream sign-in failed (audited; the browser sees a generic message).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("upstream OIDC sign-in is not configured")]
    NotConfigured,
    #[error("unknown, used or expired state")]
    State,
    #[error("the provider returned an error: {0}")]
    Provider(String),
    #[error("discovery failed: {0}")]
    Discovery(String),
    #[error("code exchange failed: {0}")]
    Exchange(String),
    #[error("ID token refused: {0}")]
    IdToken(String),
    #[error("no verified email in the ID token")]
    Email,
    #[error("no Mandate account for this person")]
    Unknown,
    #[error("the claim mapping gives this person no role")]
    NoRole,
    #[error("this Mandate account is linked to another upstream account")]
    Mismatch,
    #[error(transparent)]
    Store(#[from] AdminError),
}

impl OidcError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotConfigured => "oidc_not_configured",
            Self::State => "bad_state",
            Self::Provider(_) => "provider_error",
            Self::Discovery(_) => "discovery_failed",
            Self::Exchange(_) => "exchange_failed",
            Self::IdToken(_) => "bad_id_token",
            Self::Email => "no_verified_email",
            Self::Unknown => "unknown_person",
            Self::NoRole => "no_role",
            Self::Mismatch => "subject_mismatch",
            Self::Store(_) => "server_error",
        }
    }
}

impl From<super::passkeys::PasskeyError> for OidcError {
    fn from(e: super::passkeys::PasskeyError) -> Self {
        match e {
            super::passkeys::PasskeyError::Store(s) => Self::Store(s),
            other => Self::Store(AdminError::Invalid(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// openidconnect's async HTTP client, on reqwest 0.13 (no redirects, bounded bodies).
#[derive(Clone)]
struct Http(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
                + Send
                + 'c,
        >,
    >;
    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(self.0.clone(), request))
    }
}

async fn send(
    client: reqwest::Client,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = req.into_parts();
    let mut resp = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(e.to_string()))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| HttpError(e.to_string()))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError("response too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = axum::http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The redirect URI registered at the provider.
pub fn redirect_uri(issuer: &str) -> String {
    format!("{}/login/oidc/callback", issuer.trim_end_matches('/'))
}

async fn metadata(app: &App, cfg: &OidcConfig) -> Result<CoreProviderMetadata, OidcError> {
    let now = app.clock.now();
    let mut cached = app.humans.oidc.metadata.lock().await;
    if let Some((at, m)) = cached.as_ref()
        && now - at < METADATA_TTL_SECS
    {
        return Ok(m.clone());
    }
    let issuer =
        IssuerUrl::new(cfg.issuer.clone()).map_err(|e| OidcError::Discovery(e.to_string()))?;
    let client = Http(app.humans.oidc.http.clone());
    // discover_async checks the document's issuer equals the configured one.
    let m = CoreProviderMetadata::discover_async(issuer, &client)
        .await
        .map_err(|e| OidcError::Discovery(error_chain(&e)))?;
    *cached = Some((now, m.clone()));
    Ok(m)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// What is kept server-side between the redirect to the provider and its callback.
#[derive(Serialize, Deserialize)]
struct FlowState {
    nonce: String,
    verifier: String,
    next: String,
}

/// Starts a sign-in: returns the provider's authorization URL and the flow handle (also the
/// `state` value, and the value of the cookie that binds the flow to this browser).
pub async fn start(app: &App, next: &str) -> Result<(String, String), OidcError> {
    let cfg = app
        .humans
        .oidc
        .config
        .as_ref()
        .ok_or(OidcError::NotConfigured)?;
    let meta = metadata(app, cfg).await?;
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(cfg.client_id.clone()),
        cfg.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(
        RedirectUrl::new(redirect_uri(&app.issuer))
            .map_err(|e| OidcError::Discovery(e.to_string()))?,
    );
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = Nonce::new_random();
    let state = FlowState {
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        next: super::web::safe_next(next).to_string(),
    };
    let handle =
        super::passkeys::put_ceremony(&app.store, app.clock.now(), "oidc", None, &state).await?;
    let state_param = handle.clone();
    let mut req = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state_param.clone()),
            move || nonce.clone(),
        )
        .set_pkce_challenge(challenge);
    for s in &cfg.scopes {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let (url, _, _) = req.url();
    Ok((url.to_string(), handle))
}

/// Finishes a sign-in at the callback: `state` must be a live flow started by this browser
/// (`cookie`), the code is exchanged with the PKCE verifier, and the ID token validated.
/// Returns the person and where to go next.
pub async fn finish(
    app: &App,
    state: &str,
    cookie: Option<&str>,
    code: &str,
) -> Result<(Human, String), OidcError> {
    let cfg = app
        .humans
        .oidc
        .config
        .as_ref()
        .ok_or(OidcError::NotConfigured)?;
    let now = app.clock.now();
    let bound = cookie.is_some_and(|c| {
        c.len() == state.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                c.as_bytes(),
                state.as_bytes(),
            ))
    });
    if !bound {
        return Err(OidcError::State);
    }
    let Some((_, flow)) =
        super::passkeys::take_ceremony::<FlowState>(&app.store, now, "oidc", state).await?
    else {
        return Err(OidcError::State);
    };
    let meta = metadata(app, cfg).await?;
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(cfg.client_id.clone()),
        cfg.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(
        RedirectUrl::new(redirect_uri(&app.issuer))
            .map_err(|e| OidcError::Discovery(e.to_string()))?,
    );
    let http_client = Http(app.humans.oidc.http.clone());
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| OidcError::Exchange(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier))
        .request_async(&http_client)
        .await
        .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
    let id_token = token
        .id_token()
        .ok_or_else(|| OidcError::IdToken("no id_token in the token response".into()))?;
    let verifier = client.id_token_verifier().set_time_fn(move || {
        chrono::DateTime::<chrono::Utc>::from_timestamp(now, 0).unwrap_or_default()
    });
    let claims = id_token
        .claims(&verifier, &Nonce::new(flow.nonce))
        .map_err(|e| OidcError::IdToken(e.to_string()))?;
    let subject = format!("{}|{}", cfg.issuer, claims.subject().as_str());
    let email = claims
        .email()
        .filter(|_| claims.email_verified() == Some(true))
        .map(|e| e.as_str().to_string());
    // The signature is verified: read the other claims (the role claim) from the same token.
    let raw = raw_claims(&id_token.to_string());
    let human = resolve(app, cfg, &subject, email.as_deref(), &raw, claims.name()).await?;
    Ok((human, flow.next))
}

/// The payload of a compact JWT as JSON (only after its signature was verified).
fn raw_claims(jwt: &str) -> serde_json::Value {
    jwt.split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The roles `claims` map to (`None` when no role claim is configured).
pub fn mapped_roles(cfg: &OidcConfig, claims: &serde_json::Value) -> Option<Vec<Role>> {
    let claim = cfg.roles_claim.as_deref()?;
    let values: Vec<&str> = match claims.get(claim) {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<Role> = values
        .iter()
        .filter_map(|v| cfg.role_map.get(*v))
        .filter_map(|r| Role::parse(r))
        .collect();
    roles.sort();
    roles.dedup();
    Some(roles)
}

async fn resolve(
    app: &App,
    cfg: &OidcConfig,
    subject: &str,
    email: Option<&str>,
    claims: &serde_json::Value,
    name: Option<&openidconnect::LocalizedClaim<openidconnect::EndUserName>>,
) -> Result<Human, OidcError> {
    let now = app.clock.now();
    let trail = app
        .audit
        .trail(Actor::new(ActorKind::System, "oidc".to_string()));
    let by_subject = super::find_by_oidc_subject(&app.store, subject).await?;
    let record: Option<HumanRecord> = match by_subject {
        Some(r) => Some(r),
        None => match email {
            Some(e) => super::find_by_email(&app.store, e).await?,
            None => return Err(OidcError::Email),
        },
    };
    let mapped = mapped_roles(cfg, claims);
    let human = match record {
        Some(r) => {
            if !r.active() {
                return Err(OidcError::Unknown);
            }
            if r.oidc_subject.as_deref().is_some_and(|s| s != subject) {
                return Err(OidcError::Mismatch);
            }
            if r.oidc_subject.is_none() {
                super::link_oidc_subject(&app.store, &r.human.id, subject).await?;
            }
            let mut h = r.human;
            if let Some(roles) = mapped {
                if roles.is_empty() {
                    return Err(OidcError::NoRole);
                }
                if roles != h.roles {
                    super::set_roles(&app.store, &trail, now, &h.id, &roles).await?;
                    h.roles = roles;
                }
            }
            h
        }
        None => {
            let email = email.ok_or(OidcError::Email)?;
            let domain = email.rsplit('@').next().unwrap_or("");
            let allowed = cfg.auto_create
                && cfg
                    .allowed_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain));
            if !allowed {
                return Err(OidcError::Unknown);
            }
            let roles = match mapped {
                Some(r) if !r.is_empty() => r,
                Some(_) if cfg.roles_claim.is_some() => return Err(OidcError::NoRole),
                _ => cfg
                    .default_roles
                    .iter()
                    .filter_map(|r| Role::parse(r))
                    .collect(),
            };
            let display = name
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_string())
                .unwrap_or_else(|| email.split('@').next().unwrap_or(email).to_string());
            let h = super::create(&app.store, &trail, now, email, &display, &roles).await?;
            super::link_oidc_subject(&app.store, &h.id, subject).await?;
            h
        }
    };
    Ok(human)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_from_a_claim() {
        let cfg = OidcConfig {
            issuer: "https://idp.example".into(),
            client_id: "m".into(),
            client_secret: None,
            scopes: vec![],
            label: String::new(),
            roles_claim: Some("groups".into()),
            role_map: [
                ("ops".to_string(), "admin".to_string()),
                ("fin".into(), "approver".into()),
            ]
            .into_iter()
            .collect(),
            auto_create: false,
            allowed_domains: vec![],
            default_roles: vec![],
        };
        let c = serde_json::json!({"groups": ["fin", "ops", "x"]});
        assert_eq!(
            mapped_roles(&cfg, &c),
            Some(vec![Role::Admin, Role::Approver])
        );
        let c = serde_json::json!({"groups": "fin"});
        assert_eq!(mapped_roles(&cfg, &c), Some(vec![Role::Approver]));
        assert_eq!(mapped_roles(&cfg, &serde_json::json!({})), Some(vec![]));
    }
}
