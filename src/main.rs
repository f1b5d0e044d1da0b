//! The `mandate` command line: thin, it calls the library.
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use mandate::agents::{AgentPatch, AgentStatus, NewAgent};
use mandate::app::open_store;
use mandate::clock::{Clock, SystemClock};
use mandate::config::Config;
use mandate::registry::admin::Admin;
use mandate::registry::{Registry, agent_from_model, server_from_model};
use mandate::resources::{ServerManifest, parse_tool_spec};
use mandate::store::Store;
use mandate::tokens::keys::Kek;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

mod consents_cli;
mod humans_cli;
mod policies_cli;
use policies_cli::PoliciesCmd;

/// mimalloc: less lock contention than glibc malloc between the HTTP worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mandate",
    version,
    about = "OAuth 2.1 authorization server for AI agents and MCP servers"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "MANDATE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, key-encryption key).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL (sqlite://... or postgres://...).
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrates the database first).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Issuer URL (default http://<listen address>).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Bring the database schema up to date.
    Migrate,
    /// MCP servers (protected resources).
    #[command(subcommand)]
    Servers(ServersCmd),
    /// AI agents (OAuth clients).
    #[command(subcommand)]
    Agents(Box<AgentsCmd>),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Admin API access.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Agent sessions.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// Consents people gave MCP clients (authorization code flow).
    #[command(subcommand)]
    Consents(consents_cli::ConsentsCmd),
    /// Cedar policies: what agents may do, versioned.
    #[command(subcommand)]
    Policies(PoliciesCmd),
    /// Revoke by token id, session, agent, human or environment.
    Revoke {
        /// jti, session, agent, human or env.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        value: String,
        #[command(flatten)]
        out: Output,
    },
    /// The audit log: verify its hash chains, export it.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// People: invite (enrolment link), list, disable, sessions, passkeys.
    #[command(subcommand)]
    Humans(humans_cli::HumansCmd),
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// Live sessions: agent, started, last seen, tokens issued.
    List {
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// End a session: every token in it becomes inactive.
    Revoke { sid: String },
    /// Start a new session for an agent now; its next tokens belong to it.
    Start {
        agent: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check every stream's hash chain, sequence and checkpoints; exits 1 on any problem.
    Verify {
        #[command(flatten)]
        out: Output,
    },
    /// Print events as JSON lines, oldest first.
    Export {
        /// Unix seconds, RFC 3339 UTC time, or an age such as 24h or 7d.
        #[arg(long)]
        since: String,
        #[arg(long)]
        until: Option<String>,
        /// Only jsonl.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

#[derive(Args)]
struct Output {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ServersCmd {
    /// Register an MCP server; prints its introspection credentials once.
    Add {
        /// Canonical resource URI (the token audience).
        #[arg(long)]
        uri: String,
        #[arg(long)]
        name: String,
        #[arg(long = "env")]
        environment: String,
        /// A tool as NAME:CLASS:SENSITIVITY (class read|write|execute; sensitivity
        /// public|internal|confidential|restricted). Repeatable.
        #[arg(long = "tool")]
        tools: Vec<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Register or update a server from a TOML or JSON manifest.
    Import {
        file: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    List {
        #[command(flatten)]
        out: Output,
    },
    Show {
        id: String,
    },
    Remove {
        id: String,
    },
    /// New introspection secret; the old one works for --overlap seconds.
    RotateSecret {
        id: String,
        #[arg(long, default_value_t = 3600)]
        overlap: i64,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
enum AgentsCmd {
    /// Register an agent; prints its client secret once (secret methods).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        purpose: String,
        #[arg(long, default_value = "")]
        justification: String,
        /// Owner's email.
        #[arg(long)]
        owner: String,
        #[arg(long = "env")]
        environment: String,
        /// low, medium or high.
        #[arg(long, default_value = "low")]
        trust: String,
        /// An MCP server the agent may reach (repeatable).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Scope ceiling, e.g. "tools:read tools:write_doc" (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Cap on token lifetime, seconds.
        #[arg(long)]
        token_ttl: Option<i64>,
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// Public JWKS file (private_key_jwt).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// JWKS URL (private_key_jwt).
        #[arg(long)]
        jwks_uri: Option<String>,
        /// Absolute session lifetime, seconds (default from configuration).
        #[arg(long)]
        session_lifetime: Option<i64>,
        /// Session idle timeout, seconds (default from configuration).
        #[arg(long)]
        session_idle: Option<i64>,
        /// A group (team) policies can name (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        out: Output,
    },
    List {
        #[command(flatten)]
        out: Output,
    },
    Show {
        id: String,
    },
    /// Change an agent's trust level, resources or scope ceiling.
    Update {
        id: String,
        #[arg(long)]
        trust: Option<String>,
        #[arg(long = "resource")]
        resources: Option<Vec<String>>,
        #[arg(long = "scope")]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        token_ttl: Option<i64>,
        /// Replace the agent's groups (repeatable; `--group ''` alone clears them).
        #[arg(long = "group")]
        groups: Option<Vec<String>>,
        #[command(flatten)]
        out: Output,
    },
    /// Refuse the agent new tokens and make its tokens inactive (undone by activate).
    Suspend {
        id: String,
    },
    /// The kill switch: suspend, revoke every token the agent holds, end its sessions, and
    /// tell every node.
    Kill {
        id: String,
    },
    /// Lift a kill's suspension (the revocations stay).
    Revive {
        id: String,
    },
    Activate {
        id: String,
    },
    Remove {
        id: String,
    },
    /// New client secret; the old one works for --overlap seconds.
    RotateSecret {
        id: String,
        #[arg(long, default_value_t = 3600)]
        overlap: i64,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Add a key: published now, signing after --lead seconds (default from configuration).
    Rotate {
        #[arg(long)]
        alg: Option<String>,
        #[arg(long)]
        lead: Option<i64>,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create an admin API bearer token (shown once).
    Token {
        #[arg(long, default_value = "admin")]
        name: String,
        #[command(flatten)]
        out: Output,
    },
}

fn print(out: &Output, value: &impl serde::Serialize, text: impl FnOnce() -> String) -> Result<()> {
    if out.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn load_config(cli: &Cli) -> Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(u) = &cli.database_url {
        cfg.database_url = Some(u.clone());
    }
    Ok(cfg)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut cfg = load_config(&cli)?;
    if let Command::Serve { listen, issuer } = &cli.command {
        if let Some(l) = listen {
            cfg.listen = *l;
        }
        if let Some(i) = issuer {
            cfg.issuer = Some(i.clone());
        }
    }
    if !matches!(cli.command, Command::Serve { .. })
        && std::env::var_os("MANDATE_LOG_LEVEL").is_none()
    {
        cfg.log_level = "warn".into(); // keep command output clean
    }
    mandate::init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli, cfg))
}

async fn run(cli: Cli, cfg: Config) -> Result<()> {
    let clock = SystemClock;
    match cli.command {
        Command::Serve { .. } => {
            let running = mandate::server::start(
                cfg,
                Arc::new(SystemClock),
                None,
                mandate::server::termination_signal(),
            )
            .await?;
            println!(
                "Mandate listening on http://{} (issuer {})",
                running.addr,
                running.issuer()
            );
            running.wait().await?;
            Ok(())
        }
        Command::Migrate => {
            open_store(&cfg, None).await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Servers(c) => servers(c, &cfg, clock.now()).await,
        Command::Sessions(c) => sessions(c, cfg).await,
        Command::Consents(c) => consents_cli::consents(c, server_side(cfg).await?).await,
        Command::Policies(c) => policies_cli::policies(c, &cfg, clock.now()).await,
        Command::Revoke { kind, value, out } => {
            let app = server_side(cfg).await?;
            let kind = mandate::sessions::Kind::parse(&kind)
                .context("kind must be jti, session, agent, human or env")?;
            if kind == mandate::sessions::Kind::Agent {
                app.kill_agent(mandate::audit::Actor::cli(), &value).await?;
                return print(
                    &out,
                    &serde_json::json!({"kind": "agent", "value": value}),
                    || format!("agent {value} killed"),
                );
            }
            let r = app
                .revoke_kind(mandate::audit::Actor::cli(), kind, &value, None, None)
                .await?;
            print(&out, &r, || format!("{} {} revoked", kind.as_str(), value))
        }
        Command::Agents(c) => agents(*c, &cfg, clock.now()).await,
        Command::Keys(c) => keys(c, &cfg, clock.now()).await,
        Command::Audit(c) => audit(c, &cfg, clock.now()).await,
        Command::Humans(c) => humans_cli::run(c, &cfg, clock.now()).await,
        Command::Admin(AdminCmd::Token { name, out }) => {
            let store = open_store(&cfg, None).await?;
            let token = Admin {
                store: &store,
                now: clock.now(),
                audit: mandate::audit::Trail::cli(&cfg),
            }
            .create_admin_token(&name)
            .await?;
            print(
                &out,
                &serde_json::json!({"name": name, "token": token}),
                || format!("admin token (shown once): {token}"),
            )
        }
    }
}

async fn servers(c: ServersCmd, cfg: &Config, now: i64) -> Result<()> {
    let store = open_store(cfg, None).await?;
    let admin = Admin {
        store: &store,
        now,
        audit: mandate::audit::Trail::cli(cfg),
    };
    match c {
        ServersCmd::Add {
            uri,
            name,
            environment,
            tools,
            out,
        } => {
            let tools = tools
                .iter()
                .map(|t| parse_tool_spec(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let m = ServerManifest {
                resource: uri,
                name,
                environment,
                tools,
            };
            let created = admin.create_server(&m).await?;
            print(&out, &created, || {
                format!(
                    "server {} registered for {}\nintrospection client_id: {}\nclient_secret (shown once): {}",
                    created.server.id,
                    created.server.resource,
                    created.client_id,
                    created.client_secret.as_deref().unwrap_or("")
                )
            })
        }
        ServersCmd::Import { file, out } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            let m: ServerManifest = if file.extension().is_some_and(|e| e == "json") {
                serde_json::from_str(&text)?
            } else {
                toml::from_str(&text)?
            };
            let created = admin.import_server(&m).await?;
            print(&out, &created, || match &created.client_secret {
                Some(s) => format!(
                    "server {} registered for {}\nintrospection client_id: {}\nclient_secret (shown once): {s}",
                    created.server.id, created.server.resource, created.client_id
                ),
                None => format!("server {} updated", created.server.id),
            })
        }
        ServersCmd::List { out } => {
            let list: Vec<_> = store
                .list_servers()
                .await?
                .into_iter()
                .filter_map(|m| server_from_model(m).ok())
                .collect();
            print(&out, &list, || {
                list.iter()
                    .map(|s| {
                        format!(
                            "{}  {}  env={}  tools={}",
                            s.id,
                            s.resource,
                            s.environment,
                            s.tools.keys().cloned().collect::<Vec<_>>().join(",")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ServersCmd::Show { id } => {
            let m = store.find_server(&id).await?.context("no such server")?;
            let s = server_from_model(m).map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        ServersCmd::Remove { id } => {
            admin.delete_server(&id).await?;
            println!("server {id} removed");
            Ok(())
        }
        ServersCmd::RotateSecret { id, overlap, out } => rotate(&admin, &id, overlap, &out).await,
    }
}

async fn rotate(admin: &Admin<'_>, id: &str, overlap: i64, out: &Output) -> Result<()> {
    let r = admin.rotate_secret(id, overlap).await?;
    print(out, &r, || {
        format!(
            "new client_secret for {} (shown once): {}\nprevious secrets stop working at {}",
            r.client_id, r.client_secret, r.previous_expire_at
        )
    })
}

async fn agents(c: AgentsCmd, cfg: &Config, now: i64) -> Result<()> {
    let store = open_store(cfg, None).await?;
    let admin = Admin {
        store: &store,
        now,
        audit: mandate::audit::Trail::cli(cfg),
    };
    match c {
        AgentsCmd::Add {
            name,
            purpose,
            justification,
            owner,
            environment,
            trust,
            resources,
            scopes,
            token_ttl,
            auth_method,
            jwks,
            jwks_uri,
            session_lifetime,
            session_idle,
            groups,
            out,
        } => {
            let jwks = match jwks {
                Some(p) => Some(serde_json::from_str(
                    &std::fs::read_to_string(&p).with_context(|| p.display().to_string())?,
                )?),
                None => None,
            };
            let n = NewAgent {
                name,
                purpose,
                justification,
                owner,
                trust_level: trust,
                environment,
                allowed_resources: resources,
                scope_ceiling: scopes,
                token_ttl_cap: token_ttl,
                auth_method,
                jwks,
                jwks_uri,
                session_lifetime_secs: session_lifetime,
                session_idle_secs: session_idle,
                groups,
            };
            let created = admin.create_agent(&n).await?;
            print(&out, &created, || {
                let mut s = format!("agent {} registered", created.client_id);
                if let Some(secret) = &created.client_secret {
                    s.push_str(&format!("\nclient_secret (shown once): {secret}"));
                }
                s
            })
        }
        AgentsCmd::List { out } => {
            let list: Vec<_> = store
                .list_agents()
                .await?
                .into_iter()
                .filter_map(|m| agent_from_model(m).ok())
                .collect();
            print(&out, &list, || {
                list.iter()
                    .map(|a| {
                        format!(
                            "{}  {}  env={}  trust={}  status={}  owner={}",
                            a.id,
                            a.name,
                            a.environment,
                            a.trust_level.as_str(),
                            a.status.as_str(),
                            a.owner
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AgentsCmd::Show { id } => {
            let m = store.find_agent(&id).await?.context("no such agent")?;
            let a = agent_from_model(m).map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&a)?);
            Ok(())
        }
        AgentsCmd::Update {
            id,
            trust,
            resources,
            scopes,
            token_ttl,
            groups,
            out,
        } => {
            let p = AgentPatch {
                trust_level: trust,
                allowed_resources: resources,
                scope_ceiling: scopes,
                token_ttl_cap: token_ttl.map(Some),
                groups: groups.map(|g| g.into_iter().filter(|g| !g.is_empty()).collect()),
                ..Default::default()
            };
            let a = admin.update_agent(&id, &p).await?;
            print(&out, &a, || format!("agent {} updated", a.id))
        }
        AgentsCmd::Suspend { id } => {
            admin.set_agent_status(&id, AgentStatus::Suspended).await?;
            println!("agent {id} suspended");
            Ok(())
        }
        AgentsCmd::Activate { id } => {
            admin.set_agent_status(&id, AgentStatus::Active).await?;
            println!("agent {id} active");
            Ok(())
        }
        AgentsCmd::Kill { id } => {
            let app = server_side(cfg.clone()).await?;
            app.kill_agent(mandate::audit::Actor::cli(), &id).await?;
            println!("agent {id} killed: suspended, every token it held revoked, sessions ended");
            Ok(())
        }
        AgentsCmd::Revive { id } => {
            let app = server_side(cfg.clone()).await?;
            app.admin()
                .set_agent_status(&id, AgentStatus::Active)
                .await?;
            app.after_registry_change().await;
            println!("agent {id} active again (tokens revoked by the kill stay revoked)");
            Ok(())
        }
        AgentsCmd::Remove { id } => {
            admin.delete_agent(&id).await?;
            println!("agent {id} removed");
            Ok(())
        }
        AgentsCmd::RotateSecret { id, overlap, out } => rotate(&admin, &id, overlap, &out).await,
    }
}

async fn keys(c: KeysCmd, cfg: &Config, now: i64) -> Result<()> {
    let store: Store = open_store(cfg, None).await?;
    let kek = Kek::load(cfg.key_encryption_key.as_deref(), &cfg.data_dir)?;
    let admin = Admin {
        store: &store,
        now,
        audit: mandate::audit::Trail::cli(cfg),
    };
    match c {
        KeysCmd::List { out } => {
            let reg = Registry::from_rows(store.load_registry().await?, &kek);
            let list = reg.keys.describe(now, cfg.access_token_ttl_secs);
            print(&out, &list, || {
                list.iter()
                    .map(|k| {
                        format!(
                            "{}  {}  {}  activates_at={}",
                            k["kid"].as_str().unwrap_or(""),
                            k["alg"].as_str().unwrap_or(""),
                            k["state"].as_str().unwrap_or(""),
                            k["activates_at"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        KeysCmd::Rotate { alg, lead, out } => {
            let alg = alg.unwrap_or_else(|| cfg.signing_alg.clone());
            if !matches!(alg.as_str(), "ES256" | "EdDSA" | "RS256") {
                bail!("alg must be ES256, EdDSA or RS256");
            }
            let lead = lead.unwrap_or(cfg.key_publish_lead_secs);
            let m = admin.add_key(&alg, lead, &kek).await?;
            let v = serde_json::json!({"kid": m.kid, "alg": m.alg, "activates_at": m.activates_at});
            print(&out, &v, || {
                format!(
                    "key {} ({}) published; it signs from {} on",
                    m.kid, m.alg, m.activates_at
                )
            })
        }
    }
}

/// The server's own machinery, without serving: for commands that must reach every node
/// (kill, revoke) through Redis when it is configured.
async fn server_side(cfg: Config) -> Result<Arc<mandate::app::App>> {
    let issuer = cfg.issuer_for(cfg.listen);
    Ok(mandate::app::App::start(cfg, issuer, Arc::new(SystemClock), None).await?)
}

async fn sessions(c: SessionsCmd, cfg: Config) -> Result<()> {
    let app = server_side(cfg).await?;
    match c {
        SessionsCmd::List { agent, out } => {
            let list = app.list_sessions(agent.as_deref()).await?;
            print(&out, &list, || {
                list.iter()
                    .map(|s| {
                        format!(
                            "{}  agent={}  started={}  last_seen={}  tokens={}  expires={}",
                            s.sid,
                            s.agent_id,
                            s.started_at,
                            s.last_seen,
                            s.tokens_issued,
                            s.expires_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        SessionsCmd::Start { agent, out } => {
            let s = app
                .start_session(mandate::audit::Actor::cli(), &agent)
                .await?;
            print(&out, &s, || {
                format!("session {} started for {}", s.sid, s.agent_id)
            })
        }
        SessionsCmd::Revoke { sid } => {
            if app.store.find_session(&sid).await?.is_none() {
                bail!("no session {sid}");
            }
            app.revoke_kind(
                mandate::audit::Actor::cli(),
                mandate::sessions::Kind::Session,
                &sid,
                None,
                None,
            )
            .await?;
            println!("session {sid} revoked");
            Ok(())
        }
    }
}

async fn audit(c: AuditCmd, cfg: &Config, now: i64) -> Result<()> {
    let store = open_store(cfg, None).await?;
    match c {
        AuditCmd::Verify { out } => {
            let report = mandate::audit::verify::verify(&store).await?;
            print(&out, &report, || report.text())?;
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCmd::Export {
            since,
            until,
            format,
        } => {
            if format != "jsonl" {
                bail!("--format must be jsonl");
            }
            let parse =
                |s: &str| mandate::audit::query::parse_time(s, now).map_err(anyhow::Error::msg);
            let since = parse(&since)?;
            let until = until.as_deref().map(parse).transpose()?.unwrap_or(now + 1);
            mandate::audit::query::export_jsonl(&store.db, since, until, std::io::stdout().lock())
                .await?;
            Ok(())
        }
    }
}
