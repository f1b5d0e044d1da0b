//! Policy sets: every version ever applied, newest in force (a rollback is a new version).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PolicyVersions {
    Table,
    Version,
    Source,
    Digest,
    Author,
    Message,
    RollbackOf,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(PolicyVersions::Table)
                .col(
                    ColumnDef::new(PolicyVersions::Version)
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(PolicyVersions::Source).text().not_null())
                .col(ColumnDef::new(PolicyVersions::Digest).string().not_null())
                .col(ColumnDef::new(PolicyVersions::Author).string().not_null())
                .col(ColumnDef::new(PolicyVersions::Message).string().not_null())
                .col(
                    ColumnDef::new(PolicyVersions::RollbackOf)
                        .big_integer()
                        .null(),
                )
                .col(
                    ColumnDef::new(PolicyVersions::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(PolicyVersions::Table).to_owned())
            .await
    }
}
