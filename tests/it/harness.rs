//! Starts the real server in-process on a free port, on SQLite or on a fresh PostgreSQL schema.
use mandate::agents::NewAgent;
use mandate::clock::ManualClock;
use mandate::config::Config;
use mandate::resources::{ServerManifest, parse_tool_spec};
use mandate::server::Running;
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct H {
    pub running: Option<Running>,
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    pub config: Config,
    pub schema: Option<String>,
    pub dir: tempfile::TempDir,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Says, past libtest's output capture, that a test was skipped and why.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

impl H {
    /// A server on SQLite with Redis (`MANDATE_TEST_REDIS_URL`, or `redis_url` when given) and a
    /// key prefix of its own; `None` (and a SKIPPED line) when no Redis is configured.
    pub async fn start_redis(test: &str, redis_url: Option<String>) -> Option<H> {
        let url = match redis_url.or_else(|| std::env::var("MANDATE_TEST_REDIS_URL").ok()) {
            Some(u) => u,
            None => {
                skip(
                    &format!("{test}::redis"),
                    "MANDATE_TEST_REDIS_URL is not set",
                );
                return None;
            }
        };
        Self::start_with(Backend::Sqlite, test, |c| {
            c.redis_url = Some(url);
            c.redis_prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
        })
        .await
    }

    /// A server on `backend`; `None` (and a SKIPPED line) when PostgreSQL is not configured.
    pub async fn start(backend: Backend, test: &str) -> Option<H> {
        Self::start_with(backend, test, |_| {}).await
    }

    pub async fn start_with(
        backend: Backend,
        test: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<H> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            key_publish_lead_secs: 0,
            refresh_interval_ms: 100,
            log_level: "warn".into(),
            ..Config::default()
        };
        let mut schema = None;
        if backend == Backend::Postgres {
            let Ok(url) = std::env::var("MANDATE_TEST_DATABASE_URL") else {
                skip(
                    &format!("{test}::postgres"),
                    "MANDATE_TEST_DATABASE_URL is not set",
                );
                return None;
            };
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let db = mandate::store::Store::connect(&url, None).await.unwrap();
            use sea_orm::ConnectionTrait;
            db.db
                .execute_unprepared(&format!("CREATE SCHEMA \"{name}\""))
                .await
                .unwrap();
            config.database_url = Some(url);
            schema = Some(name);
        }
        tweak(&mut config);
        let clock = Arc::new(ManualClock::new(now()));
        let mut h = H {
            running: None,
            base: String::new(),
            clock,
            http: reqwest::Client::new(),
            config,
            schema,
            dir,
        };
        h.boot().await;
        Some(h)
    }

    /// (Re)starts the server on the same database and data directory.
    pub async fn boot(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        let running = mandate::server::start(
            self.config.clone(),
            self.clock.clone(),
            self.schema.as_deref(),
            std::future::pending(),
        )
        .await
        .unwrap();
        // A restart keeps the issuer, as a real deployment does (the port may change).
        self.config.issuer = Some(running.issuer().to_string());
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
        // With Redis, a node serves once it has subscribed and resynchronised.
        let app = self.app().clone();
        assert!(
            eventually(10, || async { app.backend.healthy() }).await,
            "the revocation store never became healthy"
        );
    }

    /// Another node on the same database (own port, own caches).
    pub async fn second_node(&self) -> Running {
        let cfg = self.config.clone();
        mandate::server::start(
            cfg,
            self.clock.clone(),
            self.schema.as_deref(),
            std::future::pending(),
        )
        .await
        .unwrap()
    }

    pub fn now(&self) -> i64 {
        use mandate::clock::Clock;
        self.clock.now()
    }

    pub fn app(&self) -> &Arc<mandate::app::App> {
        &self.running.as_ref().unwrap().app
    }

    pub async fn finish(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        if let (Some(schema), Some(url)) = (&self.schema, &self.config.database_url) {
            let db = mandate::store::Store::connect(url, None).await.unwrap();
            use sea_orm::ConnectionTrait;
            let _ = db
                .db
                .execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await;
        }
    }

    /// Registers an MCP server; returns (client_id, secret).
    pub async fn server(&self, uri: &str, env: &str, tools: &[&str]) -> (String, String) {
        let m = ServerManifest {
            resource: uri.into(),
            name: format!("server {uri}"),
            environment: env.into(),
            tools: tools.iter().map(|t| parse_tool_spec(t).unwrap()).collect(),
        };
        let c = self.app().admin().create_server(&m).await.unwrap();
        self.app().after_registry_change().await;
        (c.client_id, c.client_secret.unwrap())
    }

    /// Registers an agent; returns (client_id, secret if any).
    pub async fn agent(&self, n: NewAgent) -> (String, Option<String>) {
        let c = self.app().admin().create_agent(&n).await.unwrap();
        self.app().after_registry_change().await;
        (c.client_id, c.client_secret)
    }

    /// A secret-based agent in `env` allowed on `resources` with `scopes` as its ceiling.
    pub async fn simple_agent(
        &self,
        env: &str,
        resources: &[&str],
        scopes: &str,
        method: &str,
    ) -> (String, String) {
        let (id, secret) = self
            .agent(NewAgent {
                name: "test agent".into(),
                owner: "owner@example.com".into(),
                trust_level: "medium".into(),
                environment: env.into(),
                allowed_resources: resources.iter().map(|s| s.to_string()).collect(),
                scope_ceiling: vec![scopes.into()],
                auth_method: method.into(),
                ..Default::default()
            })
            .await;
        (id, secret.unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a form, optionally with Basic credentials.
    pub async fn post(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        Resp::from(req.send().await.unwrap()).await
    }

    /// A client_credentials token for a Basic agent.
    pub async fn token(&self, id: &str, secret: &str, extra: &[(&str, &str)]) -> Resp {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        self.post("/token", Some((id, secret)), &form).await
    }

    pub async fn introspect(&self, server: (&str, &str), token: &str) -> Value {
        let r = self
            .post("/introspect", Some(server), &[("token", token)])
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn access_token(&self) -> String {
        assert_eq!(self.status, 200, "{:?}", self.body);
        self.body["access_token"].as_str().unwrap().to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Runs a test body on SQLite and on PostgreSQL (skipped when not configured).
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let h =
                    $crate::harness::H::start($crate::harness::Backend::Sqlite, stringify!($name))
                        .await
                        .unwrap();
                let h = super::$name(h).await;
                h.finish().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) =
                    $crate::harness::H::start($crate::harness::Backend::Postgres, stringify!($name))
                        .await
                {
                    let h = super::$name(h).await;
                    h.finish().await;
                }
            }
        }
    };
}

/// A redis-server of the test's own on a free port, for fault tests (stop, restart empty).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// `None` (and a SKIPPED line) when redis-server is not installed.
    pub async fn start(test: &str) -> Option<Self> {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            skip(test, "redis-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Self { port, child: None };
        r.up().await;
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (with an empty dataset) and waits until it answers.
    pub async fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start");
    }

    /// Kills it (SIGKILL: nothing is saved).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// Polls `f` every 20 ms until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// A PostgreSQL cluster of the test's own on a free port, for fault tests (stop, restart).
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    /// `None` (and a SKIPPED line) when the PostgreSQL server binaries or `runuser` are missing.
    pub async fn start(test: &str) -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists());
        let (Some(bin), true) = (bin, std::path::Path::new("/usr/sbin/runuser").exists()) else {
            skip(test, "PostgreSQL server binaries or runuser not found");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::process::Command::new("chown")
            .args(["-R", "postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        let ok = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        if !ok {
            skip(test, "initdb failed (not root?)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self { port, dir, bin };
        pg.up();
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?}");
    }

    pub fn up(&self) {
        let opts = format!(
            "-h 127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.pg_ctl(&["-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"]);
    }

    /// Stops it at once (`-m immediate`: like a crash).
    pub fn down(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
