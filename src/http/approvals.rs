//! `POST /bc-authorize` (OpenID CIBA, poll mode): an agent asks a human to approve one call.
use super::{ErrorResponse, authorization, form_body, no_store_json};
use crate::app::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

pub fn routes() -> Router<AppState> {
    Router::new().route("/bc-authorize", post(bc_authorize))
}

async fn bc_authorize(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = form_body(&headers, body, app.config.max_body_bytes).await?;
        let auth = authorization(&headers)?;
        app.bc_authorize(peer.ip(), auth, &body).await
    }
    .await;
    match result {
        Ok(r) => {
            let resp = no_store_json(&r);
            crate::approvals::notify(app.0.clone(), r.request);
            resp
        }
        Err(e) => ErrorResponse(e).into_response(),
    }
}
