//! The `approval_requests` table (migrations/src/m0009_approvals.rs).
pub mod approval_request {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "approval_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(unique)]
        pub auth_req_hash: String,
        pub agent_id: String,
        pub resource: String,
        pub scope: String,
        pub authorization_details: String,
        pub binding_message: Option<String>,
        pub acr_values: Option<String>,
        pub approver_id: Option<String>,
        pub status: String,
        pub deny_reason: Option<String>,
        pub decided_by: Option<String>,
        pub policy_reasons: String,
        pub created_at: i64,
        pub expires_at: i64,
        pub decided_at: Option<i64>,
        pub last_polled_at: Option<i64>,
        pub poll_interval: i64,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}
