//! RFC 8414 / OIDC discovery metadata and the JWKS.
use crate::app::AppState;
use crate::oauth::client_auth::ASSERTION_ALGS;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::BTreeSet;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/jwks.json", get(jwks))
}

/// The metadata document: only what is implemented.
pub fn document(app: &crate::app::App) -> Value {
    let iss = &app.issuer;
    let registry = app.registry();
    let mut scopes: BTreeSet<String> = ["tools:read", "tools:write", "tools:execute"]
        .into_iter()
        .map(String::from)
        .collect();
    for s in registry.servers() {
        scopes.extend(s.tools.keys().map(|t| format!("tools:{t}")));
    }
    let secret_methods = ["client_secret_basic", "client_secret_post"];
    let token_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ];
    let mut doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": app.token_endpoint,
        "jwks_uri": format!("{iss}/jwks.json"),
        "introspection_endpoint": format!("{iss}/introspect"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "grant_types_supported": crate::oauth::GRANT_TYPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "prompt_values_supported": ["none", "consent"],
        "token_endpoint_auth_methods_supported": token_methods,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": secret_methods,
        "revocation_endpoint_auth_methods_supported": token_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": scopes,
        // Not registered metadata names: the RFC 8693 token types this server takes and issues.
        "token_exchange_subject_token_types_supported":
            crate::oauth::grants::token_exchange::SUBJECT_TOKEN_TYPES,
        "token_exchange_requested_token_types_supported":
            crate::oauth::grants::token_exchange::REQUESTED_TOKEN_TYPES,
    });
    if app.trust.any(crate::oauth::trust::TrustKind::IdJag) {
        // ID-JAG draft §7.2: only when an identity provider is trusted to issue them.
        doc["authorization_grant_profiles_supported"] =
            json!([crate::oauth::grants::jwt_bearer::ID_JAG_PROFILE]);
    }
    // Step-up (OpenID CIBA poll mode, RFC 9396, RFC 9470): src/approvals/.
    doc["backchannel_authentication_endpoint"] = format!("{iss}/bc-authorize").into();
    doc["backchannel_token_delivery_modes_supported"] = json!(["poll"]);
    doc["backchannel_user_code_parameter_supported"] = false.into();
    doc["authorization_details_types_supported"] = json!([crate::approvals::DETAIL_TYPE]);
    doc["acr_values_supported"] = json!([crate::approvals::ACR]);
    if app.registration_policy() != crate::clients::dcr::RegistrationPolicy::Off {
        doc["registration_endpoint"] = format!("{iss}/register").into();
    }
    doc
}

async fn metadata(State(app): State<AppState>) -> Response {
    let mut resp = axum::Json(document(&app)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    resp
}

async fn jwks(State(app): State<AppState>) -> Response {
    let doc = app
        .registry()
        .keys
        .jwks(app.clock.now(), app.config.access_token_ttl_secs);
    let mut resp = (
        [(header::CONTENT_TYPE, "application/jwk-set+json")],
        doc.to_string(),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    resp
}
