//! Human approval requests (OpenID CIBA, poll mode): one row per `/bc-authorize` call. The
//! `auth_req_id` the agent polls with is stored only as SHA-256 (hex); the public `id` names
//! the request in the approver's pages.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApprovalRequests {
    Table,
    Id,
    AuthReqHash,
    AgentId,
    Resource,
    Scope,
    AuthorizationDetails,
    BindingMessage,
    AcrValues,
    ApproverId,
    Status,
    DenyReason,
    DecidedBy,
    PolicyReasons,
    CreatedAt,
    ExpiresAt,
    DecidedAt,
    LastPolledAt,
    PollInterval,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ApprovalRequests as A;
        m.create_table(
            Table::create()
                .table(A::Table)
                .col(ColumnDef::new(A::Id).string().not_null().primary_key())
                .col(
                    ColumnDef::new(A::AuthReqHash)
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new(A::AgentId).string().not_null())
                .col(ColumnDef::new(A::Resource).string().not_null())
                .col(ColumnDef::new(A::Scope).text().not_null())
                .col(ColumnDef::new(A::AuthorizationDetails).text().not_null())
                .col(ColumnDef::new(A::BindingMessage).text().null())
                .col(ColumnDef::new(A::AcrValues).text().null())
                .col(ColumnDef::new(A::ApproverId).string().null())
                .col(ColumnDef::new(A::Status).string().not_null())
                .col(ColumnDef::new(A::DenyReason).text().null())
                .col(ColumnDef::new(A::DecidedBy).string().null())
                .col(ColumnDef::new(A::PolicyReasons).text().not_null())
                .col(ColumnDef::new(A::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(A::ExpiresAt).big_integer().not_null())
                .col(ColumnDef::new(A::DecidedAt).big_integer().null())
                .col(ColumnDef::new(A::LastPolledAt).big_integer().null())
                .col(ColumnDef::new(A::PollInterval).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_approval_requests_status_expires")
                .table(A::Table)
                .col(A::Status)
                .col(A::ExpiresAt)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ApprovalRequests::Table).to_owned())
            .await?;
        Ok(())
    }
}
