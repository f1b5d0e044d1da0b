//! Mandate: an OAuth 2.1 authorization server for AI agents and the MCP servers they call.
//!
//! Layers, top to bottom: `http` (axum) -> `oauth`, `registry` (the domain) -> `store`
//! (sea-orm), `sessions` (revocation, replay), `tokens` (keys, JWTs), `clock`.
pub mod agents;
pub mod app;
pub mod approvals;
pub mod audit;
pub mod clients;
pub mod clock;
pub mod config;
pub mod http;
pub mod humans;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod registry;
pub mod resources;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod store;
pub mod tokens;

/// Sets up logging as configured (text or JSON lines on stderr).
pub fn init_logging(config: &config::Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
