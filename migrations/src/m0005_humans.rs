//! Humans: accounts, browser sessions, enrolment links, passkeys, and short-lived sign-in
//! ceremonies (WebAuthn challenges, upstream OIDC state).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Humans {
    Table,
    Id,
    Email,
    DisplayName,
    Roles,
    CreatedAt,
    DisabledAt,
    OidcSubject,
}

#[derive(DeriveIden)]
enum HumanSessions {
    Table,
    IdHash,
    HumanId,
    Csrf,
    AuthMethod,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum EnrolmentLinks {
    Table,
    TokenHash,
    HumanId,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum Passkeys {
    Table,
    Id,
    HumanId,
    Name,
    CredentialId,
    Passkey,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum HumanCeremonies {
    Table,
    IdHash,
    Kind,
    HumanId,
    State,
    CreatedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Humans::Table)
                .col(ColumnDef::new(Humans::Id).string().not_null().primary_key())
                .col(
                    ColumnDef::new(Humans::Email)
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new(Humans::DisplayName).string().not_null())
                .col(ColumnDef::new(Humans::Roles).string().not_null())
                .col(ColumnDef::new(Humans::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(Humans::DisabledAt).big_integer().null())
                .col(ColumnDef::new(Humans::OidcSubject).string().null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(HumanSessions::Table)
                .col(
                    ColumnDef::new(HumanSessions::IdHash)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(HumanSessions::HumanId).string().not_null())
                .col(ColumnDef::new(HumanSessions::Csrf).string().not_null())
                .col(
                    ColumnDef::new(HumanSessions::AuthMethod)
                        .string()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(HumanSessions::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(HumanSessions::LastSeenAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(HumanSessions::ExpiresAt)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(HumanSessions::EndedAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_human_sessions_human_id")
                .table(HumanSessions::Table)
                .col(HumanSessions::HumanId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(EnrolmentLinks::Table)
                .col(
                    ColumnDef::new(EnrolmentLinks::TokenHash)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(EnrolmentLinks::HumanId).string().not_null())
                .col(
                    ColumnDef::new(EnrolmentLinks::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(EnrolmentLinks::ExpiresAt)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(EnrolmentLinks::UsedAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Passkeys::Table)
                .col(
                    ColumnDef::new(Passkeys::Id)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Passkeys::HumanId).string().not_null())
                .col(ColumnDef::new(Passkeys::Name).string().not_null())
                .col(
                    ColumnDef::new(Passkeys::CredentialId)
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new(Passkeys::Passkey).text().not_null())
                .col(ColumnDef::new(Passkeys::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(Passkeys::LastUsedAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_passkeys_human_id")
                .table(Passkeys::Table)
                .col(Passkeys::HumanId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(HumanCeremonies::Table)
                .col(
                    ColumnDef::new(HumanCeremonies::IdHash)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(HumanCeremonies::Kind).string().not_null())
                .col(ColumnDef::new(HumanCeremonies::HumanId).string().null())
                .col(ColumnDef::new(HumanCeremonies::State).text().not_null())
                .col(
                    ColumnDef::new(HumanCeremonies::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(HumanCeremonies::ExpiresAt)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            HumanCeremonies::Table.into_iden(),
            Passkeys::Table.into_iden(),
            EnrolmentLinks::Table.into_iden(),
            HumanSessions::Table.into_iden(),
            Humans::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
