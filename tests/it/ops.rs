//! Metadata, health, metrics, and the binary itself.
use crate::both;
use crate::harness::H;

async fn metadata_lists_what_is_implemented(h: H) -> H {
    h.server("https://m.mcp.test/", "prod", &["search:read:internal"])
        .await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let v: serde_json::Value = h
            .http
            .get(h.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["issuer"], h.base.as_str(), "issuer is byte-exact");
        assert_eq!(v["token_endpoint"], format!("{}/token", h.base));
        assert_eq!(v["jwks_uri"], format!("{}/jwks.json", h.base));
        assert_eq!(
            v["introspection_endpoint"],
            format!("{}/introspect", h.base)
        );
        assert_eq!(v["revocation_endpoint"], format!("{}/revoke", h.base));
        assert_eq!(
            v["grant_types_supported"],
            serde_json::json!([
                "client_credentials",
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:token-exchange",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "urn:openid:params:grant-type:ciba"
            ])
        );
        // Only with an ID-JAG issuer configured (see tests/it/delegation.rs).
        assert!(v.get("authorization_grant_profiles_supported").is_none());
        assert_eq!(
            v["token_endpoint_auth_methods_supported"],
            serde_json::json!([
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none"
            ])
        );
        let algs = v["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .unwrap();
        assert!(
            algs.iter().any(|a| a == "ES256") && !algs.iter().any(|a| a == "none" || a == "HS256")
        );
        let scopes = v["scopes_supported"].as_array().unwrap();
        assert!(scopes.iter().any(|s| s == "tools:search"));
        assert_eq!(v["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(v["authorization_endpoint"], format!("{}/authorize", h.base));
    }
    h
}
both!(metadata_lists_what_is_implemented);

async fn authorize_never_redirects_for_an_unknown_client(h: H) -> H {
    let r = h
        .http
        .get(h.url("/authorize?response_type=code&client_id=x&redirect_uri=https://evil.test/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none(), "never redirects");
    h
}
both!(authorize_never_redirects_for_an_unknown_client);

async fn health_readiness_and_metrics(h: H) -> H {
    let (a, s) = (h.url("/healthz"), h.url("/readyz"));
    assert_eq!(h.http.get(a).send().await.unwrap().status(), 200);
    assert_eq!(h.http.get(s).send().await.unwrap().status(), 200);
    // One refused token request shows up by reason.
    h.post(
        "/token",
        Some(("agt_x", "y")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let text = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("mandate_tokens_refused_total{reason=\"invalid_client\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mandate_http_requests_total{endpoint=\"token\",status=\"401\"} 1"),
        "{text}"
    );
    assert!(text.contains("mandate_http_request_duration_seconds_bucket{"));
    h
}
both!(health_readiness_and_metrics);

/// The real binary: starts on the embedded default, prints its issuer, the CLI registers
/// against the running server, and SIGTERM stops it cleanly.
#[tokio::test]
async fn binary_serves_cli_registers_and_sigterm_stops() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_mandate");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data])
        .env("MANDATE_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let issuer = line
        .split("(issuer ")
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches(')')
        .to_string();
    assert!(issuer.starts_with("http://127.0.0.1:"), "{line}");

    let cli = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let srv = cli(&[
        "servers",
        "add",
        "--uri",
        "https://cli.mcp.test/",
        "--name",
        "cli",
        "--env",
        "dev",
        "--tool",
        "echo:read:public",
        "--json",
    ]);
    let agent = cli(&[
        "agents",
        "add",
        "--name",
        "cli agent",
        "--owner",
        "me@example.com",
        "--env",
        "dev",
        "--resource",
        "https://cli.mcp.test/",
        "--scope",
        "tools:echo",
        "--json",
    ]);
    assert!(
        srv["client_secret"]
            .as_str()
            .unwrap()
            .starts_with("mnd_cs_")
    );
    let (id, secret) = (
        agent["client_id"].as_str().unwrap(),
        agent["client_secret"].as_str().unwrap(),
    );

    // The running server picks the change up within its refresh interval.
    let http = reqwest::Client::new();
    let mut status = 0;
    for _ in 0..40 {
        let r = http
            .post(format!("{issuer}/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let keys = cli(&["keys", "list", "--json"]);
    assert_eq!(keys[0]["state"], "active");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let code = child.wait().unwrap();
    assert!(code.success(), "exit status {code:?}");
}
