//! The database: sea-orm over SQLite (embedded default) or PostgreSQL. Repositories are plain
//! functions of the connection; nothing here knows HTTP or OAuth.
pub mod entities;

use entities::{
    admin_token, agent, client_secret, mcp_server, registry_state, revocation, session, signing_key,
};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("cannot create data directory {0}: {1}")]
    DataDir(String, std::io::Error),
}

/// The database handle shared by the server and the CLI.
#[derive(Clone, Debug)]
pub struct Store {
    pub db: DatabaseConnection,
}

impl Store {
    /// Connects (creating the SQLite file and its directory when needed). `schema` selects a
    /// PostgreSQL schema (tests use one per test).
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::DataDir(dir.display().to_string(), e))?;
        }
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        if let Some(schema) = schema {
            opts.set_schema_search_path(schema.to_string());
        }
        if url.starts_with("sqlite:") {
            opts.max_connections(8);
        } else {
            opts.max_connections(16);
        }
        let db = Database::connect(opts).await?;
        if url.starts_with("sqlite:") {
            // WAL lets the CLI write while a server reads; the busy timeout makes writers wait.
            db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;")
                .await?;
        }
        Ok(Self { db })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Cheap readiness probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so a
    /// transaction that reads before it writes never fails with a stale snapshot when another
    /// connection (the audit writer) committed in between.
    pub async fn begin(&self) -> Result<DatabaseTransaction, StoreError> {
        if self.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            return Ok(self
                .db
                .begin_with_options(sea_orm::TransactionOptions {
                    sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await?);
        }
        Ok(self.db.begin().await?)
    }

    // --- registry -------------------------------------------------------------------------

    pub async fn registry_version(&self) -> Result<i64, StoreError> {
        Ok(registry_state::Entity::find_by_id(1)
            .one(&self.db)
            .await?
            .map(|m| m.version)
            .unwrap_or(0))
    }

    pub async fn load_registry(&self) -> Result<RegistryRows, StoreError> {
        // One transaction, so the version matches the rows read.
        let tx = self.db.begin().await?;
        let version = registry_state::Entity::find_by_id(1)
            .one(&tx)
            .await?
            .map(|m| m.version)
            .unwrap_or(0);
        let rows = RegistryRows {
            version,
            agents: agent::Entity::find().all(&tx).await?,
            servers: mcp_server::Entity::find().all(&tx).await?,
            secrets: client_secret::Entity::find().all(&tx).await?,
            admin_tokens: admin_token::Entity::find().all(&tx).await?,
            keys: signing_key::Entity::find()
                .order_by_asc(signing_key::Column::ActivatesAt)
                .all(&tx)
                .await?,
            policy: crate::policy::store::latest(&tx).await?,
        };
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn find_agent(&self, id: &str) -> Result<Option<agent::Model>, StoreError> {
        Ok(agent::Entity::find_by_id(id).one(&self.db).await?)
    }

    pub async fn find_server(&self, id: &str) -> Result<Option<mcp_server::Model>, StoreError> {
        Ok(mcp_server::Entity::find_by_id(id).one(&self.db).await?)
    }

    pub async fn find_server_by_resource(
        &self,
        resource: &str,
    ) -> Result<Option<mcp_server::Model>, StoreError> {
        Ok(mcp_server::Entity::find()
            .filter(mcp_server::Column::ResourceUri.eq(resource))
            .one(&self.db)
            .await?)
    }

    pub async fn list_agents(&self) -> Result<Vec<agent::Model>, StoreError> {
        Ok(agent::Entity::find()
            .order_by_asc(agent::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    pub async fn list_servers(&self) -> Result<Vec<mcp_server::Model>, StoreError> {
        Ok(mcp_server::Entity::find()
            .order_by_asc(mcp_server::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    pub async fn list_keys(&self) -> Result<Vec<signing_key::Model>, StoreError> {
        Ok(signing_key::Entity::find()
            .order_by_asc(signing_key::Column::ActivatesAt)
            .all(&self.db)
            .await?)
    }

    // --- revocations ----------------------------------------------------------------------

    /// Unexpired revocations created at or after `since`.
    pub async fn revocations_created_since(
        &self,
        since: i64,
        now: i64,
    ) -> Result<Vec<revocation::Model>, StoreError> {
        Ok(revocation::Entity::find()
            .filter(revocation::Column::CreatedAt.gte(since))
            .filter(revocation::Column::ExpiresAt.gt(now))
            .order_by_asc(revocation::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Every revocation that still matters at `now`, as the domain type.
    pub async fn live_revocations(
        &self,
        now: i64,
    ) -> Result<Vec<crate::sessions::Revocation>, StoreError> {
        Ok(self
            .revocations_created_since(i64::MIN, now)
            .await?
            .into_iter()
            .filter_map(revocation_from_row)
            .collect())
    }

    pub async fn insert_session(
        &self,
        s: &crate::sessions::SessionRecord,
    ) -> Result<(), StoreError> {
        session::ActiveModel {
            id: Set(s.sid.clone()),
            agent_id: Set(s.agent_id.clone()),
            started_at: Set(s.started_at),
            expires_at: Set(s.expires_at),
            idle_secs: Set(s.idle_secs),
            ended_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(())
    }

    /// Sessions not ended and not past their absolute lifetime, newest first.
    pub async fn live_sessions(
        &self,
        now: i64,
        agent: Option<&str>,
    ) -> Result<Vec<crate::sessions::SessionRecord>, StoreError> {
        let mut q = session::Entity::find()
            .filter(session::Column::EndedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(now));
        if let Some(a) = agent {
            q = q.filter(session::Column::AgentId.eq(a));
        }
        Ok(q.order_by_desc(session::Column::StartedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| crate::sessions::SessionRecord {
                sid: m.id,
                agent_id: m.agent_id,
                started_at: m.started_at,
                expires_at: m.expires_at,
                idle_secs: m.idle_secs,
                last_seen: m.started_at,
            })
            .collect())
    }

    pub async fn find_session(&self, sid: &str) -> Result<Option<session::Model>, StoreError> {
        Ok(session::Entity::find_by_id(sid).one(&self.db).await?)
    }

    /// Deletes revocations whose tokens have expired anyway.
    pub async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError> {
        Ok(revocation::Entity::delete_many()
            .filter(revocation::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

/// Bumps the registry version inside a write transaction, so every node reloads.
pub async fn bump_registry_version(tx: &DatabaseTransaction) -> Result<(), StoreError> {
    registry_state::Entity::update_many()
        .col_expr(
            registry_state::Column::Version,
            Expr::col(registry_state::Column::Version).add(1),
        )
        .filter(registry_state::Column::Id.eq(1))
        .exec(tx)
        .await?;
    Ok(())
}

/// Everything a node caches, read in one transaction.
#[derive(Debug, Default)]
pub struct RegistryRows {
    pub version: i64,
    pub agents: Vec<agent::Model>,
    pub servers: Vec<mcp_server::Model>,
    pub secrets: Vec<client_secret::Model>,
    pub admin_tokens: Vec<admin_token::Model>,
    pub keys: Vec<signing_key::Model>,
    /// The policy set in force.
    pub policy: Option<crate::policy::store::PolicyVersion>,
}

/// A revocation row as the domain type (the row's `created_at` is the cutoff).
pub fn revocation_from_row(r: revocation::Model) -> Option<crate::sessions::Revocation> {
    Some(crate::sessions::Revocation {
        kind: crate::sessions::Kind::parse(&r.kind)?,
        value: r.value,
        at: r.created_at,
        until: r.expires_at,
    })
}

/// Inserts a revocation inside a transaction.
pub async fn insert_revocation_tx(
    tx: &DatabaseTransaction,
    r: &crate::sessions::Revocation,
    client_id: Option<&str>,
) -> Result<(), StoreError> {
    revocation::ActiveModel {
        kind: Set(r.kind.as_str().to_string()),
        value: Set(r.value.clone()),
        client_id: Set(client_id.map(str::to_string)),
        expires_at: Set(r.until),
        created_at: Set(r.at),
        ..Default::default()
    }
    .insert(tx)
    .await?;
    Ok(())
}

/// Marks sessions ended: one (`sid`) or all of an agent's.
pub async fn end_sessions_tx(
    tx: &DatabaseTransaction,
    agent: Option<&str>,
    sid: Option<&str>,
    now: i64,
) -> Result<u64, StoreError> {
    let mut q = session::Entity::update_many()
        .col_expr(session::Column::EndedAt, Expr::value(now))
        .filter(session::Column::EndedAt.is_null());
    if let Some(a) = agent {
        q = q.filter(session::Column::AgentId.eq(a));
    }
    if let Some(s) = sid {
        q = q.filter(session::Column::Id.eq(s));
    }
    Ok(q.exec(tx).await?.rows_affected)
}
