//! Policy versions in the database. The newest version is in force; nothing is ever updated or
//! deleted (a rollback writes a new version with an old text), so the table is the history.
use crate::store::{Store, StoreError, bump_registry_version};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, QuerySelect, Set, TransactionTrait,
};

pub mod policy_version {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "policy_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub source: String,
        pub digest: String,
        pub author: String,
        pub message: String,
        pub rollback_of: Option<i64>,
        pub created_at: i64,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub use policy_version::Model as PolicyVersion;

/// A version as listed in the history (without its text).
#[derive(Clone, Debug, serde::Serialize)]
pub struct VersionSummary {
    pub version: i64,
    pub digest: String,
    pub author: String,
    pub message: String,
    pub rollback_of: Option<i64>,
    pub created_at: i64,
    pub active: bool,
}

/// The version in force.
pub async fn latest<C: ConnectionTrait>(db: &C) -> Result<Option<PolicyVersion>, StoreError> {
    Ok(policy_version::Entity::find()
        .order_by_desc(policy_version::Column::Version)
        .limit(1)
        .one(db)
        .await?)
}

pub async fn get(store: &Store, version: i64) -> Result<Option<PolicyVersion>, StoreError> {
    Ok(policy_version::Entity::find_by_id(version)
        .one(&store.db)
        .await?)
}

/// Every version, newest first.
pub async fn history(store: &Store) -> Result<Vec<VersionSummary>, StoreError> {
    let rows = policy_version::Entity::find()
        .order_by_desc(policy_version::Column::Version)
        .all(&store.db)
        .await?;
    let newest = rows.first().map(|r| r.version);
    Ok(rows
        .into_iter()
        .map(|r| VersionSummary {
            active: Some(r.version) == newest,
            version: r.version,
            digest: r.digest,
            author: r.author,
            message: r.message,
            rollback_of: r.rollback_of,
            created_at: r.created_at,
        })
        .collect())
}

/// What a new version records.
pub struct NewVersion<'a> {
    pub source: &'a str,
    pub author: &'a str,
    pub message: &'a str,
    pub rollback_of: Option<i64>,
    /// Applied although it would lock everything out (the warning).
    pub forced_past: Option<&'a str>,
    pub now: i64,
}

/// Writes the next version, its `policy.applied` audit event and a registry version bump in
/// one transaction, so every node reloads and the record cannot miss a change. Two writers
/// racing for the same number: one fails on the primary key.
pub async fn insert(
    store: &Store,
    v: NewVersion<'_>,
    trail: &crate::audit::Trail,
) -> Result<PolicyVersion, StoreError> {
    use crate::audit::{Detail, kinds};
    let tx = store.db.begin().await?;
    let next = latest(&tx).await?.map_or(1, |m| m.version + 1);
    let model = policy_version::ActiveModel {
        version: Set(next),
        source: Set(v.source.to_string()),
        digest: Set(crate::secrets::hex(&crate::secrets::hash(v.source))),
        author: Set(v.author.chars().take(200).collect()),
        message: Set(v.message.chars().take(500).collect()),
        rollback_of: Set(v.rollback_of),
        created_at: Set(v.now),
    }
    .insert(&tx)
    .await?;
    let mut ev = trail
        .event(kinds::POLICY_APPLIED, v.now)
        .subject(format!("policy_set:{next}"))
        .action(if v.rollback_of.is_some() {
            "rollback"
        } else {
            "apply"
        })
        .detail("version", Detail::Int(next))
        .detail_str("digest", model.digest.clone())
        .detail_str("author", model.author.clone())
        .detail_str("message", model.message.clone());
    if let Some(r) = v.rollback_of {
        ev = ev.detail("rollback_of", Detail::Int(r));
    }
    if let Some(why) = v.forced_past {
        ev = ev.detail_str("forced_past_lockout", why);
    }
    trail.record(&tx, v.now, ev).await?;
    bump_registry_version(&tx).await?;
    tx.commit().await?;
    Ok(model)
}

/// Installs the default policies when no version exists (first start). Another node winning
/// the race is fine.
pub async fn ensure_default(
    store: &Store,
    now: i64,
    trail: &crate::audit::Trail,
) -> Result<(), StoreError> {
    if latest(&store.db).await?.is_some() {
        return Ok(());
    }
    let v = NewVersion {
        source: super::DEFAULT_POLICIES,
        author: "mandate",
        message: "default policies",
        rollback_of: None,
        forced_past: None,
        now,
    };
    if let Err(e) = insert(store, v, trail).await
        && latest(&store.db).await?.is_none()
    {
        return Err(e);
    }
    Ok(())
}
