//! Database migrations for Mandate. Each migration stays safe for the previous release running
//! against the new schema; a released migration is never edited.
pub use sea_orm_migration::prelude::*;

mod m0001_registry;
mod m0002_audit;
mod m0003_sessions;
mod m0004_policies;
mod m0005_humans;
mod m0006_clients;
mod m0007_agent_groups;
mod m0009_approvals;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_registry::Migration),
            Box::new(m0002_audit::Migration),
            Box::new(m0003_sessions::Migration),
            Box::new(m0004_policies::Migration),
            Box::new(m0005_humans::Migration),
            Box::new(m0006_clients::Migration),
            Box::new(m0007_agent_groups::Migration),
            Box::new(m0009_approvals::Migration),
        ]
    }
}
