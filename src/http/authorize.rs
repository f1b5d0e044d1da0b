//! The authorization endpoint (`GET`/`POST /authorize`), the consent form
//! (`POST /authorize/consent`), dynamic client registration (`/register`) and the consents
//! admin API. Thin: the decisions are in `crate::oauth::authorize` and `crate::clients`.
use super::admin::AdminCaller;
use crate::app::AppState;
use crate::audit::Actor;
use crate::clients::registration::RegistrationError;
use crate::humans::web::{self as humans_web, SignedIn};
use crate::oauth::Params;
use crate::oauth::authorize::{
    AuthRequest, AuthorizeError, ErrorRedirect, Person, Prompt, ToolDecision,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/authorize", get(authorize).post(authorize))
        .route("/authorize/consent", post(consent))
        .route("/register", post(register))
        .route(
            "/register/{client_id}",
            get(read_registration).delete(delete_registration),
        )
}

/// Admin API routes (under `/admin/v1`).
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/consents", get(list_consents))
        .route("/consents/{id}", axum::routing::delete(revoke_consent))
}

/// The parameters of an authorization request that the consent form carries back.
const REQUEST_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "prompt",
];

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    detail: &'a str,
}

#[derive(askama::Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    signed_in: &'a str,
    client_name: &'a str,
    client_id: &'a str,
    /// The host serving the client's metadata document (CIMD clients).
    document_host: Option<String>,
    redirect_host: String,
    /// Every redirect URI is on this machine (CIMD §Security: warn).
    localhost_only: bool,
    server_name: &'a str,
    server_uri: &'a str,
    tools: &'a [ToolDecision],
    any_permitted: bool,
    hidden: Vec<(String, String)>,
    csrf: &'a str,
}

fn error_page(status: u16, title: &str, detail: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    humans_web::page(status, &ErrorPage { title, detail })
}

/// A redirect to the client (the authorization response).
fn redirect(to: &str, status: StatusCode) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => {
            let mut resp = status.into_response();
            let h = resp.headers_mut();
            h.insert(header::LOCATION, v);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(_) => error_page(400, "Bad redirect URI", "The redirect URI cannot be used."),
    }
}

fn redirect_error(app: &AppState, e: &ErrorRedirect, status: StatusCode) -> Response {
    redirect(&app.error_redirect(e), status)
}

fn fail(req: &AuthRequest, error: &'static str, description: &str) -> ErrorRedirect {
    ErrorRedirect {
        redirect_uri: req.redirect_uri.clone(),
        error,
        description: description.to_string(),
        state: req.state.clone(),
    }
}

/// The `form-action` sources of the consent page: itself, and the client's redirect target,
/// since the approval answers with a redirect there (browsers apply `form-action` to it).
fn consent_csp(redirect_uri: &str) -> String {
    let target = url::Url::parse(redirect_uri)
        .ok()
        .map(|u| match u.scheme() {
            "http" | "https" => u.origin().ascii_serialization(),
            s => format!("{s}:"),
        })
        .filter(|t| {
            t.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        })
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         form-action 'self' {target}; frame-ancestors 'none'; base-uri 'none'"
    )
}

fn redirect_host(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) => match u.host_str() {
            Some(h) => match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            },
            None => format!("{}: (an application on your device)", u.scheme()),
        },
        Err(_) => uri.to_string(),
    }
}

/// The query or form parameters of an authorization request.
async fn request_params(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, Response> {
    if method == Method::POST {
        super::form_body(headers, body, limit)
            .await
            .map(|b| b.to_vec())
            .map_err(|_| error_page(400, "Bad request", "The form could not be read."))
    } else {
        Ok(uri.query().unwrap_or("").as_bytes().to_vec())
    }
}

/// The development auto-approve person (config `dev_auto_approve_email`), created if needed.
async fn dev_person(app: &AppState, email: &str) -> Option<(crate::humans::Human, HeaderValue)> {
    tracing::warn!(
        email,
        "DEVELOPMENT MODE: dev_auto_approve_email signs this person in and approves consent \
         without asking anyone"
    );
    let now = app.clock.now();
    let human = match crate::humans::find_by_email(&app.store, email).await {
        Ok(Some(r)) if r.active() => r.human,
        Ok(Some(_)) => return None,
        Ok(None) => {
            let trail = app.audit.trail(Actor::system());
            crate::humans::create(
                &app.store,
                &trail,
                now,
                email,
                "Development user",
                &[crate::humans::Role::Viewer],
            )
            .await
            .ok()?
        }
        Err(e) => {
            tracing::warn!(error = %e, "dev auto-approve: reading the person failed");
            return None;
        }
    };
    let cookie = humans_web::start_session(app, &human.id, "dev_auto_approve")
        .await
        .ok()?;
    Some((human, cookie))
}

async fn authorize(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let raw = match request_params(&method, &uri, &headers, body, app.config.max_body_bytes).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let p = match Params::parse(&raw) {
        Ok(p) => p,
        Err(e) => {
            return error_page(
                400,
                "Bad authorization request",
                e.description().unwrap_or("The request is malformed."),
            );
        }
    };
    let req = match app.authorization_request(&p).await {
        Ok(r) => r,
        Err(AuthorizeError::Page {
            status,
            title,
            detail,
        }) => return error_page(status, &title, &detail),
        Err(AuthorizeError::Redirect(e)) => return redirect_error(&app, &e, StatusCode::FOUND),
    };
    let mut set_cookie = None;
    let signed_in = humans_web::current(&app, &headers).await;
    let (person, csrf, auto) = match (&signed_in, &app.config.dev_auto_approve_email) {
        (_, Some(email)) => match dev_person(&app, email).await {
            Some((h, cookie)) => {
                set_cookie = Some(cookie);
                (Person::from(&h), String::new(), true)
            }
            None => {
                return error_page(
                    503,
                    "Temporarily unavailable",
                    "The development person could not be signed in.",
                );
            }
        },
        (Some(s), None) => (Person::from(&s.human), s.csrf.clone(), false),
        (None, None) => {
            if req.prompt == Prompt::None {
                return redirect_error(
                    &app,
                    &fail(&req, "login_required", "nobody is signed in"),
                    StatusCode::FOUND,
                );
            }
            let back = format!("/authorize?{}", String::from_utf8_lossy(&raw));
            return humans_web::login_redirect(&back);
        }
    };
    let decided = match app.person_scopes(
        &req.client,
        &req.server,
        &person,
        req.scope.as_deref(),
        Some(peer.ip()),
    ) {
        Ok(d) => d,
        Err(e) => {
            return redirect_error(
                &app,
                &fail(&req, e.code(), e.description().unwrap_or("")),
                StatusCode::FOUND,
            );
        }
    };
    let finish = |resp: Response| {
        let mut resp = resp;
        if let Some(c) = &set_cookie {
            resp.headers_mut().insert(header::SET_COOKIE, c.clone());
        }
        resp
    };
    if auto {
        if decided.granted.is_empty() {
            return finish(redirect_error(
                &app,
                &fail(
                    &req,
                    "invalid_scope",
                    "policy permits none of the requested tools",
                ),
                StatusCode::FOUND,
            ));
        }
        tracing::warn!(
            client_id = %req.client.client_id,
            resource = %req.server.resource,
            "DEVELOPMENT MODE: consent approved automatically (dev_auto_approve_email)"
        );
        return finish(
            approve(
                &app,
                &req,
                &person,
                &decided.granted,
                true,
                StatusCode::FOUND,
            )
            .await,
        );
    }
    if req.prompt != Prompt::Consent && !decided.granted.is_empty() {
        match app.consent_on_file(&req, &person, &decided.granted).await {
            Ok(true) => {
                return approve(
                    &app,
                    &req,
                    &person,
                    &decided.granted,
                    false,
                    StatusCode::FOUND,
                )
                .await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading consent failed");
                return redirect_error(
                    &app,
                    &fail(&req, "temporarily_unavailable", "try again shortly"),
                    StatusCode::FOUND,
                );
            }
        }
    }
    if req.prompt == Prompt::None {
        return redirect_error(
            &app,
            &fail(&req, "consent_required", "the person has not consented"),
            StatusCode::FOUND,
        );
    }
    let hidden: Vec<(String, String)> = url::form_urlencoded::parse(&raw)
        .filter(|(k, v)| REQUEST_PARAMS.contains(&k.as_ref()) && !v.is_empty() && k != "prompt")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let localhost_only = req.client.meta.redirect_uris.iter().all(|r| {
        url::Url::parse(r)
            .ok()
            .and_then(|u| u.host().map(|h| crate::clients::is_loopback_host(&h)))
            .unwrap_or(false)
    });
    let page = ConsentPage {
        signed_in: &person.email,
        client_name: if req.client.meta.client_name.is_empty() {
            "An unnamed application"
        } else {
            &req.client.meta.client_name
        },
        client_id: &req.client.client_id,
        document_host: req.client.document_host(),
        redirect_host: redirect_host(&req.redirect_uri),
        localhost_only,
        server_name: &req.server.name,
        server_uri: &req.server.resource,
        tools: &decided.tools,
        any_permitted: !decided.granted.is_empty(),
        hidden,
        csrf: &csrf,
    };
    let mut resp = humans_web::page(StatusCode::OK, &page);
    if let Ok(v) = HeaderValue::from_str(&consent_csp(&req.redirect_uri)) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

async fn approve(
    app: &AppState,
    req: &AuthRequest,
    person: &Person,
    granted: &[String],
    remember: bool,
    status: StatusCode,
) -> Response {
    match app.approve(req, person, granted, remember).await {
        Ok(to) => redirect(&to, status),
        Err(e) => {
            tracing::warn!(error = %e, "issuing an authorization code failed");
            redirect_error(
                app,
                &fail(req, "temporarily_unavailable", "try again shortly"),
                status,
            )
        }
    }
}

/// `POST /authorize/consent`: the person's answer on the consent page.
async fn consent(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let raw = match super::form_body(&headers, body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return error_page(400, "Bad request", "The form could not be read."),
    };
    let Ok(p) = Params::parse(&raw) else {
        return error_page(400, "Bad request", "The form could not be read.");
    };
    let Some(SignedIn { human, csrf, .. }) = humans_web::current(&app, &headers).await else {
        return error_page(
            403,
            "Not signed in",
            "Your session has ended. Start again from the application.",
        );
    };
    let signed = SignedIn {
        human: human.clone(),
        session_id: String::new(),
        csrf,
    };
    if !humans_web::csrf_ok(&signed, p.get("csrf").unwrap_or("")) {
        return error_page(
            403,
            "Form expired or forged",
            "This form did not come from your current session. Start again from the \
             application.",
        );
    }
    let req = match app.authorization_request(&p).await {
        Ok(r) => r,
        Err(AuthorizeError::Page {
            status,
            title,
            detail,
        }) => return error_page(status, &title, &detail),
        Err(AuthorizeError::Redirect(e)) => {
            return redirect_error(&app, &e, StatusCode::SEE_OTHER);
        }
    };
    let person = Person::from(&human);
    if p.get("decision") != Some("approve") {
        return redirect_error(
            &app,
            &fail(&req, "access_denied", "the person declined"),
            StatusCode::SEE_OTHER,
        );
    }
    let decided = match app.person_scopes(
        &req.client,
        &req.server,
        &person,
        req.scope.as_deref(),
        Some(peer.ip()),
    ) {
        Ok(d) if !d.granted.is_empty() => d,
        Ok(_) => {
            return redirect_error(
                &app,
                &fail(
                    &req,
                    "invalid_scope",
                    "policy permits none of the requested tools",
                ),
                StatusCode::SEE_OTHER,
            );
        }
        Err(e) => {
            return redirect_error(
                &app,
                &fail(&req, e.code(), e.description().unwrap_or("")),
                StatusCode::SEE_OTHER,
            );
        }
    };
    approve(
        &app,
        &req,
        &person,
        &decided.granted,
        true,
        StatusCode::SEE_OTHER,
    )
    .await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
}

fn registration_error(e: RegistrationError) -> Response {
    let (status, body) = match e {
        RegistrationError::Invalid(c) => (
            StatusCode::BAD_REQUEST,
            json!({"error": c.code(), "error_description": c.message()}),
        ),
        RegistrationError::Unauthorized(why) => (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_token", "error_description": why}),
        ),
        RegistrationError::Disabled => (
            StatusCode::FORBIDDEN,
            json!({"error": "access_denied", "error_description":
                "dynamic client registration is off here; publish a Client ID Metadata Document"}),
        ),
        RegistrationError::NotFound => (
            StatusCode::NOT_FOUND,
            json!({"error": "invalid_client", "error_description": "no such client"}),
        ),
        RegistrationError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "temporarily_unavailable"}),
        ),
    };
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    resp
}

/// `POST /register` (RFC 7591).
async fn register(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        return registration_error(RegistrationError::Invalid(
            crate::clients::ClientError::InvalidMetadata(
                "Content-Type must be application/json".into(),
            ),
        ));
    }
    let Ok(bytes) = axum::body::to_bytes(body, app.config.max_body_bytes).await else {
        return registration_error(RegistrationError::Invalid(
            crate::clients::ClientError::InvalidMetadata("the body is too large".into()),
        ));
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return registration_error(RegistrationError::Invalid(
            crate::clients::ClientError::InvalidMetadata("the body is not JSON".into()),
        ));
    };
    match app.register_client(bearer(&headers), &v).await {
        Ok(answer) => {
            let mut resp = (StatusCode::CREATED, axum::Json(answer)).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => registration_error(e),
    }
}

async fn read_registration(
    State(app): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match app.read_registration(&client_id, bearer(&headers)).await {
        Ok(v) => super::no_store_json(v),
        Err(e) => registration_error(e),
    }
}

async fn delete_registration(
    State(app): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match app.delete_registration(&client_id, bearer(&headers)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => registration_error(e),
    }
}

#[derive(serde::Deserialize)]
struct ConsentFilter {
    human: Option<String>,
}

async fn list_consents(
    _: AdminCaller,
    State(app): State<AppState>,
    Query(f): Query<ConsentFilter>,
) -> Response {
    match app.list_consents(f.human.as_deref()).await {
        Ok(list) => axum::Json(json!({ "consents": list })).into_response(),
        Err(e) => admin_error(e),
    }
}

async fn revoke_consent(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    match app.revoke_consent(caller.actor(), &id).await {
        Ok(c) => axum::Json(json!({ "revoked": c })).into_response(),
        Err(e) => admin_error(e),
    }
}

fn admin_error(e: crate::registry::admin::AdminError) -> Response {
    use crate::registry::admin::AdminError;
    let (status, code) = match &e {
        AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AdminError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        AdminError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    };
    let description = if status.is_server_error() {
        tracing::error!(error = %e, "consent admin request failed");
        "internal error".to_string()
    } else {
        e.to_string()
    };
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_csp_names_the_redirect_target() {
        assert!(
            consent_csp("https://app.example/cb?x=1")
                .contains("form-action 'self' https://app.example;")
        );
        assert!(consent_csp("http://127.0.0.1:3000/cb").contains("'self' http://127.0.0.1:3000;"));
        assert!(consent_csp("com.example.app:/cb").contains("'self' com.example.app:;"));
    }
}
