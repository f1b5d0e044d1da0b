//! Configuration: one struct, from a TOML file with `MANDATE_*` environment overrides.
//! Unknown keys in the file are refused (`deny_unknown_fields`); `mandate.example.toml` at the
//! repo root documents every key beside its default and its variable.
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (`MANDATE_LISTEN`).
    pub listen: SocketAddr,
    /// Issuer URL, byte-exact in metadata and tokens; default `http://<listen>` (`MANDATE_ISSUER`).
    pub issuer: Option<String>,
    /// Data directory: SQLite file, key-encryption key (`MANDATE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Database URL; default SQLite in the data directory (`MANDATE_DATABASE_URL`).
    pub database_url: Option<String>,
    /// Base64 (standard) of 32 bytes that encrypt signing keys at rest; default: generated
    /// into `<data_dir>/key-encryption-key` (mode 0600) (`MANDATE_KEY_ENCRYPTION_KEY`).
    pub key_encryption_key: Option<String>,
    /// Algorithm of generated signing keys: ES256, EdDSA or RS256 (`MANDATE_SIGNING_ALG`).
    pub signing_alg: String,
    /// Seconds a rotated key is published before it signs (`MANDATE_KEY_PUBLISH_LEAD_SECS`).
    pub key_publish_lead_secs: i64,
    /// Default and maximum access token lifetime in seconds (`MANDATE_ACCESS_TOKEN_TTL_SECS`).
    pub access_token_ttl_secs: i64,
    /// Longest lifetime accepted for a `private_key_jwt` assertion (`MANDATE_ASSERTION_MAX_LIFETIME_SECS`).
    pub assertion_max_lifetime_secs: i64,
    /// Clock skew tolerated on assertion times (`MANDATE_CLOCK_SKEW_SECS`).
    pub clock_skew_secs: i64,
    /// Largest request body accepted, in bytes (`MANDATE_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How often a node checks the database for registry, key and revocation changes made by
    /// other nodes or the CLI, in milliseconds (`MANDATE_REFRESH_INTERVAL_MS`).
    pub refresh_interval_ms: u64,
    /// Log format: `text` or `json` (`MANDATE_LOG_FORMAT`).
    pub log_format: String,
    /// Log filter, tracing-subscriber syntax (`MANDATE_LOG_LEVEL`).
    pub log_level: String,
    /// Seconds a request may take before it is answered 503 (`MANDATE_REQUEST_TIMEOUT_SECS`).
    pub request_timeout_secs: u64,
    /// Redis for sessions, revocation, replay caches and cross-node events; without it the
    /// embedded in-process store is used (`MANDATE_REDIS_URL`).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so deployments can share a Redis
    /// (`MANDATE_REDIS_PREFIX`).
    pub redis_prefix: String,
    /// Default absolute lifetime of an agent session, seconds (`MANDATE_SESSION_LIFETIME_SECS`).
    pub session_lifetime_secs: i64,
    /// Default idle timeout of an agent session (no token issued), seconds; never shorter than
    /// the token lifetime (`MANDATE_SESSION_IDLE_SECS`).
    pub session_idle_secs: i64,
    /// Offset of the deployment's time zone from UTC, in minutes, for the hour and weekday
    /// policies see, when `policy_time_zone` is not set (`MANDATE_POLICY_UTC_OFFSET_MINUTES`).
    pub policy_utc_offset_minutes: i64,
    /// The deployment's IANA time zone (`Europe/Paris`) for the hour and weekday policies see,
    /// daylight saving included; overrides `policy_utc_offset_minutes`
    /// (`MANDATE_POLICY_TIME_ZONE`).
    pub policy_time_zone: Option<String>,
    /// `policy_time_zone` parsed, on first use (not per request); derived, never set.
    #[serde(skip)]
    pub policy_tz: std::sync::OnceLock<Option<chrono_tz::Tz>>,
    /// HTTP worker threads, each with its own runtime; default: one per CPU
    /// (`MANDATE_HTTP_WORKERS`).
    pub http_workers: Option<usize>,
    /// This node's audit stream name; default: the host name (`MANDATE_AUDIT_NODE`).
    pub audit_node: Option<String>,
    /// Audit events waiting for the batch writer before requests wait too
    /// (`MANDATE_AUDIT_QUEUE_CAPACITY`).
    pub audit_queue_capacity: usize,
    /// Most audit events written in one transaction (`MANDATE_AUDIT_BATCH_MAX`).
    pub audit_batch_max: usize,
    /// Tick of the audit writer's timer (sink flush, checkpoints, retention), in milliseconds
    /// (`MANDATE_AUDIT_FLUSH_INTERVAL_MS`).
    pub audit_flush_interval_ms: u64,
    /// Microseconds the audit writer waits for more events when 2 to 63 are queued (a lone
    /// event commits at once): fewer, larger commits under load (`MANDATE_AUDIT_LINGER_US`).
    pub audit_linger_us: u64,
    /// A checkpoint of the stream head every this many events (`MANDATE_AUDIT_CHECKPOINT_EVERY`).
    pub audit_checkpoint_every: i64,
    /// ... and at least this often while events arrive, in seconds
    /// (`MANDATE_AUDIT_CHECKPOINT_INTERVAL_SECS`).
    pub audit_checkpoint_interval_secs: i64,
    /// Also write every event as a JSON line to `stdout` or to this file (`MANDATE_AUDIT_SINK`).
    pub audit_sink: Option<String>,
    /// Days audit events are kept; whole checkpointed segments older than this are pruned;
    /// 0 keeps everything (`MANDATE_AUDIT_RETENTION_DAYS`).
    pub audit_retention_days: i64,
    /// Acknowledge batched audit events only once the database has flushed them to disk
    /// (survives a machine crash, at a large cost in token throughput); by default they are
    /// acknowledged once committed, which survives a Mandate crash (`MANDATE_AUDIT_SYNC_COMMIT`).
    pub audit_sync_commit: bool,
    /// Make batched audit events durable in a journal under `<data_dir>/audit-journal`
    /// before answering, and write them to the database behind (no request waits for the
    /// database); when false, requests wait for the commit. The directory must outlive a
    /// crash: Mandate writes what it holds at the next start (`MANDATE_AUDIT_JOURNAL`).
    pub audit_journal: bool,
    /// Longest `act` delegation chain a token may carry (RFC 8693 §4.1)
    /// (`MANDATE_MAX_DELEGATION_DEPTH`).
    pub max_delegation_depth: usize,
    /// External identity providers trusted for token exchange subject tokens, ID-JAGs and
    /// workload identities (`[[trusted_issuers]]`; see docs/delegation.md). File only.
    pub trusted_issuers: Vec<crate::oauth::trust::TrustedIssuer>,
    /// Browser sessions of humans: absolute lifetime, seconds (`MANDATE_HUMAN_SESSION_LIFETIME_SECS`).
    pub human_session_lifetime_secs: i64,
    /// Browser sessions of humans: idle timeout, seconds (`MANDATE_HUMAN_SESSION_IDLE_SECS`).
    pub human_session_idle_secs: i64,
    /// Lifetime of an enrolment link printed by `mandate humans invite`, seconds
    /// (`MANDATE_ENROLMENT_LINK_TTL_SECS`).
    pub enrolment_link_ttl_secs: i64,
    /// Sign-in through an upstream OpenID Connect provider; off when absent.
    pub oidc: Option<OidcConfig>,
    /// Who may register OAuth clients at `POST /register` (RFC 7591): `open`,
    /// `initial_access_token` (an admin API token as the initial access token) or `off`
    /// (`MANDATE_REGISTRATION_POLICY`).
    pub registration_policy: String,
    /// Lifetime of an authorization code, seconds (`MANDATE_AUTHORIZATION_CODE_TTL_SECS`).
    pub authorization_code_ttl_secs: i64,
    /// Absolute lifetime of a refresh token family (one person's grant to one client),
    /// seconds (`MANDATE_REFRESH_TOKEN_LIFETIME_SECS`).
    pub refresh_token_lifetime_secs: i64,
    /// Timeout of a Client ID Metadata Document fetch, milliseconds
    /// (`MANDATE_CIMD_FETCH_TIMEOUT_MS`).
    pub cimd_fetch_timeout_ms: u64,
    /// Development only: metadata documents on loopback addresses (over http) are fetched.
    /// Refused at start unless Mandate listens on loopback (`MANDATE_DEV_ALLOW_LOOPBACK_CLIENTS`).
    pub dev_allow_loopback_clients: bool,
    /// Development only (conformance runs): `/authorize` signs this person in (creating them)
    /// and approves every consent without a page. Refused at start unless Mandate listens on
    /// loopback; logged at WARN on start and on every use (`MANDATE_DEV_AUTO_APPROVE_EMAIL`).
    pub dev_auto_approve_email: Option<String>,
    /// Lifetime of a token issued on a human's approval (CIBA), seconds
    /// (`MANDATE_APPROVAL_TOKEN_TTL_SECS`).
    pub approval_token_ttl_secs: i64,
    /// How long an approval request waits for a decision unless the agent asks for less
    /// (`requested_expiry`), seconds (`MANDATE_APPROVAL_DEFAULT_EXPIRY_SECS`).
    pub approval_default_expiry_secs: i64,
    /// Longest `requested_expiry` accepted, seconds (`MANDATE_APPROVAL_MAX_EXPIRY_SECS`).
    pub approval_max_expiry_secs: i64,
    /// Minimum seconds between two polls of one approval request (`MANDATE_APPROVAL_POLL_INTERVAL_SECS`).
    pub approval_poll_interval_secs: i64,
    /// Seconds finished approval requests are kept before cleanup (`MANDATE_APPROVAL_RETENTION_SECS`).
    pub approval_retention_secs: i64,
    /// Webhook told of each new approval request (JSON with a Slack-compatible `text`); none
    /// by default (`MANDATE_APPROVAL_WEBHOOK_URL`).
    pub approval_webhook_url: Option<String>,
}

/// `[oidc]`: sign-in through an upstream OpenID Connect provider (Entra, Okta, Keycloak,
/// Google...). By default only people who already exist in Mandate (invited) may sign in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery at `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// Client secret (`client_secret_basic`); or set `MANDATE_OIDC_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes besides `openid`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// Label of the sign-in button.
    #[serde(default = "default_oidc_label")]
    pub label: String,
    /// Claim whose values map to roles (a string or an array of strings), e.g. `groups`.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Claim value -> role (`admin`, `approver`, `viewer`). When `roles_claim` is set, a
    /// person's roles are replaced at each sign-in by the mapped values.
    #[serde(default)]
    pub role_map: std::collections::BTreeMap<String, String>,
    /// Create a person at first sign-in when their (verified) email is in `allowed_domains`.
    /// Default false: only people who already exist (were invited) may sign in.
    #[serde(default)]
    pub auto_create: bool,
    /// Email domains accepted for `auto_create`.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Roles given to people created by `auto_create` when the mapping yields none.
    #[serde(default = "default_oidc_roles")]
    pub default_roles: Vec<String>,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

fn default_oidc_label() -> String {
    "Sign in with your company account".into()
}

fn default_oidc_roles() -> Vec<String> {
    vec!["viewer".into()]
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: None,
            data_dir: PathBuf::from("mandate-data"),
            database_url: None,
            key_encryption_key: None,
            signing_alg: "ES256".into(),
            key_publish_lead_secs: 300,
            access_token_ttl_secs: 300,
            assertion_max_lifetime_secs: 300,
            clock_skew_secs: 30,
            max_body_bytes: 64 * 1024,
            refresh_interval_ms: 1000,
            log_format: "text".into(),
            log_level: "info".into(),
            request_timeout_secs: 30,
            http_workers: None,
            redis_url: None,
            redis_prefix: "mandate:".into(),
            session_lifetime_secs: 86_400,
            session_idle_secs: 3_600,
            audit_node: None,
            audit_queue_capacity: 8192,
            audit_batch_max: 1000,
            audit_flush_interval_ms: 1000,
            audit_linger_us: 500,
            audit_checkpoint_every: 10_000,
            audit_checkpoint_interval_secs: 60,
            audit_sink: None,
            audit_retention_days: 365,
            audit_sync_commit: false,
            audit_journal: true,
            policy_utc_offset_minutes: 0,
            policy_time_zone: None,
            policy_tz: std::sync::OnceLock::new(),
            trusted_issuers: Vec::new(),
            max_delegation_depth: 5,
            human_session_lifetime_secs: 43_200,
            human_session_idle_secs: 3_600,
            enrolment_link_ttl_secs: 86_400,
            oidc: None,
            registration_policy: "initial_access_token".into(),
            authorization_code_ttl_secs: 60,
            refresh_token_lifetime_secs: 30 * 86_400,
            cimd_fetch_timeout_ms: 3000,
            dev_allow_loopback_clients: false,
            dev_auto_approve_email: None,
            approval_token_ttl_secs: 60,
            approval_default_expiry_secs: 300,
            approval_max_expiry_secs: 1800,
            approval_poll_interval_secs: 5,
            approval_retention_secs: 604_800,
            approval_webhook_url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the file (if any), then applies `MANDATE_<KEY>` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let keys = Self::keys();
        let mut oidc_secret = None;
        for (name, value) in env {
            if name == "MANDATE_OIDC_CLIENT_SECRET" {
                oidc_secret = Some(value);
                continue;
            }
            let Some(key) = name.strip_prefix("MANDATE_").map(str::to_ascii_lowercase) else {
                continue;
            };
            if !keys.contains(&key) {
                continue; // MANDATE_CONFIG, MANDATE_TEST_* and the like are not config keys
            }
            // Numbers and booleans keep their type; anything else is a string.
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| !v.is_str() && !v.is_table() && !v.is_array())
                .unwrap_or(toml::Value::String(value));
            table.insert(key, parsed);
        }
        let mut cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        if let (Some(o), Some(secret)) = (cfg.oidc.as_mut(), oidc_secret) {
            o.client_secret = Some(secret);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Offset from UTC, in seconds, of the deployment's policy time zone at `now` (Unix
    /// seconds): the IANA zone's, daylight saving included, or the fixed offset.
    pub fn policy_offset_secs(&self, now: i64) -> i64 {
        use chrono::Offset;
        use chrono::TimeZone;
        let fixed = self.policy_utc_offset_minutes * 60;
        let tz = self.policy_tz.get_or_init(|| {
            self.policy_time_zone
                .as_deref()
                .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
        });
        let Some(tz) = tz else {
            return fixed;
        };
        match chrono::DateTime::from_timestamp(now, 0) {
            Some(t) => i64::from(
                tz.offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ),
            None => fixed,
        }
    }

    fn keys() -> Vec<String> {
        toml::Table::try_from(Config::default())
            .map(|t| t.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(
                [
                    "issuer",
                    "database_url",
                    "key_encryption_key",
                    "http_workers",
                    "redis_url",
                    "audit_node",
                    "audit_sink",
                    "dev_auto_approve_email",
                    "policy_time_zone",
                ]
                .map(String::from),
            )
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.signing_alg.as_str(), "ES256" | "EdDSA" | "RS256") {
            return Err(ConfigError::Invalid(format!(
                "signing_alg must be ES256, EdDSA or RS256, not {}",
                self.signing_alg
            )));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(
                "log_format must be text or json".into(),
            ));
        }
        if self.access_token_ttl_secs < 1 || self.access_token_ttl_secs > 86_400 {
            return Err(ConfigError::Invalid(
                "access_token_ttl_secs must be between 1 and 86400".into(),
            ));
        }
        if self.audit_queue_capacity == 0 || !(1..=10_000).contains(&self.audit_batch_max) {
            return Err(ConfigError::Invalid(
                "audit_queue_capacity must be positive and audit_batch_max 1-10000".into(),
            ));
        }
        if self.audit_checkpoint_every < 1 || self.audit_retention_days < 0 {
            return Err(ConfigError::Invalid(
                "audit_checkpoint_every must be positive and audit_retention_days not negative"
                    .into(),
            ));
        }
        if !(-14 * 60..=14 * 60).contains(&self.policy_utc_offset_minutes) {
            return Err(ConfigError::Invalid(
                "policy_utc_offset_minutes must be between -840 and 840".into(),
            ));
        }
        if let Some(z) = &self.policy_time_zone
            && z.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "policy_time_zone {z:?} is not an IANA time zone name (such as Europe/Paris)"
            )));
        }
        if let Some(issuer) = &self.issuer {
            crate::resources::validate_issuer(issuer).map_err(ConfigError::Invalid)?;
        }
        crate::oauth::trust::validate(&self.trusted_issuers).map_err(ConfigError::Invalid)?;
        if !(1..=10).contains(&self.max_delegation_depth) {
            return Err(ConfigError::Invalid(
                "max_delegation_depth must be between 1 and 10".into(),
            ));
        }
        if self.human_session_idle_secs < 60
            || self.human_session_lifetime_secs < self.human_session_idle_secs
            || self.enrolment_link_ttl_secs < 60
        {
            return Err(ConfigError::Invalid(
                "human_session_idle_secs must be >= 60, human_session_lifetime_secs >= the idle \
                 timeout, enrolment_link_ttl_secs >= 60"
                    .into(),
            ));
        }
        if let Some(o) = &self.oidc {
            url::Url::parse(&o.issuer)
                .map_err(|e| ConfigError::Invalid(format!("oidc.issuer: {e}")))?;
            for r in o.role_map.values().chain(o.default_roles.iter()) {
                if crate::humans::Role::parse(r).is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "oidc: unknown role {r:?} (admin, approver or viewer)"
                    )));
                }
            }
            if o.auto_create && o.allowed_domains.is_empty() {
                return Err(ConfigError::Invalid(
                    "oidc.auto_create needs oidc.allowed_domains".into(),
                ));
            }
        }
        if crate::clients::dcr::RegistrationPolicy::parse(&self.registration_policy).is_none() {
            return Err(ConfigError::Invalid(
                "registration_policy must be open, initial_access_token or off".into(),
            ));
        }
        if !(1..=3600).contains(&self.approval_token_ttl_secs)
            || !(1..=self.approval_max_expiry_secs).contains(&self.approval_default_expiry_secs)
            || !(1..=60).contains(&self.approval_poll_interval_secs)
            || self.approval_retention_secs < 0
        {
            return Err(ConfigError::Invalid(
                "approval_*: token ttl 1..=3600, default expiry 1..=max expiry, poll interval \
                 1..=60, retention >= 0"
                    .into(),
            ));
        }
        if !(10..=600).contains(&self.authorization_code_ttl_secs) {
            return Err(ConfigError::Invalid(
                "authorization_code_ttl_secs must be between 10 and 600".into(),
            ));
        }
        if self.refresh_token_lifetime_secs < 60 {
            return Err(ConfigError::Invalid(
                "refresh_token_lifetime_secs must be at least 60".into(),
            ));
        }
        let loopback = self.listen.ip().is_loopback();
        if (self.dev_allow_loopback_clients || self.dev_auto_approve_email.is_some()) && !loopback {
            return Err(ConfigError::Invalid(
                "dev_allow_loopback_clients and dev_auto_approve_email are for development: \
                 they need a loopback listen address"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("mandate.db").display()
            )
        })
    }

    /// The issuer for a server bound to `bound`.
    pub fn issuer_for(&self, bound: SocketAddr) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_keeps_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\naccess_token_ttl_secs = 120\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&path),
            [
                (
                    "MANDATE_ACCESS_TOKEN_TTL_SECS".to_string(),
                    "60".to_string(),
                ),
                ("MANDATE_LOG_FORMAT".to_string(), "json".to_string()),
                ("MANDATE_TEST_DATABASE_URL".to_string(), "x".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.access_token_ttl_secs, 60);
        assert_eq!(cfg.log_format, "json");
    }

    #[test]
    fn every_optional_key_has_its_variable() {
        let cfg = Config::load(
            None,
            [
                ("MANDATE_ISSUER", "https://as.example"),
                ("MANDATE_DATABASE_URL", "postgres://x/y"),
                ("MANDATE_KEY_ENCRYPTION_KEY", "a2V5"),
                ("MANDATE_HTTP_WORKERS", "3"),
                ("MANDATE_REDIS_URL", "redis://127.0.0.1:6379/"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(cfg.issuer.as_deref(), Some("https://as.example"));
        assert_eq!(cfg.database_url.as_deref(), Some("postgres://x/y"));
        assert_eq!(cfg.key_encryption_key.as_deref(), Some("a2V5"));
        assert_eq!(cfg.http_workers, Some(3));
        assert_eq!(cfg.redis_url.as_deref(), Some("redis://127.0.0.1:6379/"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::load(Some(&path), []).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn policy_time_zone_follows_daylight_saving() {
        let cfg = Config::load(
            None,
            [("MANDATE_POLICY_TIME_ZONE".into(), "Europe/Paris".into())],
        )
        .unwrap();
        // 2026-01-15 12:00 UTC: CET (+1); 2026-07-15 12:00 UTC: CEST (+2).
        assert_eq!(cfg.policy_offset_secs(1_768_478_400), 3600);
        assert_eq!(cfg.policy_offset_secs(1_784_116_800), 7200);
        let fixed = Config {
            policy_utc_offset_minutes: -300,
            ..Config::default()
        };
        assert_eq!(fixed.policy_offset_secs(1_784_116_800), -18_000);
        let err = Config::load(
            None,
            [("MANDATE_POLICY_TIME_ZONE".into(), "Mars/Olympus".into())],
        )
        .unwrap_err();
        assert!(err.to_string().contains("policy_time_zone"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = Config::load(None, [("MANDATE_SIGNING_ALG".into(), "HS256".into())]).unwrap_err();
        assert!(err.to_string().contains("signing_alg"));
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The documented example file parses and its values are the defaults.
    #[test]
    fn example_config_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mandate.example.toml");
        let cfg = Config::load(Some(&path), []).unwrap();
        assert_eq!(cfg, Config::default());
    }
}
