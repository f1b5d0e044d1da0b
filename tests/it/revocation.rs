//! `POST /revoke`: by the holder or an admin, durable across restarts, seen by every node.
use crate::both;
use crate::harness::H;

const A: &str = "https://a.mcp.test/mcp";

async fn holder_and_admin_revoke(mut h: H) -> H {
    let srv = h.server(A, "prod", &["search:read:internal"]).await;
    let srv = (srv.0.as_str().to_owned(), srv.1);
    let server = (srv.0.as_str(), srv.1.as_str());
    let (id, secret) = h
        .simple_agent("prod", &[A], "tools:read", "client_secret_basic")
        .await;
    let (other, other_secret) = h
        .simple_agent("prod", &[A], "tools:read", "client_secret_basic")
        .await;
    let t1 = h.token(&id, &secret, &[]).await.access_token();
    let t2 = h.token(&id, &secret, &[]).await.access_token();

    // Another agent may not revoke it.
    let r = h
        .post("/revoke", Some((&other, &other_secret)), &[("token", &t1)])
        .await;
    assert_eq!((r.status, r.error()), (400, "unauthorized_client"));
    assert_eq!(h.introspect(server, &t1).await["active"], true);
    // Nor may an MCP server, nor anyone unauthenticated.
    let r = h.post("/revoke", Some(server), &[("token", &t1)]).await;
    assert_eq!(r.error(), "unauthorized_client");
    let r = h.post("/revoke", None, &[("token", &t1)]).await;
    assert_eq!((r.status, r.error()), (401, "invalid_client"));

    // The holder can; unknown and garbage tokens are a quiet success (RFC 7009 §2.2).
    let r = h
        .post(
            "/revoke",
            Some((&id, &secret)),
            &[("token", &t1), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.introspect(server, &t1).await["active"], false);
    assert_eq!(h.introspect(server, &t2).await["active"], true);
    let r = h
        .post("/revoke", Some((&id, &secret)), &[("token", "not-a-token")])
        .await;
    assert_eq!(r.status, 200);
    let r = h.post("/revoke", Some((&id, &secret)), &[]).await;
    assert_eq!(r.error(), "invalid_request");

    // An admin bearer token revokes anyone's token; a bad one is 401.
    let admin = h.app().admin().create_admin_token("ops").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let resp = h
        .http
        .post(h.url("/revoke"))
        .bearer_auth("mnd_adm_forged")
        .form(&[("token", &t2)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = h
        .http
        .post(h.url("/revoke"))
        .bearer_auth(&admin)
        .form(&[("token", &t2)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(h.introspect(server, &t2).await["active"], false);

    // A restart forgets nothing.
    h.boot().await;
    let server = (srv.0.as_str(), srv.1.as_str());
    assert_eq!(h.introspect(server, &t1).await["active"], false);
    assert_eq!(h.introspect(server, &t2).await["active"], false);
    h
}
both!(holder_and_admin_revoke);

async fn another_node_sees_changes(h: H) -> H {
    let (sid, ssecret) = h.server(A, "prod", &["search:read:internal"]).await;
    let node2 = h.second_node().await;
    // An agent registered on node 1 (or by the CLI) gets tokens from node 2 within a refresh.
    let (id, secret) = h
        .simple_agent("prod", &[A], "tools:read", "client_secret_basic")
        .await;
    let t = h.token(&id, &secret, &[]).await.access_token();
    let node2_url = |p: &str| format!("http://{}{p}", node2.addr);
    let introspect2 = || async {
        let resp = h
            .http
            .post(node2_url("/introspect"))
            .basic_auth(&sid, Some(&ssecret))
            .form(&[("token", &t)])
            .send()
            .await
            .unwrap();
        resp.json::<serde_json::Value>().await.unwrap()["active"].clone()
    };
    let mut ok = false;
    for _ in 0..50 {
        if introspect2().await == true {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "node 2 never saw the new agent");
    // Revoked on node 1: inactive on node 2 within a refresh interval.
    assert_eq!(
        h.post("/revoke", Some((&id, &secret)), &[("token", &t)])
            .await
            .status,
        200
    );
    let mut gone = false;
    for _ in 0..50 {
        if introspect2().await == false {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "node 2 still accepts a revoked token");
    node2.stop().await.unwrap();
    h
}
both!(another_node_sees_changes);
