//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post` (OAuth 2.1 §2.4.1) and `private_key_jwt`
//! (RFC 7523 §2.2/§3, OIDC Core §9). Exactly one method per request.
use super::{OAuthError, Params};
use crate::agents::{Agent, AuthMethod};
use crate::registry::Registry;
use crate::resources::McpServer;
use crate::sessions::ReplayCache;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Algorithms accepted on client assertions; never `none` or an HMAC.
pub const ASSERTION_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Who authenticated.
#[derive(Debug, Clone)]
pub enum Client {
    Agent(Arc<Agent>),
    Server(Arc<McpServer>),
}

/// How the credentials were presented.
#[derive(Debug)]
enum Presented<'a> {
    Basic(String, String),
    Post(&'a str, &'a str),
    Jwt(&'a str),
}

/// What client authentication needs from the server.
pub struct AuthEnv<'a> {
    pub registry: &'a Registry,
    pub issuer: &'a str,
    pub token_endpoint: &'a str,
    pub now: i64,
    pub skew: i64,
    pub max_assertion_lifetime: i64,
    pub replay: &'a dyn ReplayCache,
    pub remote_jwks: &'a RemoteJwks,
    pub throttle: &'a super::throttle::FailureThrottle,
    /// The caller's address, for brute-force throttling.
    pub peer: std::net::IpAddr,
}

fn form_decode(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    let pair = format!("{s}=");
    let (k, _) = url::form_urlencoded::parse(pair.as_bytes()).next()?;
    Some(k.into_owned())
}

fn presented<'a>(
    authorization: Option<&'a str>,
    p: &'a Params,
) -> Result<(Presented<'a>, bool), OAuthError> {
    let header = authorization.map(str::trim).filter(|h| !h.is_empty());
    let post = p.get("client_secret");
    let jwt = p.get("client_assertion").is_some() || p.get("client_assertion_type").is_some();
    let count = usize::from(header.is_some()) + usize::from(post.is_some()) + usize::from(jwt);
    if count > 1 {
        return Err(OAuthError::InvalidRequest(
            "more than one client authentication method was used".into(),
        ));
    }
    if let Some(h) = header {
        let bad = |why: &'static str| OAuthError::invalid_client(true, why);
        let (scheme, rest) = h
            .split_once(' ')
            .ok_or_else(|| bad("malformed Authorization"))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad("Authorization scheme is not Basic"));
        }
        let raw = STANDARD
            .decode(rest.trim())
            .map_err(|_| bad("Basic credentials are not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("Basic credentials are not UTF-8"))?;
        let (id, secret) = text
            .split_once(':')
            .ok_or_else(|| bad("Basic credentials lack ':'"))?;
        let id = form_decode(id).ok_or_else(|| bad("bad client id encoding"))?;
        let secret = form_decode(secret).ok_or_else(|| bad("bad secret encoding"))?;
        if let Some(body_id) = p.get("client_id")
            && body_id != id
        {
            return Err(bad("client_id in body differs from Basic credentials"));
        }
        return Ok((Presented::Basic(id, secret), true));
    }
    if let Some(secret) = post {
        let id = p.get("client_id").ok_or_else(|| {
            OAuthError::InvalidRequest("client_id is required with client_secret".into())
        })?;
        return Ok((Presented::Post(id, secret), false));
    }
    if jwt {
        if p.get("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
            return Err(OAuthError::invalid_client(
                false,
                "client_assertion_type missing or not jwt-bearer",
            ));
        }
        let assertion = p
            .get("client_assertion")
            .ok_or_else(|| OAuthError::InvalidRequest("client_assertion is required".into()))?;
        return Ok((Presented::Jwt(assertion), false));
    }
    Err(OAuthError::invalid_client(
        false,
        "no client authentication",
    ))
}

/// Authenticates the caller as an agent or an MCP server. Repeated failures for one client id
/// from one address are throttled.
pub async fn authenticate(
    env: &AuthEnv<'_>,
    authorization: Option<&str>,
    p: &Params,
) -> Result<Client, OAuthError> {
    let (cred, header_used) = presented(authorization, p)?;
    let claimed = match &cred {
        Presented::Basic(id, _) => Some(id.clone()),
        Presented::Post(id, _) => Some((*id).to_string()),
        Presented::Jwt(a) => {
            jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(a)
                .ok()
                .and_then(|c| c["sub"].as_str().map(String::from))
        }
    };
    if let Some(id) = &claimed
        && let Some(retry_after) = env.throttle.blocked(id, env.peer, env.now)
    {
        return Err(OAuthError::TooManyAttempts { retry_after });
    }
    let result = check(env, &cred, header_used, p).await;
    if let (Err(OAuthError::InvalidClient { .. }), Some(id)) = (&result, &claimed) {
        env.throttle.record_failure(id, env.peer, env.now);
    }
    result
}

async fn check(
    env: &AuthEnv<'_>,
    cred: &Presented<'_>,
    header_used: bool,
    p: &Params,
) -> Result<Client, OAuthError> {
    let fail = |why: &'static str| OAuthError::invalid_client(header_used, why);
    let (id, secret) = match cred {
        Presented::Jwt(assertion) => {
            return verify_assertion(env, assertion, p.get("client_id")).await;
        }
        Presented::Basic(id, secret) => (id.as_str(), secret.as_str()),
        Presented::Post(id, secret) => (*id, *secret),
    };
    let method = if header_used {
        AuthMethod::ClientSecretBasic
    } else {
        AuthMethod::ClientSecretPost
    };
    // Hash first, whoever asks, so unknown ids cost the same time.
    let ok = env.registry.verify_secret(id, secret, env.now);
    if let Some(agent) = env.registry.agent(id) {
        if !ok {
            return Err(fail("bad client secret"));
        }
        if agent.auth_method != method {
            return Err(fail("agent registered for another auth method"));
        }
        return Ok(Client::Agent(agent.clone()));
    }
    if let Some(server) = env.registry.server(id) {
        if !ok {
            return Err(fail("bad client secret"));
        }
        return Ok(Client::Server(server.clone()));
    }
    Err(fail("unknown client"))
}
fn as_alg(name: &str) -> Option<Algorithm> {
    ASSERTION_ALGS
        .contains(&name)
        .then(|| name.parse().ok())
        .flatten()
}

async fn verify_assertion(
    env: &AuthEnv<'_>,
    assertion: &str,
    body_client_id: Option<&str>,
) -> Result<Client, OAuthError> {
    let fail = |why: &'static str| OAuthError::invalid_client(false, why);
    if assertion.len() > 8192 {
        return Err(fail("client assertion too large"));
    }
    // The header is parsed as raw JSON first, so `none` and HMAC are refused by name.
    let header_json = assertion
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .ok_or_else(|| fail("client assertion header unreadable"))?;
    let alg_name = header_json["alg"].as_str().unwrap_or("");
    let alg = as_alg(alg_name).ok_or_else(|| fail("client assertion alg not allowed"))?;
    let kid = header_json["kid"].as_str();
    let unverified: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| fail("client assertion claims unreadable"))?;
    let sub = unverified["sub"]
        .as_str()
        .ok_or_else(|| fail("assertion has no sub"))?;
    if unverified["iss"].as_str() != Some(sub) {
        return Err(fail("assertion iss differs from sub"));
    }
    if body_client_id.is_some_and(|c| c != sub) {
        return Err(fail("client_id differs from assertion sub"));
    }
    let agent = env
        .registry
        .agent(sub)
        .ok_or_else(|| fail("unknown client"))?
        .clone();
    if agent.auth_method != AuthMethod::PrivateKeyJwt {
        return Err(fail("agent is not registered for private_key_jwt"));
    }
    let claims = verify_with_agent_keys(env, &agent, assertion, alg, kid).await?;

    // RFC 7523 §3 checks, on our clock.
    let now = env.now;
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(a) => a == env.issuer || a == env.token_endpoint,
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|v| v.as_str())
            .any(|a| a == env.issuer || a == env.token_endpoint),
        _ => false,
    };
    if !aud_ok {
        return Err(fail("assertion aud is not this server"));
    }
    let exp = claims["exp"]
        .as_i64()
        .ok_or_else(|| fail("assertion has no exp"))?;
    if exp + env.skew <= now {
        return Err(fail("assertion expired"));
    }
    if exp > now + env.max_assertion_lifetime + env.skew {
        return Err(fail("assertion exp too far in the future"));
    }
    if let Some(nbf) = claims["nbf"].as_i64()
        && nbf > now + env.skew
    {
        return Err(fail("assertion not yet valid"));
    }
    if let Some(iat) = claims["iat"].as_i64()
        && (iat > now + env.skew || iat < now - env.max_assertion_lifetime - env.skew)
    {
        return Err(fail("assertion iat out of range"));
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| fail("assertion has no usable jti"))?;
    let key = format!("pkjwt:{}:{jti}", agent.id);
    match env.replay.first_use(&key, exp + env.skew, now).await {
        Ok(true) => Ok(Client::Agent(agent)),
        Ok(false) => Err(fail("assertion jti replayed")),
        Err(_) => Err(OAuthError::TemporarilyUnavailable(
            "replay cache unavailable".into(),
        )),
    }
}

async fn verify_with_agent_keys(
    env: &AuthEnv<'_>,
    agent: &Agent,
    assertion: &str,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<serde_json::Value, OAuthError> {
    let fail = |why: &'static str| OAuthError::invalid_client(false, why);
    let try_set = |set: &JwkSet| -> Result<serde_json::Value, &'static str> {
        let candidates: Vec<_> = set
            .keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
            .take(10)
            .collect();
        if candidates.is_empty() {
            return Err("unknown kid");
        }
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        for k in candidates {
            let Ok(dk) = DecodingKey::from_jwk(k) else {
                continue;
            };
            if let Ok(data) = jsonwebtoken::decode::<serde_json::Value>(assertion, &dk, &v) {
                return Ok(data.claims);
            }
        }
        Err("assertion signature invalid")
    };
    if let Some(jwks) = &agent.jwks {
        let set: JwkSet =
            serde_json::from_value(jwks.clone()).map_err(|_| fail("stored jwks unreadable"))?;
        return try_set(&set).map_err(fail);
    }
    let uri = agent
        .jwks_uri
        .as_deref()
        .ok_or_else(|| fail("agent has no keys"))?;
    let set = env
        .remote_jwks
        .get(uri, env.now, false)
        .await
        .map_err(|_| fail("jwks_uri unreachable"))?;
    match try_set(&set) {
        Ok(c) => Ok(c),
        Err("unknown kid") => {
            // The agent may have rotated: fetch again (rate limited) before refusing.
            let set = env
                .remote_jwks
                .get(uri, env.now, true)
                .await
                .map_err(|_| fail("jwks_uri unreachable"))?;
            try_set(&set).map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

/// A cache of agents' `jwks_uri` documents: refreshed after five minutes, or on an unknown
/// `kid` at most every ten seconds.
pub struct RemoteJwks {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (i64, Arc<JwkSet>)>>,
}

impl Default for RemoteJwks {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl RemoteJwks {
    pub async fn get(&self, uri: &str, now: i64, force: bool) -> Result<Arc<JwkSet>, String> {
        let cached = self
            .cache
            .lock()
            .map_err(|_| "cache poisoned".to_string())?
            .get(uri)
            .cloned();
        if let Some((at, set)) = &cached {
            let fresh = now - at < 300;
            let recently = now - at < 10;
            if (fresh && !force) || (force && recently) {
                return Ok(set.clone());
            }
        }
        let resp = self.http.get(uri).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("jwks_uri answered {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if bytes.len() > 256 * 1024 {
            return Err("jwks document too large".into());
        }
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let set = Arc::new(set);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(uri.to_string(), (now, set.clone()));
        }
        Ok(set)
    }
}
