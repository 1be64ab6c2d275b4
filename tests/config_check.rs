//! `--check` and start-up: every error at once, each naming file and key, or
//! template and line.

use crate::support::*;

/// Checks `path`: refused, naming `file: expected` for each of `expected`,
/// with `errors` errors in all.
fn check_fails_with(path: &std::path::Path, expected: &[&str], errors: usize) {
    let (ok, out) = run_check(path);
    assert!(!ok, "--check accepted a bad config:\n{out}");
    let file = path.display().to_string();
    for expected in expected {
        assert!(
            out.contains(&format!("{file}: {expected}")),
            "missing `{expected}` in:\n{out}"
        );
    }
    assert!(out.contains(&format!("{errors} error(s)")), "{out}");
}

#[test]
fn check_reports_every_config_error_with_file_and_key() {
    let dir = TempDir::new();
    dir.write("templates/home.html", "<html></html>");
    let path = dir.write(
        "bad.toml",
        r#"
[server]
listen = ["not-an-address"]
header_timeout = "ten seconds"
colour = "blue"

[fragments]
max_bytes = "lots"

[origins.shop]
url = "ftp://example/"
kind = "cobol"
timeout = 250

[origins.nourl]
kind = "php"

[[routes]]
path = "/"
layout = "missing.html"
"#,
    );
    check_fails_with(
        &path,
        &[
            "server.listen[0]: `not-an-address` is not an address",
            "server.header_timeout: `ten seconds`",
            "server.colour: unknown key",
            "fragments.max_bytes: `lots` is not a size",
            "origins.shop.url: `ftp://example/`",
            "origins.shop.kind: `cobol` is not a kind",
            "origins.shop.timeout: must be a string",
            "origins.nourl.url: is required",
            "routes[0].layout:",
        ],
        9,
    );
}

#[test]
fn check_reports_bad_server_balance_and_health_keys() {
    let dir = TempDir::new();
    dir.write("templates/home.html", "<html></html>");
    let path = dir.write(
        "bad.toml",
        r#"
[server]
resolve_interval = "soon"

[origins.shop]
url = "http://shop.internal:8080/shop/"
servers = ["10.0.0.7:8080", "http://10.0.0.8/", "10.0.0.7:8080", 7]
balance = "sticky"
health_check = "../admin"
health_interval = "0s"

[origins.app]
url = "http://app.internal/"
servers = "10.0.0.9"
health_check = ""

[[routes]]
path = "/"
layout = "home.html"
"#,
    );
    check_fails_with(
        &path,
        &[
            "server.resolve_interval: `soon`",
            "origins.shop.servers[1]: `http://10.0.0.8/` is not a server address",
            "origins.shop.servers[2]: `10.0.0.7:8080` is listed twice",
            "origins.shop.servers[3]: must be a string",
            "origins.shop.balance: `sticky` is not a balance; use session or round_robin",
            "origins.shop.health_check: `../admin` is not a path below the origin's url",
            "origins.shop.health_interval: must be more than 0",
            "origins.app.servers: must be a list of strings",
            "origins.app.health_check: must be a path",
        ],
        9,
    );

    // The same keys, written well, check OK.
    let good = dir.write(
        "good.toml",
        r#"
[server]
resolve_interval = "1m"

[origins.shop]
url = "https://shop.internal/shop/"
servers = ["10.0.0.7:8443", "app2.internal", "[::1]:9000"]
kind = "jsp"
health_check = "/health"
health_interval = "2s"

[[routes]]
path = "/"
layout = "home.html"
"#,
    );
    let (ok, out) = run_check(&good);
    assert!(ok, "{out}");
}

#[test]
fn check_names_the_template_and_line_of_bad_fragments() {
    let dir = TempDir::new();
    dir.write(
        "templates/home.html",
        "<html>\n<body>\n<fragment origin=\"ghost\" src=\"/x\"></fragment>\n<fragment src=\"http://elsewhere.example/x\"></fragment>\n<fragment origin=\"shop\" src=\"/../up\"></fragment>\n<fragment origin=\"shop\" src=\"/ok\" timeout=\"soon\"></fragment>\n<fragment origin=\"shop\"></fragment>\n<fragment origin=\"shop\" src=\"/ok\" fallback=\"nofile.html\"></fragment>\n<fragment origin=\"shop\" src=\"/fine\"></fragment>\n</body></html>\n",
    );
    let path = dir.write(
        "rain-edge.toml",
        "[origins.shop]\nurl = \"http://127.0.0.1:9/shop/\"\n[[routes]]\npath = \"/\"\nlayout = \"home.html\"\n",
    );
    let (ok, out) = run_check(&path);
    assert!(!ok);
    let tpl = dir.0.join("templates/home.html").display().to_string();
    for (line, what) in [
        (3, "`ghost` is not a configured origin"),
        (4, "not under any configured origin"),
        (5, "climbs above"),
        (6, "timeout"),
        (7, "needs a `src`"),
        (8, "fallback:"),
    ] {
        assert!(
            out.contains(&format!("{tpl}: line {line}: ")) && out.contains(what),
            "missing line {line} `{what}` in:\n{out}"
        );
    }
    assert!(!out.contains("line 9"), "{out}");
}

#[test]
fn a_good_config_checks_ok_and_the_demo_config_is_valid() {
    let dir = TempDir::new();
    dir.write(
        "templates/home.html",
        "<html><body><fragment origin=\"shop\" src=\"/x\"></fragment></body></html>",
    );
    let path = dir.write("c.toml", "[origins.shop]\nurl = \"http://127.0.0.1:9/\"\n[[routes]]\npath = \"/\"\nlayout = \"home.html\"\n");
    let (ok, out) = run_check(&path);
    assert!(ok, "{out}");
    assert!(out.contains("OK (1 origins, 1 routes)"), "{out}");
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let (ok, out) = run_check(&demo);
    assert!(ok, "{out}");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rain-edge.toml");
    let (ok, out) = run_check(&example);
    assert!(ok, "{out}");
}

#[test]
fn a_bad_config_stops_start_up_before_listening() {
    let dir = TempDir::new();
    let port = free_port();
    let path = dir.write("c.toml", &format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\nbogus = 1\n[[routes]]\npath = \"/\"\nlayout = \"home.html\"\n"));
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.bogus: unknown key"), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn version_and_usage() {
    let out = std::process::Command::new(bin())
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rain-edge "));
    let out = std::process::Command::new(bin())
        .arg("--frobnicate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument `--frobnicate`"));
}
