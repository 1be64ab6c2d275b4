//! Forms of fragments submitted through rain-edge to the real remote apps,
//! with their hidden sessions: Post/Redirect/Get, validation errors and CSRF
//! refusals shown inside the page, multipart bodies, GET forms.

use crate::support::*;

impl<'e> Browser<'e> {
    pub async fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let cookie = self
            .sid
            .as_ref()
            .map(|s| format!("rain_sid={s}"))
            .unwrap_or_default();
        post(
            self.edge.addr,
            path,
            &[("Cookie", &cookie), ("Content-Type", content_type)],
            body,
        )
        .await
    }
}

#[tokio::test]
async fn php_form_post_redirect_get_and_validation_error_in_the_page() {
    let (php, _work) = apps::php().await;
    let body = r#"<h1>SHOP PAGE</h1><fragment id="basket" origin="php" src="/form.php"></fragment><footer>FOOTER</footer>"#;
    let url = format!("http://127.0.0.1:{}/", php.port);
    let edge = Edge::start(
        &config(
            &[("php", url, "kind = \"php\"\ntimeout = \"3s\"")],
            HOME,
            "",
        ),
        &[("page.html", &layout(body))],
    )
    .await;
    let mut user = Browser::new(&edge);
    let page = user.get("/?q=1").await;
    let action = attr_value(&page.body, "action", "<form");
    assert_eq!(
        action,
        "/_rain/f/php/form.php?rain.f=basket&rain.page=/%3Fq%3D1"
    );
    // Post/Redirect/Get: the browser lands on the page with the fragment at the target.
    let r = user
        .post(
            &action,
            "application/x-www-form-urlencoded",
            b"item=apples+%26+pears",
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let to = r.header("location").expect("location").to_string();
    assert_eq!(to, "/?q=1&rain.basket=form.php%3Fdone%3D1");
    let after = user.get(&to).await;
    assert!(
        after.body.contains("Added.") && after.body.contains("<li>apples &amp; pears</li>"),
        "{}",
        after.body
    );
    assert!(after.body.contains("SHOP PAGE") && after.body.contains("FOOTER"));
    // A validation error (422) is shown as the fragment, in the whole page, with its status.
    let bad = user
        .post(&action, "application/x-www-form-urlencoded", b"item=")
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.body.contains("An item needs a name.")
            && bad.body.contains("SHOP PAGE")
            && bad.body.contains("FOOTER"),
        "{}",
        bad.body
    );
    // The list is kept in the PHP session: one item, posted once.
    let again = user.get("/").await;
    assert_eq!(again.body.matches("<li>").count(), 1, "{}", again.body);
}

#[tokio::test]
async fn jsp_multipart_spring_csrf_and_wicket_listener_forms() {
    let (tc, _work) = apps::tomcat().await;
    let base = format!("http://127.0.0.1:{}", tc.port);
    let (routes, templates) = pages(&[
        (
            "jsp",
            r#"<fragment id="j" origin="jsp" src="/form.jsp"></fragment>"#.to_string(),
        ),
        (
            "spring",
            r#"<fragment id="s" origin="spring" src="/counter"></fragment>"#.to_string(),
        ),
        (
            "wicket",
            r#"<fragment id="w" origin="wicket" src="/counter"></fragment>"#.to_string(),
        ),
    ]);
    let origins = [
        (
            "jsp",
            format!("{base}/jsp/"),
            "kind = \"jsp\"\ntimeout = \"8s\"",
        ),
        (
            "spring",
            format!("{base}/spring/"),
            "kind = \"spring\"\ntimeout = \"8s\"",
        ),
        (
            "wicket",
            format!("{base}/wicket/"),
            "kind = \"wicket\"\ntimeout = \"8s\"",
        ),
    ];
    let edge = Edge::start_pages(&config(&origins, &routes, ""), &templates).await;
    let mut user = Browser::new(&edge);

    // JSP, multipart: the body reaches Tomcat intact, once.
    let page = user.get("/jsp").await;
    let action = attr_value(&page.body, "action", "<form");
    assert!(
        action.starts_with("/_rain/f/jsp/form.jsp?") && !action.contains("jsessionid"),
        "{action}"
    );
    let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"item\"\r\n\r\npears \xc3\xa9\r\n--XyZ--\r\n";
    let r = user
        .post(&action, "multipart/form-data; boundary=XyZ", multipart)
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let after = user.get(r.header("location").expect("location")).await;
    assert!(after.body.contains("<li>pears é</li>"), "{}", after.body);

    // Spring-like: the session-bound CSRF token passes through; a stale one gets 403 in the page.
    let page = user.get("/spring").await;
    let action = attr_value(&page.body, "action", "<form");
    let token = attr_value(&page.body, "value", "name=\"_csrf\"");
    let form = format!("_csrf={token}&item=plums");
    let r = user
        .post(
            &action,
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let after = user.get(r.header("location").expect("location")).await;
    assert!(after.body.contains("<li>plums</li>"), "{}", after.body);
    let stale = user
        .post(
            &action,
            "application/x-www-form-urlencoded",
            b"_csrf=AAAA&item=x",
        )
        .await;
    assert_eq!(stale.status, 403, "{}", stale.body);
    assert!(
        stale.body.contains("</html>"),
        "the page is whole: {}",
        stale.body
    );

    // Wicket-like: the listener URL acts, then redirects to the next page version.
    let page = user.get("/wicket").await;
    assert!(
        page.header("content-security-policy").is_none(),
        "a fragment's CSP reached the browser"
    );
    assert!(!page.body.contains("jsessionid"), "{}", page.body);
    let action = attr_value(&page.body, "action", "<form");
    assert!(
        action.starts_with("/_rain/f/wicket/counter?") && action.contains("-form"),
        "{action}"
    );
    let r = user
        .post(&action, "application/x-www-form-urlencoded", b"item=figs")
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let after = user.get(r.header("location").expect("location")).await;
    assert!(after.body.contains("<li>figs</li>"), "{}", after.body);
}

#[tokio::test]
async fn get_forms_navigate_their_fragment() {
    let o = Origin::start(|req| match req.path.as_str() {
        "/s/box" => R::html("<form method=\"get\" action=\"search\"><input name=\"q\"></form>"),
        "/s/search" => R::html(format!(
            "<p>RESULTS for {}</p>",
            req.param("q").unwrap_or("-")
        )),
        "/s/side" => R::html("<p>SIDE</p>"),
        _ => R::status(404, ""),
    })
    .await;
    let body = r#"<fragment id="find" origin="o" src="/box"></fragment><fragment id="side" origin="o" src="/side"></fragment>"#;
    let edge = Edge::start(
        &config(&[("o", o.url("/s/"), "")], HOME, ""),
        &[("page.html", &layout(body))],
    )
    .await;
    let page = edge.get("/?rain.side=side").await;
    assert_eq!(attr_value(&page.body, "action", "<form"), "/");
    assert!(page.body.contains("<input type=\"hidden\" name=\"rain.side\" value=\"side\"><input type=\"hidden\" name=\"rain.find\" value=\"search\">"), "{}", page.body);
    // What a browser submits: the hidden fields and the form's own.
    let r = edge.get("/?rain.side=side&rain.find=search&q=rust").await;
    assert!(
        r.body.contains("RESULTS for rust") && r.body.contains("SIDE"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn form_bodies_are_streamed_intact_and_bounded() {
    let o = Origin::start(|req| match req.path.as_str() {
        "/u/form" => R::html(
            "<form method=\"post\" action=\"upload\"><input type=\"file\" name=\"f\"></form>",
        ),
        "/u/upload" => {
            let sum: u64 = req.body.iter().map(|&b| u64::from(b)).sum();
            R::html(format!(
                "<p>GOT {} bytes sum {sum} type {}</p>",
                req.body.len(),
                req.header("content-type").unwrap_or("-")
            ))
        }
        _ => R::status(404, ""),
    })
    .await;
    let edge = Edge::start(
        &config(
            &[("o", o.url("/u/"), "timeout = \"5s\"")],
            HOME,
            "max_body = \"4MiB\"\n",
        ),
        &[(
            "page.html",
            &layout(r#"<fragment id="up" origin="o" src="/form"></fragment>"#),
        )],
    )
    .await;
    let page = edge.get("/").await;
    let action = attr_value(&page.body, "action", "<form");
    // 3 MB: more than fragments.max_bytes (2 MiB), less than max_body.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let ct = "application/octet-stream";
    let r = post(edge.addr, &action, &[("Content-Type", ct)], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains(&format!("GOT 3000000 bytes sum {sum} type {ct}")),
        "{}",
        r.body
    );
    // The same body, chunked by the browser.
    let mut raw = format!("POST {action} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for piece in body.chunks(65_536) {
        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = raw_request(edge.addr, &raw).await;
    assert!(
        r.body.contains(&format!("GOT 3000000 bytes sum {sum}")),
        "{}",
        r.body
    );
    assert_eq!(
        o.requests_to("/u/upload").len(),
        2,
        "each POST reached the origin once"
    );
    // Declared over max_body: 413 before anything goes to the origin.
    let head = format!("POST {action} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\nxxxxxxxx", 5 << 20);
    let r = raw_request(edge.addr, head.as_bytes()).await;
    assert_eq!(r.status, 413);
    assert_eq!(o.requests_to("/u/upload").len(), 2);
}
