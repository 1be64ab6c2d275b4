//! Against the real remote applications: PHP (php -S, file sessions), JSP on
//! embedded Tomcat 10, and the Wicket-like and Spring-like servlets. Their
//! sessions live hidden in rain-edge: counters continue, logins survive the
//! session id change, users stay apart.

use crate::support::*;

fn frag(origin: &str, src: &str, extra: &str) -> String {
    format!(r#"<fragment origin="{origin}" src="{src}" {extra}>FALLBACK-{origin}</fragment>"#)
}

#[tokio::test]
async fn php_counter_login_and_two_users() {
    let (php, _work) = apps::php().await;
    let (routes, templates) = pages(&[
        ("", frag("php", "/counter.php", "")),
        ("login", frag("php", "/login.php?user=bob", "")),
        ("private", frag("php", "/private.php", "")),
        ("forbidden", frag("php", "/forbidden.php", "")),
    ]);
    let url = format!("http://127.0.0.1:{}/", php.port);
    let edge = Edge::start_pages(
        &config(
            &[("php", url, "kind = \"php\"\ntimeout = \"3s\"")],
            &routes,
            "",
        ),
        &templates,
    )
    .await;

    let mut alice = Browser::new(&edge);
    let r1 = alice.get("/").await;
    assert_eq!(field(&r1.body, "count"), Some("1"), "{}", r1.body);
    let s1 = field(&r1.body, "session").expect("php session").to_string();
    let r2 = alice.get("/").await;
    assert_eq!(field(&r2.body, "session"), Some(s1.as_str()));
    assert_eq!(field(&r2.body, "count"), Some("2"));
    assert!(!r2
        .headers
        .iter()
        .any(|(k, v)| k == "set-cookie" && v.contains("PHPSESSID")));

    // 401 before login: the unauthorized placeholder (here: the inline fallback).
    assert!(alice.get("/private").await.body.contains("FALLBACK-php"));
    assert!(alice.get("/forbidden").await.body.contains("FALLBACK-php"));

    // Login: PHP gives a new session id and redirects; rain-edge follows and keeps it.
    let login = alice.get("/login").await;
    assert!(login.body.contains("user=bob"), "{}", login.body);
    let s2 = field(&login.body, "session").expect("session").to_string();
    assert_ne!(s2, s1, "session_regenerate_id did not give a new id");
    let r3 = alice.get("/").await;
    assert_eq!(field(&r3.body, "session"), Some(s2.as_str()));
    assert!(r3.body.contains("user=bob"));
    assert!(alice
        .get("/private")
        .await
        .body
        .contains("Private page of bob"));

    // Another user has their own PHP session.
    let mut bob = Browser::new(&edge);
    let other = bob.get("/").await;
    assert_eq!(field(&other.body, "count"), Some("1"));
    assert!(other.body.contains("user=guest"));
    assert_ne!(field(&other.body, "session"), Some(s2.as_str()));
}

#[tokio::test]
async fn php_session_lock_serializes_fragments_without_breaking_the_page() {
    let (php, _work) = apps::php().await;
    let body = format!(
        "<ul><li>{}</li><li>{}</li><li>{}</li></ul>",
        frag("php", "/counter.php?sleep_ms=300&amp;f=1", ""),
        frag("php", "/counter.php?sleep_ms=300&amp;f=2", ""),
        frag("php", "/counter.php?sleep_ms=300&amp;f=3", "")
    );
    let (routes, templates) = pages(&[("", body)]);
    let url = format!("http://127.0.0.1:{}/", php.port);
    let edge = Edge::start_pages(
        &config(
            &[("php", url, "kind = \"php\"\ntimeout = \"3s\"")],
            &routes,
            "",
        ),
        &templates,
    )
    .await;
    let mut user = Browser::new(&edge);
    for visit in 0..2u32 {
        let r = user.get("/").await;
        let items = list_items(&r.body);
        let sessions: Vec<_> = items.iter().map(|i| field(i, "session")).collect();
        assert!(
            sessions[0].is_some() && sessions.iter().all(|s| *s == sessions[0]),
            "one PHP session: {}",
            r.body
        );
        let mut counts: Vec<u32> = items
            .iter()
            .filter_map(|i| field(i, "count")?.parse().ok())
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            vec![visit * 3 + 1, visit * 3 + 2, visit * 3 + 3],
            "{}",
            r.body
        );
        // PHP's session lock runs them one after another.
        assert!(r.total >= ms(850), "visit {visit} took {:?}", r.total);
    }
}

#[tokio::test]
async fn jsp_wicket_and_spring_sessions_logins_and_users() {
    let (tc, _work) = apps::tomcat().await;
    let base = format!("http://127.0.0.1:{}", tc.port);
    let all = format!(
        "<ul><li>{}</li><li>{}</li><li>{}</li></ul>",
        frag("jsp", "/counter.jsp", ""),
        frag("wicket", "/counter", ""),
        frag("spring", "/counter", "")
    );
    let (routes, templates) = pages(&[
        ("", all),
        ("login-jsp", frag("jsp", "/login.jsp?user=ann", "")),
        ("login-spring", frag("spring", "/login?user=ann", "")),
        ("login-wicket", frag("wicket", "/login?user=ann", "")),
        (
            "private",
            format!(
                "<ul><li>{}</li><li>{}</li><li>{}</li></ul>",
                frag("jsp", "/private.jsp", ""),
                frag("wicket", "/private", ""),
                frag("spring", "/private", "")
            ),
        ),
        ("forbidden", frag("jsp", "/forbidden.jsp", "")),
    ]);
    let origins = [
        (
            "jsp",
            format!("{base}/jsp/"),
            "kind = \"jsp\"\ntimeout = \"8s\"",
        ),
        (
            "wicket",
            format!("{base}/wicket/"),
            "kind = \"wicket\"\ntimeout = \"8s\"",
        ),
        (
            "spring",
            format!("{base}/spring/"),
            "kind = \"spring\"\ntimeout = \"8s\"",
        ),
    ];
    let edge = Edge::start_pages(&config(&origins, &routes, ""), &templates).await;

    let mut ann = Browser::new(&edge);
    let first = ann.get("/").await;
    let items = list_items(&first.body);
    assert_eq!(items.len(), 3, "{}", first.body);
    let ids: Vec<String> = items
        .iter()
        .map(|i| {
            field(i, "session")
                .unwrap_or_else(|| panic!("no session in {i}"))
                .to_string()
        })
        .collect();
    for (i, name) in ["jsp", "wicket", "spring"].iter().enumerate() {
        assert!(
            items[i].contains(&format!("{name} session=")),
            "{}",
            items[i]
        );
        assert_eq!(field(items[i], "count"), Some("1"), "{}", items[i]);
    }
    let again = ann.get("/").await;
    for (i, item) in list_items(&again.body).iter().enumerate() {
        assert_eq!(field(item, "session"), Some(ids[i].as_str()), "{item}");
        assert_eq!(field(item, "count"), Some("2"), "{item}");
    }

    // 401 and 403 from the servlet container: placeholders, page whole.
    let private = ann.get("/private").await;
    assert_eq!(
        private.body.matches("FALLBACK-").count(),
        3,
        "{}",
        private.body
    );
    assert!(ann.get("/forbidden").await.body.contains("FALLBACK-jsp"));

    // Logins change the container's session id; rain-edge keeps the new one.
    for (route, idx) in [("login-jsp", 0), ("login-spring", 2), ("login-wicket", 1)] {
        let r = ann.get(&format!("/{route}")).await;
        assert!(r.body.contains("user=ann"), "{route}: {}", r.body);
        let after = ann.get("/").await;
        let item = list_items(&after.body)[idx].to_string();
        assert!(item.contains("user=ann"), "{route}: {item}");
        assert_ne!(
            field(&item, "session"),
            Some(ids[idx].as_str()),
            "{route}: the session id did not change"
        );
    }
    assert_eq!(
        ann.get("/private")
            .await
            .body
            .matches("private page of ann")
            .count(),
        3
    );

    // A second user is a guest everywhere, in sessions of their own.
    let mut ben = Browser::new(&edge);
    let theirs = ben.get("/").await;
    for item in list_items(&theirs.body) {
        assert!(
            item.contains("user=guest") && item.contains("count=1"),
            "{item}"
        );
    }
}

/// The value of the `"u"` key after `marker` in a page (a Wicket Ajax
/// call's URL, as rewritten).
fn ajax_url(body: &str, marker: &str) -> String {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {body}"));
    let rest = &body[..at];
    let start = rest
        .rfind("\"u\":\"")
        .unwrap_or_else(|| panic!("no \"u\" before {marker}"))
        + 5;
    let end = body[start..].find('"').expect("end of u") + start;
    body[start..end].to_string()
}

/// Wicket's Ajax through rain-edge, against the Wicket-like app on a real
/// Tomcat: the inline calls' URLs go through `/_rain/o/`, the
/// `<ajax-response>` components come back rewritten like the fragment
/// (classes renamed, links into the page), an Ajax form posts within the
/// user's hidden session, and a stale call's `Ajax-Location` leads to the
/// page.
#[tokio::test]
async fn wicket_ajax_calls_go_through_rain_edge_and_their_answers_are_rewritten() {
    let (tc, _work) = apps::tomcat().await;
    let base = format!("http://127.0.0.1:{}", tc.port);
    let (routes, templates) = pages(&[("", frag("wicket", "/counter", ""))]);
    let edge = Edge::start_pages(
        &config(
            &[(
                "wicket",
                format!("{base}/wicket/"),
                "kind = \"wicket\"\ntimeout = \"8s\"",
            )],
            &routes,
            "",
        ),
        &templates,
    )
    .await;
    let mut ann = Browser::new(&edge);
    let page = ann.get("/").await;
    assert!(page.body.contains("wicket session="), "{}", page.body);
    // The inline calls now name rain-edge, with the fragment and the page.
    let link = ajax_url(&page.body, "\"c\":\"ajax-link\"");
    assert!(
        link.starts_with("/_rain/o/wicket/counter?")
            && link.contains("-ajaxlink&rain.f=wicket&rain.page=/"),
        "{link}"
    );
    let form = ajax_url(&page.body, "\"c\":\"ajax-form\"");
    assert!(
        page.body
            .contains("<script src=\"/_rain/r/wicket/wicket-ajax.js\">"),
        "{}",
        page.body
    );
    let js = ann.get("/_rain/r/wicket/wicket-ajax.js").await;
    assert!(js.body.contains("Wicket-Ajax-BaseURL"), "{}", js.body);

    let sid = ann.sid.clone().expect("rain_sid");
    let cookie = format!("rain_sid={sid}");
    let own = format!("http://{}", edge.addr);
    let wicket_headers = [
        ("Cookie", cookie.as_str()),
        ("Wicket-Ajax", "true"),
        ("Wicket-Ajax-BaseURL", "counter?0"),
        ("Origin", own.as_str()),
    ];
    for n in 1..=2 {
        let r = get(edge.addr, &link, &wicket_headers).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.header("content-type").is_some_and(|t| t.contains("xml")));
        assert!(
            r.body.contains(&format!("<component id=\"ajaxcount\"><![CDATA[<span id=\"ajaxcount\" class=\"wicket-ajaxcount\">ajax={n} ")),
            "{}",
            r.body
        );
        // A link in the component moves the fragment within the page.
        assert!(
            r.body
                .contains("class=\"wicket-reload\" href=\"/?rain.wicket=counter%3F0\""),
            "{}",
            r.body
        );
    }
    let r = post(
        edge.addr,
        &form,
        &[
            ("Cookie", cookie.as_str()),
            ("Wicket-Ajax", "true"),
            ("Wicket-Ajax-BaseURL", "counter?0"),
            ("Origin", own.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"item=pear",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<li>pear</li>"), "{}", r.body);
    // The page shown again at the fragment's version renders it anew: the
    // old call is stale, and its Ajax-Location leads back to the page.
    let again = ann.get("/?rain.wicket=counter%3F0").await;
    assert!(again.body.contains("ajax=2"), "{}", again.body);
    assert!(again.body.contains("<li>pear</li>"), "{}", again.body);
    let r = get(edge.addr, &link, &wicket_headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let to = r.header("ajax-location").unwrap_or_default().to_string();
    assert!(to.starts_with("/?rain.wicket=counter%3F"), "{to}");
    // Another site cannot post to it.
    let evil = post(
        edge.addr,
        &form,
        &[
            ("Cookie", cookie.as_str()),
            ("Origin", "http://evil.example"),
        ],
        b"item=evil",
    )
    .await;
    assert_eq!(evil.status, 403);
}
