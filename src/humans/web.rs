//! Browser sessions of humans, CSRF tokens, and the headers every HTML page carries.
//!
//! The session id lives only in the `__Host-mandate_session` cookie (Secure, HttpOnly,
//! SameSite=Lax, Path=/); the database keeps its SHA-256. Sessions end on sign-out, on
//! revocation, when the person is disabled, after `human_session_idle_secs` without a request,
//! and `human_session_lifetime_secs` after sign-in, whichever comes first.
use super::Human;
use crate::app::AppState;
use crate::audit::{Actor, ActorKind, Event, kinds};
use crate::registry::admin::AdminError;
use crate::store::entities::human_session;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;
use subtle::ConstantTimeEq;

/// The session cookie's name. `__Host-`: Secure, no Domain, Path=/ (RFC 6265bis §4.1.3.2).
pub const COOKIE: &str = "__Host-mandate_session";
/// Prefix of session ids (the cookie value).
const SESSION_PREFIX: &str = "mnd_hs_";

/// The Content-Security-Policy of HTML pages: no inline script or style, no framing.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// A signed-in person, for the request at hand.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub human: Human,
    /// The session id (the cookie value).
    pub session_id: String,
    /// This session's CSRF token: every form and state-changing fetch must send it back.
    pub csrf: String,
}

fn hash_hex(s: &str) -> String {
    crate::secrets::hex(&crate::secrets::hash(s))
}

/// The session cookie's value from the request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

/// The person signed in on this request, if any. Touches the session (idle timeout).
pub async fn current(state: &AppState, headers: &HeaderMap) -> Option<SignedIn> {
    let sid = session_cookie(headers)?;
    if !crate::secrets::well_formed(SESSION_PREFIX, sid) {
        return None;
    }
    let now = state.clock.now();
    let row = match human_session::Entity::find_by_id(hash_hex(sid))
        .one(&state.store.db)
        .await
    {
        Ok(r) => r?,
        Err(e) => {
            tracing::warn!(error = %e, "reading a browser session failed");
            return None;
        }
    };
    if row.ended_at.is_some()
        || row.expires_at <= now
        || now - row.last_seen_at >= state.config.human_session_idle_secs
    {
        return None;
    }
    let human = match super::active(&state.store, &row.human_id).await {
        Ok(h) => h?,
        Err(e) => {
            tracing::warn!(error = %e, "reading a person failed");
            return None;
        }
    };
    if now > row.last_seen_at {
        let res = human_session::Entity::update_many()
            .col_expr(human_session::Column::LastSeenAt, Expr::value(now))
            .filter(human_session::Column::IdHash.eq(&row.id_hash))
            .exec(&state.store.db)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "touching a browser session failed");
        }
    }
    Some(SignedIn {
        human,
        session_id: sid.to_string(),
        csrf: row.csrf,
    })
}

/// Starts a browser session for `human_id`, signed in by `method` (`passkey`, `oidc`), records
/// the sign-in, and returns the `Set-Cookie` value.
pub async fn start_session(
    state: &AppState,
    human_id: &str,
    method: &str,
) -> Result<HeaderValue, AdminError> {
    let now = state.clock.now();
    let sid = crate::secrets::generate(SESSION_PREFIX);
    let lifetime = state.config.human_session_lifetime_secs;
    let tx = state.store.begin().await?;
    human_session::ActiveModel {
        id_hash: Set(hash_hex(&sid)),
        human_id: Set(human_id.to_string()),
        csrf: Set(crate::secrets::generate("mnd_csrf_")),
        auth_method: Set(method.to_string()),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + lifetime),
        ended_at: Set(None),
    }
    .insert(&tx)
    .await?;
    let trail = state
        .audit
        .trail(Actor::new(ActorKind::Human, human_id.to_string()));
    trail
        .record(
            &tx,
            now,
            trail
                .event(kinds::HUMAN_SIGNED_IN, now)
                .subject(human_id)
                .detail_str("method", method)
                .detail_str("session", crate::secrets::fingerprint(&sid)),
        )
        .await?;
    tx.commit().await?;
    HeaderValue::from_str(&format!(
        "{COOKIE}={sid}; Path=/; Max-Age={lifetime}; Secure; HttpOnly; SameSite=Lax"
    ))
    .map_err(|_| AdminError::Invalid("session cookie".into()))
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-mandate_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax",
    )
}

/// Ends one browser session (sign-out). Idempotent.
pub async fn end_session(state: &AppState, session_id: &str) -> Result<(), AdminError> {
    let now = state.clock.now();
    let hash = hash_hex(session_id);
    let tx = state.store.begin().await?;
    let Some(row) = human_session::Entity::find_by_id(hash.clone())
        .one(&tx)
        .await?
    else {
        return Ok(());
    };
    if row.ended_at.is_none() {
        human_session::Entity::update_many()
            .col_expr(human_session::Column::EndedAt, Expr::value(now))
            .filter(human_session::Column::IdHash.eq(hash))
            .exec(&tx)
            .await?;
        let trail = state
            .audit
            .trail(Actor::new(ActorKind::Human, row.human_id.clone()));
        trail
            .record(
                &tx,
                now,
                trail
                    .event(kinds::HUMAN_SIGNED_OUT, now)
                    .subject(&row.human_id)
                    .detail_str("session", crate::secrets::fingerprint(session_id)),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A browser session as listed (never its id: a fingerprint of its hash).
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// First 16 hex characters of the stored hash: enough to tell sessions apart.
    pub id: String,
    pub human_id: String,
    pub auth_method: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
}

/// A person's live browser sessions (not ended, not past their absolute expiry).
pub async fn list_sessions(
    store: &crate::store::Store,
    now: i64,
    human_id: &str,
) -> Result<Vec<SessionView>, AdminError> {
    Ok(human_session::Entity::find()
        .filter(human_session::Column::HumanId.eq(human_id))
        .filter(human_session::Column::EndedAt.is_null())
        .filter(human_session::Column::ExpiresAt.gt(now))
        .order_by_asc(human_session::Column::CreatedAt)
        .all(&store.db)
        .await?
        .into_iter()
        .map(|m| SessionView {
            id: m.id_hash.chars().take(16).collect(),
            human_id: m.human_id,
            auth_method: m.auth_method,
            created_at: m.created_at,
            last_seen_at: m.last_seen_at,
            expires_at: m.expires_at,
            ended_at: m.ended_at,
        })
        .collect())
}

/// Ends every browser session of a person not yet past its absolute expiry; returns how many.
pub async fn revoke_sessions(
    store: &crate::store::Store,
    trail: &crate::audit::Trail,
    now: i64,
    human_id: &str,
) -> Result<u64, AdminError> {
    let tx = store.begin().await?;
    let res = human_session::Entity::update_many()
        .col_expr(human_session::Column::EndedAt, Expr::value(now))
        .filter(human_session::Column::HumanId.eq(human_id))
        .filter(human_session::Column::EndedAt.is_null())
        .filter(human_session::Column::ExpiresAt.gt(now))
        .exec(&tx)
        .await?;
    trail
        .record(
            &tx,
            now,
            trail
                .event(kinds::HUMAN_SESSIONS_REVOKED, now)
                .subject(human_id)
                .detail("count", crate::audit::Detail::Int(res.rows_affected as i64)),
        )
        .await?;
    tx.commit().await?;
    Ok(res.rows_affected)
}

/// Whether `submitted` is this session's CSRF token (constant time).
pub fn csrf_ok(signed_in: &SignedIn, submitted: &str) -> bool {
    let a = signed_in.csrf.as_bytes();
    let b = submitted.as_bytes();
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `next` if it is a same-origin absolute path (`/x`, not `//host`, `/\host` or a URL), else `/`.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2048
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if ok { next } else { "/" }
}

/// A 303 to the sign-in page, which returns to `next` afterwards.
pub fn login_redirect(next: &str) -> Response {
    let target = format!(
        "/login?next={}",
        url::form_urlencoded::byte_serialize(safe_next(next).as_bytes()).collect::<String>()
    );
    see_other(&target)
}

/// A 303 See Other to a local path.
pub fn see_other(path: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(safe_next(path)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Puts the HTML page headers on a response: the page CSP, `Cache-Control: no-store`,
/// `X-Frame-Options: DENY`.
pub fn html(resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// Renders an askama template as an HTML page with [`html`] headers (500 if rendering fails).
pub fn page(status: StatusCode, template: &impl askama::Template) -> Response {
    match template.render() {
        Ok(body) => html((status, axum::response::Html(body))),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            html((StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        }
    }
}

/// The generic message page (errors, notices).
#[derive(askama::Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// Shown in the header when someone is signed in.
    pub signed_in: Option<&'a str>,
}

/// An error page with `status`.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        &MessagePage {
            title,
            message,
            signed_in: None,
        },
    )
}

/// Records a failed sign-in (batched audit; no state changes).
pub async fn audit_failed_sign_in(state: &AppState, method: &str, who: &str, reason: &str) {
    let now = state.clock.now();
    let e = Event::new(
        kinds::HUMAN_SIGN_IN_FAILED,
        now,
        Actor::new(ActorKind::Anonymous, who.to_string()),
    )
    .detail_str("method", method)
    .reason(reason);
    if let Err(e) = state.audit.record(e).await {
        tracing::warn!(error = %e, "audit of a failed sign-in failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next("/account?x=1"), "/account?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "",
            "/a\nb",
            "/a\\b",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
        let r = login_redirect("/authorize?client_id=a&x=y");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[header::LOCATION],
            "/login?next=%2Fauthorize%3Fclient_id%3Da%26x%3Dy"
        );
        assert_eq!(
            login_redirect("https://evil/").headers()[header::LOCATION],
            "/login?next=%2F"
        );
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=b; __Host-mandate_session=xyz"),
        );
        assert_eq!(session_cookie(&h), Some("xyz"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("mandate_session=xyz"),
        );
        assert_eq!(session_cookie(&h), None);
    }
}
