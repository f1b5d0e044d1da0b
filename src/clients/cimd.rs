//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a client whose
//! `client_id` is an https URL is described by the JSON document at that URL.
//!
//! The fetch is SSRF-safe: the host is resolved here and every address checked against the
//! special-use ranges (RFC 6890) before connecting, and the connection is pinned to the checked
//! address, so DNS rebinding cannot swap it. No redirects, a 5 KB limit enforced while
//! streaming, a short timeout, no proxy. Documents are cached as their `Cache-Control` allows;
//! errors and invalid documents never are.
use super::{ClientAuthMethod, ClientError, ClientSource, OAuthClient};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

/// Largest document accepted (CIMD §"Max Response Size" recommends 5 KB).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Longest a document is cached, whatever its headers say.
const MAX_CACHE_SECS: i64 = 24 * 3600;

/// How documents are fetched.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// Development only: documents on loopback addresses, over http, are allowed (Mandate
    /// itself runs on loopback; CIMD §SSRF allows this exception).
    pub allow_loopback: bool,
    pub timeout: Duration,
}

/// Whether `client_id` is in the form of a metadata document URL (any `https://` id, and in
/// development `http://` on loopback).
pub fn looks_like_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// CIMD §"Client Identifier": https, a path, no dot segments, no fragment, no userinfo.
pub fn check_client_id_url(raw: &str, policy: &FetchPolicy) -> Result<url::Url, ClientError> {
    let bad = |m: &str| ClientError::Unknown(format!("client_id URL {raw:?}: {m}"));
    if raw.len() > 2000 {
        return Err(bad("too long"));
    }
    let u = url::Url::parse(raw).map_err(|_| bad("not a URL"))?;
    let loopback = u.host().is_some_and(|h| super::is_loopback_host(&h));
    match u.scheme() {
        "https" => {}
        "http" if policy.allow_loopback && loopback => {}
        _ => return Err(bad("must be https")),
    }
    if u.fragment().is_some() || raw.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("must not have user information"));
    }
    if u.path() == "/" || u.path().is_empty() {
        return Err(bad("must have a path"));
    }
    // Url normalises dot segments away: compare with the raw text.
    let raw_path = raw
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    let raw_path = raw_path.split(['?']).next().unwrap_or("");
    if raw_path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad("must not have . or .. segments"));
    }
    if u.as_str() != raw {
        return Err(bad("must be in normalised form"));
    }
    Ok(u)
}

/// Whether an address is one a fetch may reach: not loopback, private, link-local, shared,
/// documentation, benchmarking, multicast, reserved or otherwise special-use (RFC 6890).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = a.segments();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 and ::/48
                || (s[0] == 0x100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
                || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments 2001::/23
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || s[0] == 0x2002 // 6to4
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0))
            // IPv4-compatible ::/96
        }
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(o[0] == 0
        || o[0] == 10
        || o[0] == 127
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (o[1] & 0xf0) == 16)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || o[0] >= 224)
}

fn allowed_address(ip: IpAddr, policy: &FetchPolicy) -> bool {
    is_public(ip) || (policy.allow_loopback && ip.is_loopback())
}

/// A cached document.
struct Cached {
    client: OAuthClient,
    until: i64,
}

/// The document cache (per node).
#[derive(Default)]
pub struct DocumentCache {
    entries: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for DocumentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentCache").finish_non_exhaustive()
    }
}

impl DocumentCache {
    fn get(&self, url: &str, now: i64) -> Option<OAuthClient> {
        let g = self.entries.lock().ok()?;
        g.get(url)
            .filter(|c| c.until > now)
            .map(|c| c.client.clone())
    }

    fn put(&self, url: &str, client: OAuthClient, until: i64, now: i64) {
        if let Ok(mut g) = self.entries.lock() {
            if g.len() >= 10_000 {
                g.retain(|_, c| c.until > now);
            }
            if g.len() < 10_000 {
                g.insert(url.to_string(), Cached { client, until });
            }
        }
    }

    /// Forgets a document (tests, and when a fetch of it fails).
    pub fn forget(&self, url: &str) {
        if let Ok(mut g) = self.entries.lock() {
            g.remove(url);
        }
    }

    /// The client described by the document at `client_id`: from the cache while fresh, else
    /// fetched and checked.
    pub async fn resolve(
        &self,
        client_id: &str,
        policy: &FetchPolicy,
        now: i64,
    ) -> Result<OAuthClient, ClientError> {
        if let Some(c) = self.get(client_id, now) {
            return Ok(c);
        }
        let url = check_client_id_url(client_id, policy)?;
        let result = fetch(&url, policy).await;
        let (body, max_age) = match result {
            Ok(x) => x,
            Err(e) => {
                self.forget(client_id);
                return Err(e);
            }
        };
        let client = match parse_document(client_id, &body) {
            Ok(c) => c,
            Err(e) => {
                self.forget(client_id);
                return Err(e);
            }
        };
        if let Some(secs) = max_age.filter(|s| *s > 0) {
            self.put(
                client_id,
                client.clone(),
                now + secs.min(MAX_CACHE_SECS),
                now,
            );
        }
        Ok(client)
    }
}

/// Checks a fetched document: JSON, `client_id` equal to the URL (simple string comparison),
/// `client_name` and `redirect_uris` present, no secret-based authentication.
pub fn parse_document(client_id: &str, body: &[u8]) -> Result<OAuthClient, ClientError> {
    let bad = |m: String| ClientError::Unknown(format!("client metadata document: {m}"));
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("not valid JSON".into()))?;
    if v.get("client_id").and_then(|x| x.as_str()) != Some(client_id) {
        return Err(bad(
            "its client_id is not the URL it was fetched from".into()
        ));
    }
    for forbidden in ["client_secret", "client_secret_expires_at"] {
        if v.get(forbidden).is_some() {
            return Err(bad(format!(
                "{forbidden} must not appear in a public document"
            )));
        }
    }
    match v.get("token_endpoint_auth_method").and_then(|m| m.as_str()) {
        None | Some("none") => {}
        Some(m) if m.starts_with("client_secret") => {
            return Err(bad(format!(
                "{m} cannot be used with a metadata document (no shared secret)"
            )));
        }
        Some(m) => {
            return Err(bad(format!(
                "token_endpoint_auth_method {m:?} is not supported here (use none)"
            )));
        }
    }
    if v.get("client_name")
        .and_then(|n| n.as_str())
        .is_none_or(|n| n.trim().is_empty())
    {
        return Err(bad("client_name is required".into()));
    }
    let meta = super::dcr::parse_metadata(&v, ClientAuthMethod::None)
        .map_err(|e| bad(e.message().to_string()))?;
    Ok(OAuthClient {
        client_id: client_id.to_string(),
        source: ClientSource::MetadataDocument,
        meta,
        secret_hash: None,
    })
}

/// `max-age` of a response (`None`: do not cache): `no-store`/`no-cache`/`private` win.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    let cc = headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut age = None;
    for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if d == "no-store" || d == "no-cache" {
            return None;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse::<i64>().ok();
        }
    }
    age
}

/// Resolves, checks and fetches. Returns the body and how long it may be cached.
async fn fetch(
    url: &url::Url,
    policy: &FetchPolicy,
) -> Result<(Vec<u8>, Option<i64>), ClientError> {
    let unknown = |m: String| ClientError::Unknown(format!("client metadata document: {m}"));
    let host = url
        .host_str()
        .ok_or_else(|| unknown("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            policy.timeout,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| unknown("name resolution timed out".into()))?
        .map_err(|_| unknown("the host name does not resolve".into()))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(unknown("the host name does not resolve".into()));
    }
    // Every address must be allowed: a name with one public and one private address could
    // otherwise be steered to the private one.
    if let Some(a) = addrs.iter().find(|a| !allowed_address(a.ip(), policy)) {
        return Err(unknown(format!(
            "the host resolves to a special-use address ({}), which is refused",
            a.ip()
        )));
    }
    let pinned = addrs[0];
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(policy.timeout)
        .connect_timeout(policy.timeout)
        .no_proxy()
        .resolve(&host, pinned)
        .user_agent("mandate-cimd/1")
        .build()
        .map_err(|e| ClientError::Unavailable(format!("http client: {e}")))?;
    let mut resp = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            unknown(if e.is_timeout() {
                "fetching it timed out".into()
            } else {
                "it could not be fetched".into()
            })
        })?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(unknown(format!(
            "fetching it answered {} (only 200 counts; redirects are not followed)",
            resp.status().as_u16()
        )));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(unknown(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
    }
    let age = max_age(resp.headers());
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout(policy.timeout, resp.chunk())
            .await
            .map_err(|_| unknown("fetching it timed out".into()))?
            .map_err(|e| {
                unknown(if e.is_timeout() {
                    "fetching it timed out".into()
                } else {
                    "reading it failed".into()
                })
            })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(unknown(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_use_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a} should be refused");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(a.parse().unwrap()), "{a} should be allowed");
        }
    }

    #[test]
    fn client_id_urls() {
        let p = FetchPolicy {
            allow_loopback: false,
            timeout: Duration::from_secs(1),
        };
        assert!(check_client_id_url("https://app.example/client.json", &p).is_ok());
        assert!(check_client_id_url("https://app.example/", &p).is_err());
        assert!(check_client_id_url("https://app.example", &p).is_err());
        assert!(check_client_id_url("http://app.example/c.json", &p).is_err());
        assert!(check_client_id_url("https://app.example/a/../c.json", &p).is_err());
        assert!(check_client_id_url("https://app.example/c.json#x", &p).is_err());
        assert!(check_client_id_url("https://u@app.example/c.json", &p).is_err());
        assert!(check_client_id_url("http://127.0.0.1:9/c.json", &p).is_err());
        let dev = FetchPolicy {
            allow_loopback: true,
            ..p
        };
        assert!(check_client_id_url("http://127.0.0.1:9/c.json", &dev).is_ok());
    }

    #[test]
    fn cache_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert("cache-control", "public, max-age=300".parse().unwrap());
        assert_eq!(max_age(&h), Some(300));
        h.insert("cache-control", "max-age=300, no-store".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }

    #[test]
    fn documents() {
        let id = "https://app.example/c.json";
        let ok = serde_json::json!({
            "client_id": id, "client_name": "App",
            "redirect_uris": ["http://127.0.0.1:3000/cb"], "application_type": "native"
        });
        assert!(parse_document(id, ok.to_string().as_bytes()).is_ok());
        let mut other = ok.clone();
        other["client_id"] = "https://evil.example/c.json".into();
        assert!(parse_document(id, other.to_string().as_bytes()).is_err());
        let mut secret = ok.clone();
        secret["token_endpoint_auth_method"] = "client_secret_basic".into();
        assert!(parse_document(id, secret.to_string().as_bytes()).is_err());
        assert!(parse_document(id, b"{not json").is_err());
    }
}
