//! Passkeys (WebAuthn, webauthn-rs): registration at an enrolment link or from the account
//! page, and email-first sign-in. User verification is required in both ceremonies; the
//! ceremony state stays server-side (a `human_ceremonies` row, single use, five minutes);
//! signature counters are checked and stored after every sign-in (a counter that does not move
//! forward is refused as a possible clone).
use super::{Human, PasskeyView};
use crate::app::App;
use crate::audit::{Actor, ActorKind, kinds};
use crate::registry::admin::AdminError;
use crate::store::Store;
use crate::store::entities::{human_ceremony, passkey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
    Webauthn, WebauthnBuilder,
};

/// Seconds a ceremony (a challenge shown to the browser) stays usable.
pub const CEREMONY_TTL_SECS: i64 = 300;
const CEREMONY_PREFIX: &str = "mnd_cer_";

/// The relying party for `issuer`: RP id = the issuer's host, origin = its scheme, host and
/// port. Fails when the host is an IP address (WebAuthn needs a domain; use `localhost`).
pub fn relying_party(issuer: &str) -> Result<Webauthn, String> {
    let url = Url::parse(issuer).map_err(|e| format!("issuer is not a URL: {e}"))?;
    let host = url
        .domain()
        .ok_or_else(|| "the issuer's host is not a domain name".to_string())?
        .to_string();
    let origin = Url::parse(&url.origin().ascii_serialization())
        .map_err(|e| format!("issuer origin: {e}"))?;
    WebauthnBuilder::new(&host, &origin)
        .and_then(|b| b.rp_name("Mandate").build())
        .map_err(|e| format!("webauthn configuration: {e}"))
}

/// Why a passkey ceremony failed. The browser is told only the [`PasskeyError::public`] text.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("passkeys are not available: the issuer's host is not a domain name")]
    Unavailable,
    #[error("unknown, used or expired ceremony")]
    Ceremony,
    #[error("no usable passkey for this address")]
    NoPasskey,
    #[error("the enrolment link is invalid, used or expired")]
    Link,
    #[error("this passkey is already registered")]
    Duplicate,
    #[error("the authenticator's response was refused: {0}")]
    Rejected(String),
    #[error("the person is disabled or unknown")]
    Person,
    #[error(transparent)]
    Store(#[from] AdminError),
}

impl From<crate::store::StoreError> for PasskeyError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Store(AdminError::Store(e))
    }
}

impl From<sea_orm::DbErr> for PasskeyError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(AdminError::from(e))
    }
}

impl PasskeyError {
    /// A short machine-readable reason (audit, logs).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable => "passkeys_unavailable",
            Self::Ceremony => "bad_ceremony",
            Self::NoPasskey => "no_passkey",
            Self::Link => "bad_link",
            Self::Duplicate => "duplicate_passkey",
            Self::Rejected(_) => "assertion_rejected",
            Self::Person => "person_disabled",
            Self::Store(_) => "server_error",
        }
    }

    /// What the browser is told.
    pub fn public(&self) -> String {
        match self {
            Self::Store(_) => "internal error".into(),
            Self::Rejected(_) => "The passkey was not accepted.".into(),
            other => other.to_string(),
        }
    }

    pub fn is_server_error(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

/// The stable WebAuthn user handle of a person (16 bytes of SHA-256 of their id).
pub fn user_handle(human_id: &str) -> Uuid {
    let h = crate::secrets::hash(human_id);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    Uuid::from_bytes(b)
}

fn cred_id_text(pk: &Passkey) -> String {
    let b: &[u8] = pk.cred_id().as_ref();
    URL_SAFE_NO_PAD.encode(b)
}

/// Stores ceremony state; returns the handle the browser sends back.
pub async fn put_ceremony(
    store: &Store,
    now: i64,
    kind: &str,
    human_id: Option<&str>,
    state: &impl Serialize,
) -> Result<String, PasskeyError> {
    let handle = crate::secrets::generate(CEREMONY_PREFIX);
    let state = serde_json::to_string(state)
        .map_err(|e| AdminError::Invalid(format!("ceremony state: {e}")))?;
    // Forget abandoned ceremonies on the way.
    human_ceremony::Entity::delete_many()
        .filter(human_ceremony::Column::ExpiresAt.lte(now))
        .exec(&store.db)
        .await?;
    human_ceremony::ActiveModel {
        id_hash: Set(crate::secrets::hex(&crate::secrets::hash(&handle))),
        kind: Set(kind.to_string()),
        human_id: Set(human_id.map(str::to_string)),
        state: Set(state),
        created_at: Set(now),
        expires_at: Set(now + CEREMONY_TTL_SECS),
    }
    .insert(&store.db)
    .await?;
    Ok(handle)
}

/// Takes (deletes) a ceremony of `kind`: single use. `None` when unknown, of another kind,
/// expired, or already taken.
pub async fn take_ceremony<T: for<'de> Deserialize<'de>>(
    store: &Store,
    now: i64,
    kind: &str,
    handle: &str,
) -> Result<Option<(Option<String>, T)>, PasskeyError> {
    if !crate::secrets::well_formed(CEREMONY_PREFIX, handle) {
        return Ok(None);
    }
    let id = crate::secrets::hex(&crate::secrets::hash(handle));
    let Some(row) = human_ceremony::Entity::find_by_id(id.clone())
        .one(&store.db)
        .await?
    else {
        return Ok(None);
    };
    let taken = human_ceremony::Entity::delete_many()
        .filter(human_ceremony::Column::IdHash.eq(id))
        .exec(&store.db)
        .await?;
    if taken.rows_affected != 1 || row.kind != kind || row.expires_at <= now {
        return Ok(None);
    }
    let state = serde_json::from_str(&row.state)
        .map_err(|e| AdminError::Invalid(format!("ceremony state: {e}")))?;
    Ok(Some((row.human_id, state)))
}

async fn passkeys_of(
    store: &Store,
    human_id: &str,
) -> Result<Vec<(String, Passkey)>, PasskeyError> {
    let rows = passkey::Entity::find()
        .filter(passkey::Column::HumanId.eq(human_id))
        .all(&store.db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|m| match serde_json::from_str::<Passkey>(&m.passkey) {
            Ok(pk) => Some((m.id, pk)),
            Err(e) => {
                tracing::warn!(passkey = %m.id, error = %e, "unreadable stored passkey skipped");
                None
            }
        })
        .collect())
}

#[derive(Serialize, Deserialize)]
struct RegistrationState {
    reg: PasskeyRegistration,
    /// SHA-256 of the enrolment link this ceremony consumes, if any.
    link: Option<String>,
}

/// Starts registering a passkey for `human` (at an enrolment link when `link` is given).
pub async fn start_registration(
    app: &App,
    human: &Human,
    link: Option<&str>,
) -> Result<(String, CreationChallengeResponse), PasskeyError> {
    let wa = app
        .humans
        .webauthn
        .as_ref()
        .ok_or(PasskeyError::Unavailable)?;
    let existing = passkeys_of(&app.store, &human.id)
        .await?
        .into_iter()
        .map(|(_, pk)| pk.cred_id().clone())
        .collect::<Vec<_>>();
    let (ccr, reg) = wa
        .start_passkey_registration(
            user_handle(&human.id),
            &human.email,
            &human.display_name,
            Some(existing).filter(|e| !e.is_empty()),
        )
        .map_err(|e| PasskeyError::Rejected(e.to_string()))?;
    let state = RegistrationState {
        reg,
        link: link.map(|l| crate::secrets::hex(&crate::secrets::hash(l))),
    };
    let handle = put_ceremony(
        &app.store,
        app.clock.now(),
        "passkey_register",
        Some(&human.id),
        &state,
    )
    .await?;
    Ok((handle, ccr))
}

/// Finishes a registration: verifies the attestation (format "none" accepted), stores the
/// passkey under `name`, and uses up the enrolment link when the ceremony started at one.
/// `expect_human`: the signed-in person adding a passkey from the account page; a ceremony
/// started by anyone else is refused before anything is stored.
pub async fn finish_registration(
    app: &App,
    ceremony: &str,
    link: Option<&str>,
    expect_human: Option<&str>,
    name: &str,
    credential: &RegisterPublicKeyCredential,
) -> Result<(Human, PasskeyView), PasskeyError> {
    let wa = app
        .humans
        .webauthn
        .as_ref()
        .ok_or(PasskeyError::Unavailable)?;
    let name = super::check_passkey_name(name)?;
    let now = app.clock.now();
    let Some((Some(human_id), state)) =
        take_ceremony::<RegistrationState>(&app.store, now, "passkey_register", ceremony).await?
    else {
        return Err(PasskeyError::Ceremony);
    };
    let link_hash = link.map(|l| crate::secrets::hex(&crate::secrets::hash(l)));
    if state.link != link_hash || expect_human.is_some_and(|e| e != human_id) {
        return Err(PasskeyError::Ceremony);
    }
    let human = super::active(&app.store, &human_id)
        .await?
        .ok_or(PasskeyError::Person)?;
    let pk = wa
        .finish_passkey_registration(credential, &state.reg)
        .map_err(|e| PasskeyError::Rejected(e.to_string()))?;
    let cred_id = cred_id_text(&pk);
    let json =
        serde_json::to_string(&pk).map_err(|e| AdminError::Invalid(format!("passkey: {e}")))?;
    let tx = app.store.begin().await?;
    if let Some(l) = link
        && !super::use_link(&tx, now, l, &human.id).await?
    {
        return Err(PasskeyError::Link);
    }
    // WebAuthn §7.1 step 22: a credential id registered to anyone already is refused.
    if passkey::Entity::find()
        .filter(passkey::Column::CredentialId.eq(&cred_id))
        .one(&tx)
        .await?
        .is_some()
    {
        return Err(PasskeyError::Duplicate);
    }
    let id = crate::secrets::random_id("pk_");
    passkey::ActiveModel {
        id: Set(id.clone()),
        human_id: Set(human.id.clone()),
        name: Set(name.clone()),
        credential_id: Set(cred_id),
        passkey: Set(json),
        created_at: Set(now),
        last_used_at: Set(None),
    }
    .insert(&tx)
    .await?;
    let trail = app
        .audit
        .trail(Actor::new(ActorKind::Human, human.id.clone()));
    trail
        .record(
            &tx,
            now,
            trail
                .event(kinds::PASSKEY_ADDED, now)
                .subject(&human.id)
                .detail_str("passkey", &id)
                .detail_str(
                    "via",
                    if link.is_some() {
                        "enrolment"
                    } else {
                        "account"
                    },
                ),
        )
        .await?;
    tx.commit().await?;
    Ok((
        human,
        PasskeyView {
            id,
            name,
            created_at: now,
            last_used_at: None,
        },
    ))
}

/// Starts an email-first sign-in: a challenge for the person's passkeys.
pub async fn start_login(
    app: &App,
    email: &str,
) -> Result<(String, RequestChallengeResponse), PasskeyError> {
    let wa = app
        .humans
        .webauthn
        .as_ref()
        .ok_or(PasskeyError::Unavailable)?;
    let human = super::find_by_email(&app.store, email)
        .await?
        .filter(super::HumanRecord::active)
        .ok_or(PasskeyError::NoPasskey)?
        .human;
    let creds: Vec<Passkey> = passkeys_of(&app.store, &human.id)
        .await?
        .into_iter()
        .map(|(_, pk)| pk)
        .collect();
    if creds.is_empty() {
        return Err(PasskeyError::NoPasskey);
    }
    let (rcr, auth) = wa
        .start_passkey_authentication(&creds)
        .map_err(|e| PasskeyError::Rejected(e.to_string()))?;
    let handle = put_ceremony(
        &app.store,
        app.clock.now(),
        "passkey_login",
        Some(&human.id),
        &auth,
    )
    .await?;
    Ok((handle, rcr))
}

/// Finishes a sign-in: the assertion must come from one of this person's passkeys, with user
/// verification, and a signature counter above the stored one (when the authenticator keeps
/// one). Returns the person; the caller starts the browser session.
pub async fn finish_login(
    app: &App,
    ceremony: &str,
    credential: &PublicKeyCredential,
) -> Result<Human, PasskeyError> {
    let now = app.clock.now();
    let Some((Some(human_id), auth)) =
        take_ceremony::<PasskeyAuthentication>(&app.store, now, "passkey_login", ceremony).await?
    else {
        return Err(PasskeyError::Ceremony);
    };
    finish_assertion(app, &human_id, &auth, credential).await
}

/// Starts an assertion by one of `human_id`'s passkeys (user verification required); the
/// caller stores the returned state in a ceremony of its own kind.
pub async fn start_assertion(
    app: &App,
    human_id: &str,
) -> Result<(RequestChallengeResponse, PasskeyAuthentication), PasskeyError> {
    let wa = app
        .humans
        .webauthn
        .as_ref()
        .ok_or(PasskeyError::Unavailable)?;
    let creds: Vec<Passkey> = passkeys_of(&app.store, human_id)
        .await?
        .into_iter()
        .map(|(_, pk)| pk)
        .collect();
    if creds.is_empty() {
        return Err(PasskeyError::NoPasskey);
    }
    wa.start_passkey_authentication(&creds)
        .map_err(|e| PasskeyError::Rejected(e.to_string()))
}

/// Verifies an assertion against the ceremony state `auth` taken for `human_id`: one of their
/// passkeys, user verification, a signature counter above the stored one; updates the counter.
pub async fn finish_assertion(
    app: &App,
    human_id: &str,
    auth: &PasskeyAuthentication,
    credential: &PublicKeyCredential,
) -> Result<Human, PasskeyError> {
    let wa = app
        .humans
        .webauthn
        .as_ref()
        .ok_or(PasskeyError::Unavailable)?;
    let now = app.clock.now();
    // The ceremony state holds the counters as they were at its start; the stored ones may
    // have moved since (another sign-in in between), so check against the stored value too.
    let res = wa
        .finish_passkey_authentication(credential, auth)
        .map_err(|e| PasskeyError::Rejected(e.to_string()))?;
    if !res.user_verified() {
        return Err(PasskeyError::Rejected("user not verified".into()));
    }
    let human = super::active(&app.store, human_id)
        .await?
        .ok_or(PasskeyError::Person)?;
    let cred_bytes: &[u8] = res.cred_id().as_ref();
    let cred_id = URL_SAFE_NO_PAD.encode(cred_bytes);
    let tx = app.store.begin().await?;
    let row = passkey::Entity::find()
        .filter(passkey::Column::CredentialId.eq(&cred_id))
        .filter(passkey::Column::HumanId.eq(&human.id))
        .one(&tx)
        .await?
        .ok_or_else(|| PasskeyError::Rejected("passkey removed".into()))?;
    let mut pk: Passkey = serde_json::from_str(&row.passkey)
        .map_err(|e| AdminError::Invalid(format!("stored passkey: {e}")))?;
    let stored_counter = serde_json::to_value(&pk)
        .ok()
        .and_then(|v| {
            v.pointer("/cred/counter")
                .and_then(serde_json::Value::as_u64)
        })
        .unwrap_or(0);
    if (res.counter() > 0 || stored_counter > 0) && u64::from(res.counter()) <= stored_counter {
        return Err(PasskeyError::Rejected(format!(
            "signature counter {} not above stored {stored_counter}: possible cloned authenticator",
            res.counter()
        )));
    }
    pk.update_credential(&res);
    let json =
        serde_json::to_string(&pk).map_err(|e| AdminError::Invalid(format!("passkey: {e}")))?;
    let mut am: passkey::ActiveModel = row.into();
    am.passkey = Set(json);
    am.last_used_at = Set(Some(now));
    am.update(&tx).await?;
    tx.commit().await?;
    Ok(human)
}

/// Tells an assertion's claimed credential apart for the audit record (never key material).
pub fn credential_fingerprint(credential: &PublicKeyCredential) -> String {
    crate::secrets::fingerprint(&credential.id)
}
