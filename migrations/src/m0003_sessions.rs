//! Agent sessions, and per-agent session limits.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    AgentId,
    StartedAt,
    ExpiresAt,
    IdleSecs,
    EndedAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    SessionLifetimeSecs,
    SessionIdleSecs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .col(
                    ColumnDef::new(Sessions::Id)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Sessions::AgentId).string().not_null())
                .col(ColumnDef::new(Sessions::StartedAt).big_integer().not_null())
                .col(ColumnDef::new(Sessions::ExpiresAt).big_integer().not_null())
                .col(ColumnDef::new(Sessions::IdleSecs).big_integer().not_null())
                .col(ColumnDef::new(Sessions::EndedAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_sessions_agent_id")
                .table(Sessions::Table)
                .col(Sessions::AgentId)
                .to_owned(),
        )
        .await?;
        // Nullable columns: the previous release, which does not know them, keeps working.
        m.alter_table(
            Table::alter()
                .table(Agents::Table)
                .add_column(
                    ColumnDef::new(Agents::SessionLifetimeSecs)
                        .big_integer()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Agents::Table)
                .add_column(ColumnDef::new(Agents::SessionIdleSecs).big_integer().null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Sessions::Table).to_owned())
            .await?;
        for col in [Agents::SessionLifetimeSecs, Agents::SessionIdleSecs] {
            m.alter_table(
                Table::alter()
                    .table(Agents::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
