//! Repositories for registered clients, consents, authorization codes and refresh token
//! families (migration m0006). Secrets are looked up by their SHA-256 (hex); single use is a
//! conditional update (`... WHERE used_at IS NULL`), so two racing presentations cannot both
//! win.
use super::{ClientMetadata, ClientSource, OAuthClient};
use crate::store::{Store, StoreError};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, sea_query::Expr,
};

pub mod oauth_client {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_clients")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub client_id: String,
        pub metadata: String,
        pub secret_hash: Option<String>,
        pub registration_token_hash: String,
        pub created_at: i64,
        pub deleted_at: Option<i64>,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod consent {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "consents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub human_id: String,
        pub client_id: String,
        pub resource: String,
        pub scope: String,
        pub granted_at: i64,
        pub revoked_at: Option<i64>,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod authorization_code {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "authorization_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code_hash: String,
        pub client_id: String,
        pub redirect_uri: String,
        pub code_challenge: String,
        pub resource: String,
        pub scope: String,
        pub human_id: String,
        pub expires_at: i64,
        pub used_at: Option<i64>,
        pub family_id: Option<String>,
        pub created_at: i64,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_family {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_families")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub client_id: String,
        pub human_id: String,
        pub resource: String,
        pub scope: String,
        pub sid: String,
        pub created_at: i64,
        pub expires_at: i64,
        pub revoked_at: Option<i64>,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_token {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub family_id: String,
        pub created_at: i64,
        pub used_at: Option<i64>,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// SHA-256 hex of a secret, as stored.
pub fn secret_key(secret: &str) -> String {
    crate::secrets::hex(&crate::secrets::hash(secret))
}

fn client_from_row(m: oauth_client::Model) -> Option<OAuthClient> {
    let meta: ClientMetadata = serde_json::from_str(&m.metadata).ok()?;
    Some(OAuthClient {
        client_id: m.client_id,
        source: ClientSource::Registered,
        meta,
        secret_hash: m
            .secret_hash
            .as_deref()
            .and_then(crate::secrets::parse_hex32),
    })
}

/// Repositories over the main [`Store`].
pub struct ClientStore<'a>(pub &'a Store);

impl ClientStore<'_> {
    // --- registered clients ----------------------------------------------------------------

    pub async fn insert_client(
        &self,
        client_id: &str,
        meta: &ClientMetadata,
        secret: Option<&str>,
        registration_token: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let metadata = serde_json::to_string(meta)
            .map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(e.to_string())))?;
        oauth_client::ActiveModel {
            client_id: Set(client_id.to_string()),
            metadata: Set(metadata),
            secret_hash: Set(secret.map(secret_key)),
            registration_token_hash: Set(secret_key(registration_token)),
            created_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&self.0.db)
        .await?;
        Ok(())
    }

    /// A registered client that has not been deleted.
    pub async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        Ok(oauth_client::Entity::find_by_id(client_id)
            .filter(oauth_client::Column::DeletedAt.is_null())
            .one(&self.0.db)
            .await?
            .and_then(client_from_row))
    }

    /// The registration row, with the registration token hash (RFC 7592 access).
    pub async fn client_row(
        &self,
        client_id: &str,
    ) -> Result<Option<oauth_client::Model>, StoreError> {
        Ok(oauth_client::Entity::find_by_id(client_id)
            .filter(oauth_client::Column::DeletedAt.is_null())
            .one(&self.0.db)
            .await?)
    }

    pub async fn list_clients(&self) -> Result<Vec<OAuthClient>, StoreError> {
        Ok(oauth_client::Entity::find()
            .filter(oauth_client::Column::DeletedAt.is_null())
            .order_by_asc(oauth_client::Column::CreatedAt)
            .all(&self.0.db)
            .await?
            .into_iter()
            .filter_map(client_from_row)
            .collect())
    }

    pub async fn delete_client(&self, client_id: &str, now: i64) -> Result<bool, StoreError> {
        let r = oauth_client::Entity::update_many()
            .col_expr(oauth_client::Column::DeletedAt, Expr::value(now))
            .filter(oauth_client::Column::ClientId.eq(client_id))
            .filter(oauth_client::Column::DeletedAt.is_null())
            .exec(&self.0.db)
            .await?;
        Ok(r.rows_affected > 0)
    }

    // --- consents --------------------------------------------------------------------------

    /// The live consent of `human` for `client` on `resource`.
    pub async fn consent(
        &self,
        human: &str,
        client: &str,
        resource: &str,
    ) -> Result<Option<consent::Model>, StoreError> {
        Ok(consent::Entity::find()
            .filter(consent::Column::HumanId.eq(human))
            .filter(consent::Column::ClientId.eq(client))
            .filter(consent::Column::Resource.eq(resource))
            .filter(consent::Column::RevokedAt.is_null())
            .order_by_desc(consent::Column::GrantedAt)
            .one(&self.0.db)
            .await?)
    }

    /// Records consent (replacing an earlier live one for the same client and resource).
    pub async fn grant_consent(
        &self,
        human: &str,
        client: &str,
        resource: &str,
        scope: &str,
        now: i64,
    ) -> Result<consent::Model, StoreError> {
        let tx = self.0.begin().await?;
        consent::Entity::update_many()
            .col_expr(consent::Column::RevokedAt, Expr::value(now))
            .filter(consent::Column::HumanId.eq(human))
            .filter(consent::Column::ClientId.eq(client))
            .filter(consent::Column::Resource.eq(resource))
            .filter(consent::Column::RevokedAt.is_null())
            .exec(&tx)
            .await?;
        let m = consent::ActiveModel {
            id: Set(crate::secrets::random_id("cns_")),
            human_id: Set(human.to_string()),
            client_id: Set(client.to_string()),
            resource: Set(resource.to_string()),
            scope: Set(scope.to_string()),
            granted_at: Set(now),
            revoked_at: Set(None),
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        Ok(m)
    }

    /// Live consents, for one person or everyone.
    pub async fn list_consents(
        &self,
        human: Option<&str>,
    ) -> Result<Vec<consent::Model>, StoreError> {
        let mut q = consent::Entity::find().filter(consent::Column::RevokedAt.is_null());
        if let Some(h) = human {
            q = q.filter(consent::Column::HumanId.eq(h));
        }
        Ok(q.order_by_asc(consent::Column::GrantedAt)
            .all(&self.0.db)
            .await?)
    }

    /// Marks a consent revoked; returns it if it was live.
    pub async fn revoke_consent(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<consent::Model>, StoreError> {
        let Some(m) = consent::Entity::find_by_id(id)
            .filter(consent::Column::RevokedAt.is_null())
            .one(&self.0.db)
            .await?
        else {
            return Ok(None);
        };
        let r = consent::Entity::update_many()
            .col_expr(consent::Column::RevokedAt, Expr::value(now))
            .filter(consent::Column::Id.eq(id))
            .filter(consent::Column::RevokedAt.is_null())
            .exec(&self.0.db)
            .await?;
        Ok((r.rows_affected > 0).then_some(m))
    }

    // --- authorization codes ---------------------------------------------------------------

    pub async fn insert_code(&self, m: authorization_code::Model) -> Result<(), StoreError> {
        authorization_code::ActiveModel {
            code_hash: Set(m.code_hash),
            client_id: Set(m.client_id),
            redirect_uri: Set(m.redirect_uri),
            code_challenge: Set(m.code_challenge),
            resource: Set(m.resource),
            scope: Set(m.scope),
            human_id: Set(m.human_id),
            expires_at: Set(m.expires_at),
            used_at: Set(None),
            family_id: Set(None),
            created_at: Set(m.created_at),
        }
        .insert(&self.0.db)
        .await?;
        Ok(())
    }

    pub async fn code(&self, code: &str) -> Result<Option<authorization_code::Model>, StoreError> {
        Ok(authorization_code::Entity::find_by_id(secret_key(code))
            .one(&self.0.db)
            .await?)
    }

    /// Uses a code; false when it was already used (a replay or a race lost).
    pub async fn consume_code(&self, code_hash: &str, now: i64) -> Result<bool, StoreError> {
        let r = authorization_code::Entity::update_many()
            .col_expr(authorization_code::Column::UsedAt, Expr::value(now))
            .filter(authorization_code::Column::CodeHash.eq(code_hash))
            .filter(authorization_code::Column::UsedAt.is_null())
            .exec(&self.0.db)
            .await?;
        Ok(r.rows_affected == 1)
    }

    /// Notes the family a code's tokens belong to (for revocation on replay).
    pub async fn link_code(&self, code_hash: &str, family: &str) -> Result<(), StoreError> {
        authorization_code::Entity::update_many()
            .col_expr(authorization_code::Column::FamilyId, Expr::value(family))
            .filter(authorization_code::Column::CodeHash.eq(code_hash))
            .exec(&self.0.db)
            .await?;
        Ok(())
    }

    /// Deletes codes expired more than an hour ago (kept that long to recognise replays).
    pub async fn prune_codes(&self, now: i64) -> Result<u64, StoreError> {
        Ok(authorization_code::Entity::delete_many()
            .filter(authorization_code::Column::ExpiresAt.lt(now - 3600))
            .exec(&self.0.db)
            .await?
            .rows_affected)
    }

    // --- refresh token families --------------------------------------------------------------

    pub async fn insert_family(&self, m: refresh_family::Model) -> Result<(), StoreError> {
        refresh_family::ActiveModel {
            id: Set(m.id),
            client_id: Set(m.client_id),
            human_id: Set(m.human_id),
            resource: Set(m.resource),
            scope: Set(m.scope),
            sid: Set(m.sid),
            created_at: Set(m.created_at),
            expires_at: Set(m.expires_at),
            revoked_at: Set(None),
        }
        .insert(&self.0.db)
        .await?;
        Ok(())
    }

    pub async fn family(&self, id: &str) -> Result<Option<refresh_family::Model>, StoreError> {
        Ok(refresh_family::Entity::find_by_id(id)
            .one(&self.0.db)
            .await?)
    }

    /// Live families of a client for a person (and resource, when given).
    pub async fn families(
        &self,
        client: Option<&str>,
        human: Option<&str>,
        resource: Option<&str>,
        now: i64,
    ) -> Result<Vec<refresh_family::Model>, StoreError> {
        let mut q = refresh_family::Entity::find()
            .filter(refresh_family::Column::RevokedAt.is_null())
            .filter(refresh_family::Column::ExpiresAt.gt(now));
        if let Some(c) = client {
            q = q.filter(refresh_family::Column::ClientId.eq(c));
        }
        if let Some(h) = human {
            q = q.filter(refresh_family::Column::HumanId.eq(h));
        }
        if let Some(r) = resource {
            q = q.filter(refresh_family::Column::Resource.eq(r));
        }
        Ok(q.all(&self.0.db).await?)
    }

    pub async fn revoke_family(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let r = refresh_family::Entity::update_many()
            .col_expr(refresh_family::Column::RevokedAt, Expr::value(now))
            .filter(refresh_family::Column::Id.eq(id))
            .filter(refresh_family::Column::RevokedAt.is_null())
            .exec(&self.0.db)
            .await?;
        Ok(r.rows_affected > 0)
    }

    pub async fn insert_refresh(
        &self,
        token: &str,
        family: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        refresh_token::ActiveModel {
            token_hash: Set(secret_key(token)),
            family_id: Set(family.to_string()),
            created_at: Set(now),
            used_at: Set(None),
        }
        .insert(&self.0.db)
        .await?;
        Ok(())
    }

    pub async fn refresh(&self, token: &str) -> Result<Option<refresh_token::Model>, StoreError> {
        Ok(refresh_token::Entity::find_by_id(secret_key(token))
            .one(&self.0.db)
            .await?)
    }

    /// Uses a refresh token; false when it was already used (reuse, or a race lost).
    pub async fn consume_refresh(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        let r = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::TokenHash.eq(hash))
            .filter(refresh_token::Column::UsedAt.is_null())
            .exec(&self.0.db)
            .await?;
        Ok(r.rows_affected == 1)
    }
}
