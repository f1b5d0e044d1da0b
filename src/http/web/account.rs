//! `/account`: who is signed in, their passkeys (add, rename, remove), sign-out.
use super::enrol::Finish;
use super::{field, json_ok, passkey_failure, script_caller, script_json, signed_in_form};
use crate::app::AppState;
use crate::humans::web::{self as hw, SignedIn};
use crate::humans::{self, PasskeyView, passkeys};
use crate::registry::admin::AdminError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account", get(page))
        .route("/account/passkeys/start", post(add_start))
        .route("/account/passkeys/finish", post(add_finish))
        .route("/account/passkeys/{id}/rename", post(rename))
        .route("/account/passkeys/{id}/remove", post(remove))
}

#[derive(askama::Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    who: &'a SignedIn,
    roles: String,
    passkeys: &'a [PasskeyView],
    passkeys_enabled: bool,
}

async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(who) = hw::current(&app, &headers).await else {
        return hw::login_redirect("/account");
    };
    let list = match humans::list_passkeys(&app.store, &who.human.id).await {
        Ok(l) => l,
        Err(e) => return server_error(&e),
    };
    hw::page(
        StatusCode::OK,
        &AccountPage {
            who: &who,
            roles: who
                .human
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            passkeys: &list,
            passkeys_enabled: app.humans.webauthn.is_some(),
        },
    )
}

fn server_error(e: &AdminError) -> Response {
    tracing::error!(error = %e, "account page failed");
    hw::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        "Try again later.",
    )
}

async fn add_start(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let who = match script_caller(&app, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(r) = script_json::<serde_json::Value>(&app, &headers, body).await {
        return r;
    }
    match passkeys::start_registration(&app, &who.human, None).await {
        Ok((ceremony, options)) => json_ok(json!({ "ceremony": ceremony, "options": options })),
        Err(e) => passkey_failure(&e),
    }
}

async fn add_finish(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let who = match script_caller(&app, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let f: Finish = match script_json(&app, &headers, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let name = f.name.as_deref().unwrap_or("Passkey");
    match passkeys::finish_registration(
        &app,
        &f.ceremony,
        None,
        Some(&who.human.id),
        name,
        &f.credential,
    )
    .await
    {
        Ok((_, pk)) => json_ok(json!({ "redirect": "/account", "passkey": pk })),
        Err(e) => passkey_failure(&e),
    }
}

async fn rename(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (who, form) = match signed_in_form(&app, &headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match humans::rename_passkey(
        &app.store,
        &who.human.id,
        &id,
        field(&form, "name").unwrap_or(""),
    )
    .await
    {
        Ok(()) => hw::see_other("/account"),
        Err(AdminError::Invalid(m)) => hw::error_page(StatusCode::BAD_REQUEST, "Not renamed", &m),
        Err(AdminError::NotFound(_)) => {
            hw::error_page(StatusCode::NOT_FOUND, "Not found", "No such passkey.")
        }
        Err(e) => server_error(&e),
    }
}

async fn remove(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (who, _) = match signed_in_form(&app, &headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let trail = app.audit.trail(crate::audit::Actor::new(
        crate::audit::ActorKind::Human,
        who.human.id.clone(),
    ));
    match humans::remove_passkey(&app.store, &trail, app.clock.now(), &who.human.id, &id).await {
        Ok(()) => hw::see_other("/account"),
        Err(AdminError::NotFound(_)) => {
            hw::error_page(StatusCode::NOT_FOUND, "Not found", "No such passkey.")
        }
        Err(e) => server_error(&e),
    }
}
