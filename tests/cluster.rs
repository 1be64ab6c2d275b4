//! Instances sharing a real Redis (`store = "redis"`): each lists the
//! other in `/cluster`; an origin registered through one instance's admin
//! API reaches the other within 2 s, a deletion too; a restarted instance
//! takes the registry back; a stopped one greys out.

use std::time::{Duration, Instant};

use crate::support::*;

/// The config of instance `node` sharing `redis`, with an admin listener.
fn clustered(origins: &[(&str, String, &str)], redis: &Redis, node: &str) -> String {
    config(
        origins,
        HOME,
        &format!(
            "admin_listen = \"{{admin}}\"\n[session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    )
    .replace("node_id = \"test-node\"", &format!("node_id = \"{node}\""))
}

#[tokio::test]
async fn instances_share_the_registry_and_see_each_other() {
    let redis = Redis::start().await;
    let o = Origin::with_routes(vec![("/x/f", R::html("<p>EXTRA</p>"))]).await;
    // The page's fragment nests one of `extra`, an origin only the admin
    // API registers (a layout may not name an unknown origin).
    let host = Origin::with_routes(vec![(
        "/h/wrap",
        R::html("<fragment origin=\"extra\" src=\"/f\"><i>none</i></fragment>"),
    )])
    .await;
    let page = layout("<fragment origin=\"host\" src=\"/wrap\"></fragment>");
    let cfg = |node: &str| clustered(&[("host", host.url("/h/"), "")], &redis, node);
    let edge1 = Edge::start(&cfg("node-1"), &[("page.html", &page)]).await;
    let edge2 = Edge::start(&cfg("node-2"), &[("page.html", &page)]).await;
    // Each sees both.
    for edge in [&edge1, &edge2] {
        within(
            Duration::from_secs(10),
            "both nodes in /cluster",
            || async {
                let v = json(&admin_request(edge, "GET", "/cluster", None).await);
                let ids: Vec<&str> = v["nodes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|n| n["node_id"].as_str()).collect())
                    .unwrap_or_default();
                ids == ["node-1", "node-2"]
            },
        )
        .await;
    }
    let v = json(&admin_request(&edge1, "GET", "/cluster", None).await);
    let n2 = &v["nodes"][1];
    assert_eq!(n2["admin"], edge2.admin.to_string().as_str(), "{v}");
    assert!(
        n2["started"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{v}"
    );

    // Registered on one, served by the other within 2 s.
    let body = format!(r#"{{"url": "{}"}}"#, o.url("/x/"));
    let put = admin_request(&edge1, "PUT", "/origins/extra", Some(&body)).await;
    assert_eq!(put.status, 201, "{}", put.body);
    let started = Instant::now();
    within(
        Duration::from_secs(2),
        "the origin on the other instance",
        || async { edge2.get("/").await.body.contains("<p>EXTRA</p>") },
    )
    .await;
    let took = started.elapsed();
    let v = json(&admin_request(&edge2, "GET", "/origins/extra", None).await);
    assert_eq!(v["source"], "api", "{v}");

    // A reload keeps it; a restart takes it back from the registry.
    assert_eq!(
        admin_request(&edge2, "POST", "/reload", None).await.status,
        200
    );
    assert!(edge2.get("/").await.body.contains("<p>EXTRA</p>"));
    drop(edge2);
    let edge2 = Edge::start(&cfg("node-2"), &[("page.html", &page)]).await;
    within(
        Duration::from_secs(5),
        "the registry after a restart",
        || async { edge2.get("/").await.body.contains("<p>EXTRA</p>") },
    )
    .await;

    // Deleted on one, gone from the other within 2 s.
    assert_eq!(
        admin_request(&edge2, "DELETE", "/origins/extra", None)
            .await
            .status,
        200
    );
    within(
        Duration::from_secs(2),
        "the deletion on the other instance",
        || async {
            admin_request(&edge1, "GET", "/origins/extra", None)
                .await
                .status
                == 404
        },
    )
    .await;
    assert!(edge1.get("/").await.body.contains("<i>none</i>"));

    // A stopped instance greys out (stale) in the other's view.
    drop(edge1);
    within(Duration::from_secs(20), "node-1 stale", || async {
        let v = json(&admin_request(&edge2, "GET", "/cluster", None).await);
        v["nodes"].as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["node_id"] == "node-1" && n["stale"] == true)
        })
    })
    .await;
    println!("registry propagation took {took:?}");
}

/// A purge on one instance drops the cached copies of every instance
/// sharing the store.
#[tokio::test]
async fn a_purge_reaches_every_instance() {
    let redis = Redis::start().await;
    let o = Origin::with_routes(vec![(
        "/nav",
        R::html("<p>NAV</p>").with_header("cache-control", "public, max-age=60"),
    )])
    .await;
    let page = layout("<fragment origin=\"o\" src=\"/nav\" public></fragment>");
    let cfg = |node: &str| clustered(&[("o", o.url("/"), "")], &redis, node);
    let edge1 = Edge::start(&cfg("node-1"), &[("page.html", &page)]).await;
    let edge2 = Edge::start(&cfg("node-2"), &[("page.html", &page)]).await;
    // Let both subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for edge in [&edge1, &edge2, &edge1, &edge2] {
        assert!(edge.get("/").await.body.contains("<p>NAV</p>"));
    }
    assert_eq!(o.requests_to("/nav").len(), 2, "each instance fetched once");
    let r = admin_request(
        &edge1,
        "POST",
        "/purge",
        Some(r#"{"origin": "o", "path": "/nav"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    within(
        Duration::from_secs(2),
        "the purge on the other instance",
        || async {
            let before = o.requests_to("/nav").len();
            edge2.get("/").await;
            o.requests_to("/nav").len() > before
        },
    )
    .await;
    edge1.get("/").await;
    assert_eq!(o.requests_to("/nav").len(), 4, "both fetched again");
}
