//! `mandate policies ...`: the policy set in force, its history, changes and tests.
use crate::{Output, print};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mandate::app::open_store;
use mandate::config::Config;
use mandate::registry::Registry;
use mandate::tokens::keys::Kek;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PoliciesCmd {
    /// The policies in force: id, effect, approval.
    List {
        #[command(flatten)]
        out: Output,
    },
    /// The text of the set in force, or of VERSION.
    Show { version: Option<i64> },
    /// Validate FILE against the schema and put it in force as a new version.
    Apply {
        file: PathBuf,
        /// Why (recorded in the history).
        #[arg(long, short, default_value = "")]
        message: String,
        /// Recorded as the author (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// Save even a set that would deny every request.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Line diff: the set in force against FILE, or version --from against --to.
    Diff {
        file: Option<PathBuf>,
        #[arg(long)]
        from: Option<i64>,
        #[arg(long)]
        to: Option<i64>,
    },
    /// Every version: who, when, why.
    History {
        #[command(flatten)]
        out: Output,
    },
    /// Put VERSION's text back in force (as a new version).
    Rollback {
        version: i64,
        #[arg(long)]
        author: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Run a file of expected decisions against the set in force (or --policies FILE).
    Test {
        file: PathBuf,
        #[arg(long)]
        policies: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
}

/// Tells running nodes through Redis that the policy set changed, so they reload at once
/// rather than at their next registry poll. Without Redis the poll is the only way.
async fn announce(cfg: &Config) {
    use mandate::sessions::Backend;
    let Some(url) = &cfg.redis_url else {
        return;
    };
    match mandate::sessions::redis::RedisBackend::connect(url, &cfg.redis_prefix).await {
        Ok(r) => r.share_registry_change().await,
        Err(e) => eprintln!(
            "warning: redis unreachable ({e}); nodes pick the change up at their next poll"
        ),
    }
}

pub async fn policies(c: PoliciesCmd, cfg: &Config, now: i64) -> Result<()> {
    use mandate::policy::{self, service, store as pstore};
    let store = open_store(cfg, None).await?;
    pstore::ensure_default(&store, now, &mandate::audit::Trail::cli(cfg)).await?;
    let registry = || async {
        let kek = Kek::load(cfg.key_encryption_key.as_deref(), &cfg.data_dir)?;
        anyhow::Ok(Registry::from_rows(store.load_registry().await?, &kek))
    };
    let author = |a: Option<String>| {
        a.or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "cli".into())
    };
    let active = || async {
        pstore::latest(&store.db)
            .await?
            .context("no policy set is installed")
    };
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| p.display().to_string());
    match c {
        PoliciesCmd::List { out } => {
            let v = active().await?;
            let compiled = policy::compile(&v.source, &policy::schema()?)?;
            let legacy = compiled.legacy;
            let list = compiled.info;
            print(&out, &list, || {
                let mut s = format!("policy set version {}\n", v.version);
                if legacy {
                    s.push_str(
                        "(written for schema version 1: people acting through MCP clients are \
                         evaluated as low-trust agents; see README \"Policies\")\n",
                    );
                }
                for p in &list {
                    s.push_str(&format!(
                        "{:<40} {}{}\n",
                        p.id,
                        p.effect,
                        if p.approval {
                            " (needs a human's approval)"
                        } else {
                            ""
                        }
                    ));
                }
                s.trim_end().to_string()
            })
        }
        PoliciesCmd::Show { version } => {
            let v = match version {
                Some(n) => pstore::get(&store, n)
                    .await?
                    .with_context(|| format!("no policy version {n}"))?,
                None => active().await?,
            };
            print!("{}", v.source);
            Ok(())
        }
        PoliciesCmd::Apply {
            file,
            message,
            author: who,
            force,
            out,
        } => {
            let src = read(&file)?;
            let reg = registry().await?;
            let applied = service::PolicyAdmin {
                store: &store,
                now,
                trail: mandate::audit::Trail::cli(cfg),
            }
            .apply(&src, &author(who), &message, force, &reg)
            .await?;
            announce(cfg).await;
            print(&out, &applied, || {
                let mut s = format!(
                    "policy set version {} in force ({} policies); running nodes reload it now (Redis) or within the refresh interval",
                    applied.version, applied.policies
                );
                for w in &applied.warnings {
                    s.push_str(&format!("\nwarning: {w}"));
                }
                if let Some(why) = &applied.forced_past {
                    s.push_str(&format!("\nforced past: {why}"));
                }
                s
            })
        }
        PoliciesCmd::Diff { file, from, to } => {
            let text = |n: i64| {
                let store = &store;
                async move {
                    anyhow::Ok(
                        pstore::get(store, n)
                            .await?
                            .with_context(|| format!("no policy version {n}"))?
                            .source,
                    )
                }
            };
            let (a, b) = match (file, from, to) {
                (Some(f), None, None) => (active().await?.source, read(&f)?),
                (None, Some(f), Some(t)) => (text(f).await?, text(t).await?),
                (None, Some(f), None) => (text(f).await?, active().await?.source),
                _ => bail!("give FILE, or --from VERSION [--to VERSION]"),
            };
            print!("{}", service::diff(&a, &b));
            Ok(())
        }
        PoliciesCmd::History { out } => {
            let list = pstore::history(&store).await?;
            print(&out, &list, || {
                list.iter()
                    .map(|v| {
                        format!(
                            "{:>4}{} {}  {}  {}  {}",
                            v.version,
                            if v.active { "*" } else { " " },
                            v.created_at,
                            &v.digest[..12.min(v.digest.len())],
                            v.author,
                            v.message
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        PoliciesCmd::Rollback {
            version,
            author: who,
            force,
        } => {
            let reg = registry().await?;
            let applied = service::PolicyAdmin {
                store: &store,
                now,
                trail: mandate::audit::Trail::cli(cfg),
            }
            .rollback(version, &author(who), force, &reg)
            .await?;
            announce(cfg).await;
            println!(
                "version {version} is back in force as version {}",
                applied.version
            );
            Ok(())
        }
        PoliciesCmd::Test {
            file,
            policies,
            out,
        } => {
            let src = match policies {
                Some(p) => read(&p)?,
                None => active().await?.source,
            };
            let compiled = policy::compile(&src, &policy::schema()?)?;
            let cases = policy::testing::parse_file(&read(&file)?)?.case;
            let reg = registry().await?;
            let mut results = Vec::new();
            for case in &cases {
                results.push(
                    case.evaluate(&compiled, Some(&reg), now, &|t| cfg.policy_offset_secs(t))?,
                );
            }
            let failed = results.iter().filter(|r| !r.passed).count();
            print(&out, &results, || {
                let mut s = String::new();
                for r in &results {
                    s.push_str(&format!(
                        "{} {}: {} (reasons: {})\n",
                        if r.passed { "ok  " } else { "FAIL" },
                        r.name,
                        r.decision.decision.as_str(),
                        if r.decision.reasons.is_empty() {
                            "default deny".to_string()
                        } else {
                            r.decision.reasons.join(", ")
                        }
                    ));
                }
                s.push_str(&format!("{} cases, {failed} failed", results.len()));
                s
            })?;
            if failed > 0 {
                bail!("{failed} policy test(s) failed");
            }
            Ok(())
        }
    }
}
