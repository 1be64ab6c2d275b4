//! Hidden origin sessions (docs/configuration.md, sessions): one rain_sid for the browser, one
//! jar per origin and user inside it, never leaked.

use std::sync::atomic::Ordering;

use crate::support::*;

const TWO_ORIGINS: &str = r#"<ul><li><fragment origin="a" src="/s"></fragment></li><li><fragment origin="b" src="/s"></fragment></li></ul>"#;

async fn two_origin_edge(
    extra: &str,
) -> (
    Edge,
    Origin,
    std::sync::Arc<AppSessions>,
    Origin,
    std::sync::Arc<AppSessions>,
) {
    let (a, sa) = session_origin("A", "JSESSIONID", ms(0)).await;
    let (b, sb) = session_origin("B", "JSESSIONID", ms(0)).await;
    let edge = Edge::start(
        &config(&[("a", a.url("/"), ""), ("b", b.url("/"), "")], HOME, extra),
        &[("page.html", &layout(TWO_ORIGINS))],
    )
    .await;
    (edge, a, sa, b, sb)
}

#[tokio::test]
async fn origin_cookies_stay_hidden_and_rain_sid_is_set_right() {
    let (edge, ..) = two_origin_edge("").await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    let set: Vec<&String> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(set.len(), 1, "exactly one cookie, rain-edge's own: {set:?}");
    let v = set[0];
    assert!(v.starts_with("rain_sid="), "{v}");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(v.split("; ").any(|a| a == attr), "{attr} missing: {v}");
    }
    assert!(!v.contains("Secure"));
    let sid = sid_of(&r).expect("sid");
    assert!(sid.len() >= 22, "at least 128 bits: {sid}");
    assert!(!r.body.contains("JSESSIONID"));
    // Later pages of the same user: no new cookie at all.
    let r2 = edge
        .get_with("/", &[("Cookie", &format!("rain_sid={sid}"))])
        .await;
    assert!(
        r2.headers.iter().all(|(k, _)| k != "set-cookie"),
        "{:?}",
        r2.headers
    );
}

#[tokio::test]
async fn two_users_two_origins_stay_apart() {
    let (edge, a, _sa, b, _sb) = two_origin_edge("").await;
    let u1 = edge.get("/").await;
    let u2 = edge.get("/").await;
    let (s1, s2) = (sid_of(&u1).expect("sid 1"), sid_of(&u2).expect("sid 2"));
    assert_ne!(s1, s2);
    let items1 = list_items(&u1.body)
        .iter()
        .map(|s| field(s, "session").unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    for round in 2..=3 {
        let r1 = edge
            .get_with("/", &[("Cookie", &format!("rain_sid={s1}"))])
            .await;
        let r2 = edge
            .get_with("/", &[("Cookie", &format!("rain_sid={s2}"))])
            .await;
        let i1 = list_items(&r1.body);
        let i2 = list_items(&r2.body);
        // Each origin keeps each user's own session, and counts on.
        assert_eq!(
            field(i1[0], "session"),
            Some(items1[0].as_str()),
            "{}",
            r1.body
        );
        assert_eq!(
            field(i1[1], "session"),
            Some(items1[1].as_str()),
            "{}",
            r1.body
        );
        assert_eq!(field(i1[0], "count"), Some(round.to_string().as_str()));
        assert_eq!(field(i2[0], "count"), Some(round.to_string().as_str()));
        assert_ne!(field(i1[0], "session"), field(i2[0], "session"));
    }
    // Origin A never received B's cookie (both are called JSESSIONID), nor a rain_sid.
    let a_sessions: Vec<String> = a
        .requests()
        .iter()
        .filter_map(|r| r.header("cookie").map(str::to_string))
        .collect();
    let b_ids: Vec<String> = b
        .requests()
        .iter()
        .filter_map(|r| r.header("cookie").map(str::to_string))
        .collect();
    assert!(!a_sessions.is_empty() && !b_ids.is_empty());
    for c in &a_sessions {
        assert!(!b_ids.contains(c), "origin A got B's cookie {c}");
        assert!(!c.contains("rain_sid"), "origin A got rain_sid");
    }
}

#[tokio::test]
async fn first_visit_creates_one_origin_session_then_fetches_stay_parallel() {
    let (o, st) = session_origin("J", "JSESSIONID", ms(300)).await;
    let body = r#"<ul><li><fragment origin="o" src="/1"></fragment></li><li><fragment origin="o" src="/2"></fragment></li><li><fragment origin="o" src="/3"></fragment></li></ul>"#;
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "kind = \"jsp\"\ntimeout = \"2s\"")],
            HOME,
            "",
        ),
        &[("page.html", &layout(body))],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(
        st.issued.load(Ordering::SeqCst),
        1,
        "one origin session on the first visit:\n{}",
        r.body
    );
    let items = list_items(&r.body);
    let sessions: Vec<_> = items.iter().map(|i| field(i, "session")).collect();
    assert!(
        sessions.iter().all(|s| s.is_some() && *s == sessions[0]),
        "{sessions:?}"
    );
    let sid = sid_of(&r).expect("sid");
    let again = edge
        .get_with("/", &[("Cookie", &format!("rain_sid={sid}"))])
        .await;
    assert_eq!(st.issued.load(Ordering::SeqCst), 1);
    assert!(
        again.total < ms(550),
        "a later visit should be fully parallel, took {:?}",
        again.total
    );
}

#[tokio::test]
async fn generic_origins_do_not_wait_on_a_first_visit() {
    let (o, _st) = session_origin("G", "SID", ms(300)).await;
    let body =
        r#"<fragment origin="o" src="/1"></fragment><fragment origin="o" src="/2"></fragment>"#;
    let edge = Edge::with_page(&o, body).await;
    let r = edge.get("/").await;
    assert!(r.total < ms(550), "took {:?}", r.total);
}

#[tokio::test]
async fn path_scoping_and_deletion_are_honoured() {
    let o = Origin::start(|req| match req.path.as_str() {
        "/app/a/set" => R::html("set")
            .with_header("set-cookie", "scoped=1; Path=/app/a")
            .with_header("set-cookie", "everywhere=1; Path=/"),
        "/app/del" => R::html("del").with_header("set-cookie", "everywhere=; Max-Age=0; Path=/"),
        _ => R::html(format!("cookie=[{}]", req.header("cookie").unwrap_or(""))),
    })
    .await;
    let mut routes = String::new();
    let mut templates = Vec::new();
    for (name, src) in [
        ("set", "/app/a/set"),
        ("under", "/app/a/x"),
        ("other", "/app/b/x"),
        ("del", "/app/del"),
    ] {
        routes.push_str(&format!(
            "[[routes]]\npath = \"/{name}\"\nlayout = \"{name}.html\"\n"
        ));
        templates.push((
            format!("{name}.html"),
            layout(&format!(r#"<fragment origin="o" src="{src}"></fragment>"#)),
        ));
    }
    let edge = Edge::start_pages(&config(&[("o", o.url("/"), "")], &routes, ""), &templates).await;
    let sid = sid_of(&edge.get("/set").await).expect("sid");
    let c = format!("rain_sid={sid}");
    let under = edge.get_with("/under", &[("Cookie", &c)]).await;
    assert!(
        under.body.contains("scoped=1") && under.body.contains("everywhere=1"),
        "{}",
        under.body
    );
    let other = edge.get_with("/other", &[("Cookie", &c)]).await;
    assert!(
        other.body.contains("cookie=[everywhere=1]"),
        "{}",
        other.body
    );
    edge.get_with("/del", &[("Cookie", &c)]).await;
    let after = edge.get_with("/other", &[("Cookie", &c)]).await;
    assert!(after.body.contains("cookie=[]"), "{}", after.body);
}

#[tokio::test]
async fn idle_expiry_drops_the_jars_and_forged_ids_are_never_adopted() {
    let (edge, _a, sa, ..) = two_origin_edge("[session]\nidle_timeout = \"1s\"\n").await;
    let first = edge.get("/").await;
    let sid = sid_of(&first).expect("sid");
    let a_session = field(list_items(&first.body)[0], "session")
        .expect("a session")
        .to_string();
    // Within the idle timeout the origin session is kept.
    let kept = edge
        .get_with("/", &[("Cookie", &format!("rain_sid={sid}"))])
        .await;
    assert_eq!(
        field(list_items(&kept.body)[0], "session"),
        Some(a_session.as_str()),
        "{}",
        kept.body
    );
    assert_eq!(field(list_items(&kept.body)[0], "count"), Some("2"));
    // A forged (well-formed but unknown) id gets a fresh one.
    let forged = "A".repeat(43);
    let r = edge
        .get_with("/", &[("Cookie", &format!("rain_sid={forged}"))])
        .await;
    let fresh = sid_of(&r).expect("a new sid for a forged one");
    assert_ne!(fresh, forged);
    assert_ne!(
        field(list_items(&r.body)[0], "session"),
        Some(a_session.as_str())
    );
    let garbage = edge
        .get_with("/", &[("Cookie", "rain_sid=../../etc")])
        .await;
    assert!(sid_of(&garbage).is_some());
    // Idle past the timeout: the session and its jars are gone.
    tokio::time::sleep(ms(1600)).await;
    let issued = sa.issued.load(Ordering::SeqCst);
    let late = edge
        .get_with("/", &[("Cookie", &format!("rain_sid={sid}"))])
        .await;
    let new_sid = sid_of(&late).expect("expired session replaced");
    assert_ne!(new_sid, sid);
    assert_ne!(
        field(list_items(&late.body)[0], "session"),
        Some(a_session.as_str())
    );
    assert_eq!(sa.issued.load(Ordering::SeqCst), issued + 1);
}

#[tokio::test]
async fn public_only_pages_set_no_session_and_public_fragments_carry_no_cookies() {
    let (o, st) = session_origin("P", "JSESSIONID", ms(0)).await;
    let edge = Edge::with_page(&o, r#"<fragment origin="o" src="/p" public></fragment>"#).await;
    let r = edge.get("/").await;
    assert!(sid_of(&r).is_none(), "{:?}", r.headers);
    let again = edge.get("/").await;
    assert!(o.requests().iter().all(|q| q.header("cookie").is_none()));
    assert_eq!(
        st.issued.load(Ordering::SeqCst),
        2,
        "a public fragment's cookie is not kept"
    );
    assert!(again.body.contains("count=1"));
}

#[tokio::test]
async fn store_outage_keeps_pages_answering() {
    let (o, _st) = session_origin("X", "JSESSIONID", ms(0)).await;
    let dead = free_port();
    let body = r#"<ul><li><fragment origin="o" src="/pub" public></fragment></li><li><fragment origin="o" src="/priv">PRIVATE-FALLBACK</fragment></li></ul>"#;
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "")],
            HOME,
            &format!("[session]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:{dead}/0\"\n"),
        ),
        &[("page.html", &layout(body))],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(sid_of(&r).is_none(), "no rain_sid that cannot be saved");
    let items = list_items(&r.body);
    assert!(items[0].contains("X session="), "{}", r.body);
    assert_eq!(items[1], "PRIVATE-FALLBACK");
    assert!(o.requests_to("/priv").is_empty());
}

#[tokio::test]
async fn redis_shares_sessions_between_instances_and_survives_an_outage() {
    let redis = Redis::start().await;
    let (a, sa) = session_origin("A", "JSESSIONID", ms(0)).await;
    let (b, _sb) = session_origin("B", "PHPSESSID", ms(0)).await;
    let cfg = config(
        &[("a", a.url("/"), ""), ("b", b.url("/"), "")],
        HOME,
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    );
    let page = layout(TWO_ORIGINS);
    let e1 = Edge::start(&cfg, &[("page.html", &page)]).await;
    let e2 = Edge::start(&cfg, &[("page.html", &page)]).await;
    let first = e1.get("/").await;
    let sid = sid_of(&first).expect("sid");
    let c = format!("rain_sid={sid}");
    let ids: Vec<String> = list_items(&first.body)
        .iter()
        .map(|i| field(i, "session").unwrap_or_default().to_string())
        .collect();
    for round in 2..=5u32 {
        let edge = if round % 2 == 0 { &e2 } else { &e1 };
        let r = edge.get_with("/", &[("Cookie", &c)]).await;
        assert!(
            sid_of(&r).is_none(),
            "instance {} did not know the session",
            round % 2
        );
        let items = list_items(&r.body);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(
                field(item, "session"),
                Some(ids[i].as_str()),
                "round {round}: {}",
                r.body
            );
            assert_eq!(field(item, "count"), Some(round.to_string().as_str()));
        }
    }
    assert_eq!(sa.issued.load(Ordering::SeqCst), 1);
    // Outage: pages still answer, quickly, with fallbacks for the private fragments.
    let port = redis.port;
    drop(redis);
    let r = e2.get_with("/", &[("Cookie", &c)]).await;
    assert_eq!(r.status, 200);
    assert!(r.total < ms(2500), "took {:?}", r.total);
    assert!(!r.body.contains("session="), "{}", r.body);
    // Recovery when it returns (the data of the old one is gone: a fresh session).
    let _redis = Redis::start_on(port).await;
    let mut recovered = false;
    for _ in 0..20 {
        let r = e1.get("/").await;
        if sid_of(&r).is_some() && r.body.contains("A session=") {
            recovered = true;
            break;
        }
        tokio::time::sleep(ms(200)).await;
    }
    assert!(recovered, "rain-edge did not recover when Redis came back");
}

/// Two pages of one user at the same time, each receiving a different
/// cookie from the same origin: neither update may be lost.
async fn concurrent_updates_merge(store_extra: &str, instances: usize) {
    let o = Origin::start(|req| match req.path.as_str() {
        "/set-a" => R::html("A")
            .with_header("set-cookie", "a=1; Path=/")
            .after(ms(200)),
        "/set-b" => R::html("B")
            .with_header("set-cookie", "b=1; Path=/")
            .after(ms(200)),
        _ => R::html(format!("cookie=[{}]", req.header("cookie").unwrap_or(""))),
    })
    .await;
    let (routes, templates) = pages(&[
        (
            "show",
            r#"<fragment origin="o" src="/show"></fragment>"#.to_string(),
        ),
        (
            "pa",
            r#"<fragment origin="o" src="/set-a"></fragment>"#.to_string(),
        ),
        (
            "pb",
            r#"<fragment origin="o" src="/set-b"></fragment>"#.to_string(),
        ),
    ]);
    let cfg = config(&[("o", o.url("/"), "")], &routes, store_extra);
    let mut edges = Vec::new();
    for _ in 0..instances {
        edges.push(Edge::start_pages(&cfg, &templates).await);
    }
    let sid = sid_of(&edges[0].get("/show").await).expect("sid");
    let c = format!("rain_sid={sid}");
    let with_cookie = [("Cookie", c.as_str())];
    let (a, b) = tokio::join!(
        edges[0].get_with("/pa", &with_cookie),
        edges[instances - 1].get_with("/pb", &with_cookie)
    );
    assert!(a.body.contains('A') && b.body.contains('B'));
    let shown = edges[0].get_with("/show", &[("Cookie", &c)]).await;
    assert!(
        shown.body.contains("a=1") && shown.body.contains("b=1"),
        "an update was lost: {}",
        shown.body
    );
}

#[tokio::test]
async fn concurrent_requests_of_one_user_keep_both_cookie_updates() {
    concurrent_updates_merge("", 1).await;
}

#[tokio::test]
async fn concurrent_requests_on_two_instances_keep_both_cookie_updates_in_redis() {
    let redis = Redis::start().await;
    concurrent_updates_merge(
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
        2,
    )
    .await;
}

/// The store cut off mid-run with its data intact (Redis stopped with
/// SIGSTOP: every call meets its deadline): pages answer, private fragments
/// get their fallback, no `rain_sid` is handed out that cannot be saved.
/// Once the store is back, the user's jar is as it was: the origin's
/// session goes on, and the origin never issued a second one.
#[tokio::test]
async fn a_store_cut_off_mid_run_loses_nothing_written_to_the_jars() {
    let redis = Redis::start().await;
    let (a, sa) = session_origin("A", "JSESSIONID", ms(0)).await;
    let edge = Edge::start(
        &config(
            &[("a", a.url("/"), "")],
            HOME,
            &format!(
                "[session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
                redis.url()
            ),
        ),
        &[(
            "page.html",
            &layout(r#"<fragment origin="a" src="/s">PRIVATE-FALLBACK</fragment>"#),
        )],
    )
    .await;
    let first = edge.get("/").await;
    let sid = sid_of(&first).expect("sid");
    let cookie = format!("rain_sid={sid}");
    let id = field(&first.body, "session")
        .expect("origin session")
        .to_string();
    let second = edge.get_with("/", &[("Cookie", &cookie)]).await;
    assert_eq!(field(&second.body, "count"), Some("2"), "{}", second.body);

    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &redis.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} redis");
    };
    signal("-STOP");
    let cut = edge.get_with("/", &[("Cookie", &cookie)]).await;
    let newcomer = edge.get("/").await;
    signal("-CONT");
    assert_eq!(cut.status, 200);
    assert!(cut.body.contains("PRIVATE-FALLBACK"), "{}", cut.body);
    assert!(cut.total < ms(2500), "took {:?}", cut.total);
    assert_eq!(newcomer.status, 200);
    assert!(
        sid_of(&newcomer).is_none(),
        "a rain_sid that could not be saved was set"
    );

    let back = edge.get_with("/", &[("Cookie", &cookie)]).await;
    assert!(sid_of(&back).is_none(), "the session was not kept");
    assert_eq!(
        field(&back.body, "session"),
        Some(id.as_str()),
        "{}",
        back.body
    );
    assert_eq!(field(&back.body, "count"), Some("3"), "{}", back.body);
    assert_eq!(sa.issued.load(Ordering::SeqCst), 1);
}
