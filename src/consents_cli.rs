//! `mandate consents ...`: what people let MCP clients do, and taking it back.
use crate::{Output, print};
use anyhow::Result;
use clap::Subcommand;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum ConsentsCmd {
    /// Live consents: person, client, MCP server, scopes.
    List {
        /// Only this person's (their id).
        #[arg(long)]
        human: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Withdraw a consent: the client's refresh tokens and access tokens under it stop working.
    Revoke { id: String },
}

pub async fn consents(c: ConsentsCmd, app: Arc<mandate::app::App>) -> Result<()> {
    match c {
        ConsentsCmd::List { human, out } => {
            let list = app.list_consents(human.as_deref()).await?;
            print(&out, &list, || {
                list.iter()
                    .map(|c| {
                        format!(
                            "{}  human={}  client={}  resource={}  scope={:?}  granted={}",
                            c.id, c.human_id, c.client_id, c.resource, c.scope, c.granted_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ConsentsCmd::Revoke { id } => {
            let c = app
                .revoke_consent(mandate::audit::Actor::cli(), &id)
                .await?;
            println!(
                "consent {} revoked ({} for {} on {})",
                c.id, c.client_id, c.human_id, c.resource
            );
            Ok(())
        }
    }
}
