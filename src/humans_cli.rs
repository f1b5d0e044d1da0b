//! `mandate humans ...`: invite people, list them, end their sessions, manage passkeys.
use crate::{Output, print};
use anyhow::{Context, Result};
use clap::Subcommand;
use mandate::app::open_store;
use mandate::audit::Trail;
use mandate::config::Config;
use mandate::humans::{self, Role, web};

#[derive(Subcommand)]
pub enum HumansCmd {
    /// Create a person (unless they exist) and print a one-time enrolment link. The first
    /// admin is bootstrapped this way.
    Invite {
        email: String,
        /// Display name (default: the part of the email before @).
        #[arg(long)]
        name: Option<String>,
        /// admin, approver or viewer; comma-separated for several.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Link lifetime in seconds (default: enrolment_link_ttl_secs).
        #[arg(long)]
        ttl: Option<i64>,
        #[command(flatten)]
        out: Output,
    },
    /// Everyone, with roles and status.
    List {
        #[command(flatten)]
        out: Output,
    },
    /// One person (by id or email), with passkeys and live sessions.
    Show {
        who: String,
        #[command(flatten)]
        out: Output,
    },
    /// Disable a person: no more sign-in, sessions end, unused links die.
    Disable { who: String },
    /// A person's live browser sessions.
    Sessions {
        who: String,
        #[command(flatten)]
        out: Output,
    },
    /// End every browser session of a person.
    RevokeSessions { who: String },
    /// A person's passkeys.
    Passkeys {
        who: String,
        #[command(flatten)]
        out: Output,
    },
    /// Remove one of a person's passkeys.
    RemovePasskey { who: String, passkey: String },
}

async fn find(store: &mandate::store::Store, who: &str) -> Result<humans::HumanRecord> {
    humans::find(store, who)
        .await?
        .with_context(|| format!("no person {who}"))
}

pub async fn run(c: HumansCmd, cfg: &Config, now: i64) -> Result<()> {
    let store = open_store(cfg, None).await?;
    let trail = Trail::cli(cfg);
    match c {
        HumansCmd::Invite {
            email,
            name,
            role,
            ttl,
            out,
        } => {
            let roles = Role::parse_list(&role)?;
            let name = name.unwrap_or_else(|| email.split('@').next().unwrap_or("").to_string());
            let issuer = cfg.issuer_for(cfg.listen);
            let inv = humans::invite(
                &store,
                &trail,
                now,
                &issuer,
                &email,
                &name,
                &roles,
                ttl.unwrap_or(cfg.enrolment_link_ttl_secs),
            )
            .await?;
            print(&out, &inv, || {
                format!(
                    "{} {} ({})\nenrolment link (single use, expires at {}):\n{}",
                    if inv.existing {
                        "existing person"
                    } else {
                        "invited"
                    },
                    inv.human.email,
                    inv.human.id,
                    inv.expires_at,
                    inv.link
                )
            })
        }
        HumansCmd::List { out } => {
            let list = humans::list(&store).await?;
            print(&out, &list, || {
                list.iter()
                    .map(|r| {
                        format!(
                            "{}  {}  {}  roles={}  {}",
                            r.human.id,
                            r.human.email,
                            r.human.display_name,
                            r.human
                                .roles
                                .iter()
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                            if r.active() { "active" } else { "disabled" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        HumansCmd::Show { who, out } => {
            let r = find(&store, &who).await?;
            let passkeys = humans::list_passkeys(&store, &r.human.id).await?;
            let sessions = web::list_sessions(&store, now, &r.human.id).await?;
            let v = serde_json::json!({"human": r, "passkeys": passkeys, "sessions": sessions});
            print(&out, &v, || {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            })
        }
        HumansCmd::Disable { who } => {
            let r = find(&store, &who).await?;
            humans::disable(&store, &trail, now, &r.human.id).await?;
            // Tokens issued for this person stop working too (through Redis when configured).
            let app = crate::server_side(cfg.clone()).await?;
            app.revoke_kind(
                mandate::audit::Actor::cli(),
                mandate::sessions::Kind::Human,
                &r.human.id,
                None,
                None,
            )
            .await?;
            println!("{} disabled; their tokens are revoked", r.human.email);
            Ok(())
        }
        HumansCmd::Sessions { who, out } => {
            let r = find(&store, &who).await?;
            let list = web::list_sessions(&store, now, &r.human.id).await?;
            print(&out, &list, || {
                list.iter()
                    .map(|s| {
                        format!(
                            "{}  via={}  started={}  last_seen={}  expires={}",
                            s.id, s.auth_method, s.created_at, s.last_seen_at, s.expires_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        HumansCmd::RevokeSessions { who } => {
            let r = find(&store, &who).await?;
            let n = web::revoke_sessions(&store, &trail, now, &r.human.id).await?;
            println!("{n} session(s) of {} ended", r.human.email);
            Ok(())
        }
        HumansCmd::Passkeys { who, out } => {
            let r = find(&store, &who).await?;
            let list = humans::list_passkeys(&store, &r.human.id).await?;
            print(&out, &list, || {
                list.iter()
                    .map(|p| {
                        format!(
                            "{}  {:?}  created={}  last_used={}",
                            p.id,
                            p.name,
                            p.created_at,
                            p.last_used_at.map(|t| t.to_string()).unwrap_or("-".into())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        HumansCmd::RemovePasskey { who, passkey } => {
            let r = find(&store, &who).await?;
            humans::remove_passkey(&store, &trail, now, &r.human.id, &passkey).await?;
            println!("passkey {passkey} of {} removed", r.human.email);
            Ok(())
        }
    }
}
