//! Agent groups (teams and other groupings policies can name).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Agents {
    Table,
    Groups,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Nullable: the previous release, which does not know the column, keeps working.
        m.alter_table(
            Table::alter()
                .table(Agents::Table)
                .add_column(ColumnDef::new(Agents::Groups).text().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Agents::Table)
                .drop_column(Agents::Groups)
                .to_owned(),
        )
        .await
    }
}
