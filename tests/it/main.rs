//! Integration tests: the real server on a free port, over HTTP. Each test runs on SQLite and,
//! when `MANDATE_TEST_DATABASE_URL` is set, on a fresh PostgreSQL schema.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests may unwrap"
)]
mod harness;

mod admin_api;
mod approvals;
mod audit;
mod authorize;
mod client_auth;
mod clients;
mod delegation;
mod humans;
mod introspection;
mod keys;
mod ops;
mod people;
mod policy;
mod revocation;
mod sessions;
mod token;
