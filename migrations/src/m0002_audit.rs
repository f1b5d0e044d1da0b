//! The audit log: hash-chained events, one chain head per writer stream, and checkpoints of
//! stream heads (kept when old segments are pruned, so the chain stays verifiable).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Pos,
    Id,
    Stream,
    Seq,
    Time,
    Node,
    Kind,
    ActorKind,
    ActorId,
    Subject,
    Agent,
    Server,
    Tool,
    Action,
    Decision,
    Reasons,
    RequestId,
    Source,
    Details,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditStreams {
    Table,
    Stream,
    Seq,
    Hash,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    Id,
    Stream,
    Seq,
    Hash,
    Time,
}

fn text(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).text().not_null().to_owned()
}

fn text_null(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).text().null().to_owned()
}

fn int(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).big_integer().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(AuditEvents::Table)
                .col(
                    ColumnDef::new(AuditEvents::Pos)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(text(AuditEvents::Id))
                .col(text(AuditEvents::Stream))
                .col(int(AuditEvents::Seq))
                .col(int(AuditEvents::Time))
                .col(text(AuditEvents::Node))
                .col(text(AuditEvents::Kind))
                .col(text(AuditEvents::ActorKind))
                .col(text(AuditEvents::ActorId))
                .col(text_null(AuditEvents::Subject))
                .col(text_null(AuditEvents::Agent))
                .col(text_null(AuditEvents::Server))
                .col(text_null(AuditEvents::Tool))
                .col(text_null(AuditEvents::Action))
                .col(text_null(AuditEvents::Decision))
                .col(text(AuditEvents::Reasons))
                .col(text_null(AuditEvents::RequestId))
                .col(text_null(AuditEvents::Source))
                .col(text(AuditEvents::Details))
                .col(text(AuditEvents::PrevHash))
                .col(text(AuditEvents::Hash))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_audit_events_stream_seq")
                .table(AuditEvents::Table)
                .col(AuditEvents::Stream)
                .col(AuditEvents::Seq)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_audit_events_time")
                .table(AuditEvents::Table)
                .col(AuditEvents::Time)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditStreams::Table)
                .col(
                    ColumnDef::new(AuditStreams::Stream)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(int(AuditStreams::Seq))
                .col(text(AuditStreams::Hash))
                .col(int(AuditStreams::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditCheckpoints::Table)
                .col(
                    ColumnDef::new(AuditCheckpoints::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(text(AuditCheckpoints::Stream))
                .col(int(AuditCheckpoints::Seq))
                .col(text(AuditCheckpoints::Hash))
                .col(int(AuditCheckpoints::Time))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_audit_checkpoints_stream_seq")
                .table(AuditCheckpoints::Table)
                .col(AuditCheckpoints::Stream)
                .col(AuditCheckpoints::Seq)
                .unique()
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            AuditCheckpoints::Table.into_iden(),
            AuditStreams::Table.into_iden(),
            AuditEvents::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
