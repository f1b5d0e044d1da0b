//! Humans: the people who sign in to Mandate (to approve agent actions, own agents,
//! administer). Accounts are created by invitation (`mandate humans invite`), which yields a
//! one-time enrolment link; people sign in with passkeys ([`passkeys`]) or through an upstream
//! OpenID Connect provider ([`oidc`]); the browser session lives in [`web`].
//!
//! Every change is audited in the transaction that makes it.
pub mod oidc;
pub mod passkeys;
pub mod web;

use crate::audit::{Trail, kinds};
use crate::registry::admin::AdminError;
use crate::store::Store;
use crate::store::entities::{enrolment_link, human, human_session, passkey};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};

/// What the humans side of a node keeps in memory: the WebAuthn relying party.
pub struct Humans {
    /// `None` when the issuer's host is not a domain name (passkeys need one).
    pub webauthn: Option<webauthn_rs::Webauthn>,
    /// Sign-in through an upstream OpenID Connect provider, when configured.
    pub oidc: oidc::Upstream,
}

impl std::fmt::Debug for Humans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Humans")
            .field("passkeys", &self.webauthn.is_some())
            .field("oidc", &self.oidc)
            .finish()
    }
}

impl Humans {
    pub fn new(issuer: &str, config: &crate::config::Config) -> Self {
        let webauthn = match passkeys::relying_party(issuer) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::info!(reason = %e, "passkey sign-in disabled");
                None
            }
        };
        Self {
            webauthn,
            oidc: oidc::Upstream::new(config.oidc.clone(), config.request_timeout_secs),
        }
    }
}

/// Prefix of enrolment link tokens.
pub const ENROLMENT_PREFIX: &str = "mnd_enr_";

/// What a person may do in Mandate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Administers Mandate (humans, agents, servers, policies).
    Admin,
    /// Approves agent actions that policy sends to a person.
    Approver,
    /// Reads: audit, agents, sessions.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Approver => "approver",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "admin" => Some(Self::Admin),
            "approver" => Some(Self::Approver),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// Parses a comma-separated list (`admin,approver`); empty or unknown names are refused.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, AdminError> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let r = Self::parse(part).ok_or_else(|| {
                AdminError::Invalid(format!("unknown role {part:?} (admin, approver or viewer)"))
            })?;
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A person, as the rest of Mandate sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Human {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
}

impl Human {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// What policy knows of this person: `Human::"<email>"` with their roles.
    pub fn policy_facts(&self) -> crate::policy::HumanFacts {
        crate::policy::HumanFacts::new(
            self.email.clone(),
            self.roles.iter().map(|r| r.as_str().to_string()),
        )
    }
}

/// A person with their account's bookkeeping, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HumanRecord {
    #[serde(flatten)]
    pub human: Human,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    /// Linked upstream account (`issuer|sub`), if they signed in through OIDC.
    pub oidc_subject: Option<String>,
}

impl HumanRecord {
    pub fn active(&self) -> bool {
        self.disabled_at.is_none()
    }
}

fn from_model(m: human::Model) -> HumanRecord {
    HumanRecord {
        human: Human {
            id: m.id,
            email: m.email,
            display_name: m.display_name,
            // Stored by this module only; an unknown name (a newer release's role) is skipped.
            roles: m.roles.split(',').filter_map(Role::parse).collect(),
        },
        created_at: m.created_at,
        disabled_at: m.disabled_at,
        oidc_subject: m.oidc_subject,
    }
}

/// Lower-cases and checks an email address (one `@`, something each side, no spaces).
pub fn normalize_email(email: &str) -> Result<String, AdminError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split('@').count() == 2
        && e.split('@').all(|p| !p.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(AdminError::Invalid(format!(
            "not an email address: {email:?}"
        )))
    }
}

fn check_name(name: &str) -> Result<String, AdminError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "display name must be 1-200 printable characters".into(),
        ));
    }
    Ok(n.to_string())
}

/// Creates a person. The email must be new.
pub async fn create(
    store: &Store,
    trail: &Trail,
    now: i64,
    email: &str,
    display_name: &str,
    roles: &[Role],
) -> Result<Human, AdminError> {
    let email = normalize_email(email)?;
    let display_name = check_name(display_name)?;
    if roles.is_empty() {
        return Err(AdminError::Invalid("at least one role is required".into()));
    }
    let tx = store.begin().await?;
    if human::Entity::find()
        .filter(human::Column::Email.eq(&email))
        .one(&tx)
        .await?
        .is_some()
    {
        return Err(AdminError::Conflict(format!("{email} already exists")));
    }
    let h = Human {
        id: crate::secrets::random_id("hum_"),
        email,
        display_name,
        roles: roles.to_vec(),
    };
    human::ActiveModel {
        id: Set(h.id.clone()),
        email: Set(h.email.clone()),
        display_name: Set(h.display_name.clone()),
        roles: Set(roles_text(&h.roles)),
        created_at: Set(now),
        disabled_at: Set(None),
        oidc_subject: Set(None),
    }
    .insert(&tx)
    .await?;
    trail
        .record(
            &tx,
            now,
            trail
                .event(kinds::HUMAN_CREATED, now)
                .subject(&h.id)
                .detail_str("email", &h.email)
                .detail(
                    "roles",
                    crate::audit::Detail::List(
                        h.roles.iter().map(|r| r.as_str().to_string()).collect(),
                    ),
                ),
        )
        .await?;
    tx.commit().await?;
    Ok(h)
}

pub async fn find_by_id(store: &Store, id: &str) -> Result<Option<HumanRecord>, AdminError> {
    Ok(human::Entity::find_by_id(id)
        .one(&store.db)
        .await?
        .map(from_model))
}

pub async fn find_by_email(store: &Store, email: &str) -> Result<Option<HumanRecord>, AdminError> {
    let Ok(email) = normalize_email(email) else {
        return Ok(None);
    };
    Ok(human::Entity::find()
        .filter(human::Column::Email.eq(email))
        .one(&store.db)
        .await?
        .map(from_model))
}

/// The person linked to an upstream OIDC account (`issuer|sub`).
pub async fn find_by_oidc_subject(
    store: &Store,
    subject: &str,
) -> Result<Option<HumanRecord>, AdminError> {
    Ok(human::Entity::find()
        .filter(human::Column::OidcSubject.eq(subject))
        .one(&store.db)
        .await?
        .map(from_model))
}

/// A person by id or email.
pub async fn find(store: &Store, id_or_email: &str) -> Result<Option<HumanRecord>, AdminError> {
    if id_or_email.contains('@') {
        find_by_email(store, id_or_email).await
    } else {
        find_by_id(store, id_or_email).await
    }
}

/// An enabled person by id (what a session or a token may stand for).
pub async fn active(store: &Store, id: &str) -> Result<Option<Human>, AdminError> {
    Ok(find_by_id(store, id)
        .await?
        .filter(HumanRecord::active)
        .map(|r| r.human))
}

pub async fn list(store: &Store) -> Result<Vec<HumanRecord>, AdminError> {
    Ok(human::Entity::find()
        .order_by_asc(human::Column::CreatedAt)
        .order_by_asc(human::Column::Email)
        .all(&store.db)
        .await?
        .into_iter()
        .map(from_model)
        .collect())
}

/// Disables a person: they can no longer sign in, their browser sessions end and their unused
/// enrolment links die. Idempotent.
pub async fn disable(
    store: &Store,
    trail: &Trail,
    now: i64,
    id: &str,
) -> Result<HumanRecord, AdminError> {
    let tx = store.begin().await?;
    let m = human::Entity::find_by_id(id)
        .one(&tx)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("human {id}")))?;
    if m.disabled_at.is_none() {
        let mut am: human::ActiveModel = m.clone().into();
        am.disabled_at = Set(Some(now));
        am.update(&tx).await?;
        human_session::Entity::update_many()
            .col_expr(human_session::Column::EndedAt, Expr::value(now))
            .filter(human_session::Column::HumanId.eq(id))
            .filter(human_session::Column::EndedAt.is_null())
            .exec(&tx)
            .await?;
        enrolment_link::Entity::update_many()
            .col_expr(enrolment_link::Column::UsedAt, Expr::value(now))
            .filter(enrolment_link::Column::HumanId.eq(id))
            .filter(enrolment_link::Column::UsedAt.is_null())
            .exec(&tx)
            .await?;
        trail
            .record(
                &tx,
                now,
                trail.event(kinds::HUMAN_DISABLED, now).subject(id),
            )
            .await?;
    }
    tx.commit().await?;
    find_by_id(store, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("human {id}")))
}

/// A freshly issued enrolment link.
#[derive(Debug, Clone, Serialize)]
pub struct Invitation {
    pub human: Human,
    /// Whether the person already existed (a new link to add a passkey, e.g. after a loss).
    pub existing: bool,
    /// `{issuer}/enrol/{token}`: shown once, single use.
    pub link: String,
    pub expires_at: i64,
}

/// Invites a person: creates them (unless they exist) and issues a one-time enrolment link,
/// valid `ttl_secs`. For an existing, enabled person the link lets them add a passkey; their
/// roles are not changed.
#[expect(clippy::too_many_arguments, reason = "a flat invitation request")]
pub async fn invite(
    store: &Store,
    trail: &Trail,
    now: i64,
    issuer: &str,
    email: &str,
    display_name: &str,
    roles: &[Role],
    ttl_secs: i64,
) -> Result<Invitation, AdminError> {
    let (h, existing) = match find_by_email(store, email).await? {
        Some(r) if !r.active() => {
            return Err(AdminError::Conflict(format!(
                "{} is disabled",
                r.human.email
            )));
        }
        Some(r) => (r.human, true),
        None => (
            create(store, trail, now, email, display_name, roles).await?,
            false,
        ),
    };
    let token = crate::secrets::generate(ENROLMENT_PREFIX);
    let expires_at = now + ttl_secs.max(60);
    let tx = store.begin().await?;
    enrolment_link::ActiveModel {
        token_hash: Set(crate::secrets::hex(&crate::secrets::hash(&token))),
        human_id: Set(h.id.clone()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(&tx)
    .await?;
    trail
        .record(
            &tx,
            now,
            trail
                .event(kinds::HUMAN_INVITED, now)
                .subject(&h.id)
                .detail_str("link", crate::secrets::fingerprint(&token))
                .detail("expires_at", crate::audit::Detail::Int(expires_at)),
        )
        .await?;
    tx.commit().await?;
    Ok(Invitation {
        human: h,
        existing,
        link: format!("{}/enrol/{token}", issuer.trim_end_matches('/')),
        expires_at,
    })
}

/// Why an enrolment link is refused (the page says only "invalid or expired").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefused {
    Unknown,
    Expired,
    Used,
    Disabled,
}

impl LinkRefused {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Used => "used",
            Self::Disabled => "disabled",
        }
    }
}

/// The person an enrolment link is for, if it is still usable.
pub async fn check_link(
    store: &Store,
    now: i64,
    token: &str,
) -> Result<Result<Human, LinkRefused>, AdminError> {
    if !crate::secrets::well_formed(ENROLMENT_PREFIX, token) {
        return Ok(Err(LinkRefused::Unknown));
    }
    let hash = crate::secrets::hex(&crate::secrets::hash(token));
    let Some(link) = enrolment_link::Entity::find_by_id(hash)
        .one(&store.db)
        .await?
    else {
        return Ok(Err(LinkRefused::Unknown));
    };
    if link.used_at.is_some() {
        return Ok(Err(LinkRefused::Used));
    }
    if link.expires_at <= now {
        return Ok(Err(LinkRefused::Expired));
    }
    match active(store, &link.human_id).await? {
        Some(h) => Ok(Ok(h)),
        None => Ok(Err(LinkRefused::Disabled)),
    }
}

/// Marks a link used inside `tx`; false when it was used (or expired) meanwhile.
pub async fn use_link(
    tx: &sea_orm::DatabaseTransaction,
    now: i64,
    token: &str,
    human_id: &str,
) -> Result<bool, AdminError> {
    let hash = crate::secrets::hex(&crate::secrets::hash(token));
    let res = enrolment_link::Entity::update_many()
        .col_expr(enrolment_link::Column::UsedAt, Expr::value(now))
        .filter(enrolment_link::Column::TokenHash.eq(hash))
        .filter(enrolment_link::Column::HumanId.eq(human_id))
        .filter(enrolment_link::Column::UsedAt.is_null())
        .filter(enrolment_link::Column::ExpiresAt.gt(now))
        .exec(tx)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Checks a passkey's name (1-100 printable characters).
pub fn check_passkey_name(name: &str) -> Result<String, AdminError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "passkey name must be 1-100 printable characters".into(),
        ));
    }
    Ok(n.to_string())
}

/// A passkey as listed (never its key material).
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

pub async fn list_passkeys(store: &Store, human_id: &str) -> Result<Vec<PasskeyView>, AdminError> {
    Ok(passkey::Entity::find()
        .filter(passkey::Column::HumanId.eq(human_id))
        .order_by_asc(passkey::Column::CreatedAt)
        .all(&store.db)
        .await?
        .into_iter()
        .map(|m| PasskeyView {
            id: m.id,
            name: m.name,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
        })
        .collect())
}

/// Removes one of a person's passkeys.
pub async fn remove_passkey(
    store: &Store,
    trail: &Trail,
    now: i64,
    human_id: &str,
    passkey_id: &str,
) -> Result<(), AdminError> {
    let tx = store.begin().await?;
    let res = passkey::Entity::delete_many()
        .filter(passkey::Column::Id.eq(passkey_id))
        .filter(passkey::Column::HumanId.eq(human_id))
        .exec(&tx)
        .await?;
    if res.rows_affected != 1 {
        return Err(AdminError::NotFound(format!("passkey {passkey_id}")));
    }
    trail
        .record(
            &tx,
            now,
            trail
                .event(kinds::PASSKEY_REMOVED, now)
                .subject(human_id)
                .detail_str("passkey", passkey_id),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Renames one of a person's passkeys.
pub async fn rename_passkey(
    store: &Store,
    human_id: &str,
    passkey_id: &str,
    name: &str,
) -> Result<(), AdminError> {
    let name = check_passkey_name(name)?;
    let res = passkey::Entity::update_many()
        .col_expr(passkey::Column::Name, Expr::value(name))
        .filter(passkey::Column::Id.eq(passkey_id))
        .filter(passkey::Column::HumanId.eq(human_id))
        .exec(&store.db)
        .await?;
    if res.rows_affected != 1 {
        return Err(AdminError::NotFound(format!("passkey {passkey_id}")));
    }
    Ok(())
}

/// Links an upstream OIDC account (`issuer|sub`) to a person at their first OIDC sign-in.
pub async fn link_oidc_subject(store: &Store, id: &str, subject: &str) -> Result<(), AdminError> {
    human::Entity::update_many()
        .col_expr(human::Column::OidcSubject, Expr::value(subject))
        .filter(human::Column::Id.eq(id))
        .exec(&store.db)
        .await?;
    Ok(())
}

/// Sets a person's roles (used by the OIDC claim mapping).
pub async fn set_roles(
    store: &Store,
    trail: &Trail,
    now: i64,
    id: &str,
    roles: &[Role],
) -> Result<(), AdminError> {
    let tx = store.begin().await?;
    human::Entity::update_many()
        .col_expr(human::Column::Roles, Expr::value(roles_text(roles)))
        .filter(human::Column::Id.eq(id))
        .exec(&tx)
        .await?;
    trail
        .record(
            &tx,
            now,
            trail.event(kinds::HUMAN_UPDATED, now).subject(id).detail(
                "roles",
                crate::audit::Detail::List(roles.iter().map(|r| r.as_str().to_string()).collect()),
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        assert_eq!(
            Role::parse_list("viewer,admin,viewer").unwrap(),
            vec![Role::Admin, Role::Viewer]
        );
        assert!(Role::parse_list("root").is_err());
        assert!(Role::parse_list("").is_err());
        assert_eq!(
            serde_json::to_string(&Role::Approver).unwrap(),
            "\"approver\""
        );
        assert_eq!(roles_text(&[Role::Admin, Role::Viewer]), "admin,viewer");
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in ["", "ada", "@x", "a@", "a@b@c", "a b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
