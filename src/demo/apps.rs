//! Starting the real remote applications of `fixtures/remote-apps` for the
//! demo and the tests: PHP's built-in server, and one embedded Tomcat 10
//! (Debian's jars) with the JSP app and the Wicket-like and Spring-like
//! servlets. Each runs in its own process group on a loopback port and is
//! stopped with its whole group when dropped. A missing runtime is an error
//! that says what to install.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Jars the Tomcat app needs, from Debian's packages.
const TOMCAT_JARS: &[(&str, &str)] = &[
    ("tomcat10-embed-core.jar", "libtomcat10-embed-java"),
    ("tomcat10-embed-jasper.jar", "libtomcat10-embed-java"),
    ("tomcat10-embed-el.jar", "libtomcat10-embed-java"),
    ("tomcat10-annotations-api.jar", "libtomcat10-java"),
    ("eclipse-jdt-core.jar", "libtomcat10-java"),
];
const JAVA_DIR: &str = "/usr/share/java";

/// A running remote application.
pub struct RemoteApp {
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

impl Drop for RemoteApp {
    fn drop(&mut self) {
        // The whole process group: php -S workers outlive their master.
        let pgid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
    }
}

fn in_own_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0).stdin(Stdio::null())
}

fn wait_ready(
    mut app: RemoteApp,
    what: &str,
    log: &Path,
    limit: Duration,
) -> Result<RemoteApp, String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", app.port)).is_ok() {
            return Ok(app);
        }
        if let Ok(Some(status)) = app.child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "{what} exited ({status}) before listening:\n{tail}"
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!(
        "{what} did not listen on port {} within {limit:?} (log: {})",
        app.port,
        log.display()
    ))
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Starts the PHP app (`apps/php/www`) on `port`, its sessions in `work`.
pub fn start_php(apps: &Path, port: u16, work: &Path) -> Result<RemoteApp, String> {
    let php =
        which("php").ok_or("php is not installed: apt-get install php-cli (scripts/setup does)")?;
    let sessions = work.join("php-sessions");
    std::fs::create_dir_all(&sessions).map_err(|e| format!("{}: {e}", sessions.display()))?;
    let log = work.join("php.log");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = in_own_group(Command::new(php).args([
        "-d",
        &format!("session.save_path={}", sessions.display()),
        "-d",
        "session.use_strict_mode=0",
        "-S",
        &format!("127.0.0.1:{port}"),
        "-t",
    ]))
    .arg(apps.join("php/www"))
    .env("PHP_CLI_SERVER_WORKERS", "4")
    .stdout(out)
    .stderr(err)
    .spawn()
    .map_err(|e| format!("cannot start php: {e}"))?;
    wait_ready(
        RemoteApp { child, port },
        "php -S",
        &log,
        Duration::from_secs(10),
    )
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

/// Starts the Tomcat app (JSP at `/jsp`, Wicket-like at `/wicket`,
/// Spring-like at `/spring`) on `port`. The Java sources are compiled into
/// `build` when it is older than them.
pub fn start_tomcat(
    apps: &Path,
    port: u16,
    build: &Path,
    work: &Path,
) -> Result<RemoteApp, String> {
    let java =
        which("java").ok_or("java is not installed: apt-get install default-jdk-headless")?;
    let javac =
        which("javac").ok_or("javac is not installed: apt-get install default-jdk-headless")?;
    let mut cp = Vec::new();
    for (jar, pkg) in TOMCAT_JARS {
        let p = Path::new(JAVA_DIR).join(jar);
        if !p.is_file() {
            return Err(format!(
                "{} is missing: apt-get install {pkg} (scripts/setup does)",
                p.display()
            ));
        }
        cp.push(p.display().to_string());
    }
    let cp = cp.join(":");
    let src_dirs = [
        apps.join("tomcat/src"),
        apps.join("wicket"),
        apps.join("spring"),
    ];
    let classes = build.join("classes");
    let stamp = classes.join("Main.class");
    let newest = src_dirs.iter().filter_map(|d| newest_mtime(d)).max();
    let stale = match (newest, std::fs::metadata(&stamp).and_then(|m| m.modified())) {
        (Some(s), Ok(c)) => s > c,
        _ => true,
    };
    if stale {
        std::fs::create_dir_all(&classes).map_err(|e| format!("{}: {e}", classes.display()))?;
        let mut sources: Vec<PathBuf> = Vec::new();
        for dir in &src_dirs {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            sources.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "java")),
            );
        }
        let out = Command::new(javac)
            .args(["--release", "17", "-nowarn", "-cp", &cp, "-d"])
            .arg(&classes)
            .args(&sources)
            .output()
            .map_err(|e| format!("cannot run javac: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "javac failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let log = work.join("tomcat.log");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = in_own_group(&mut Command::new(java))
        .args([
            "-Xss512k",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
        ])
        .arg(format!("{}:{cp}", classes.display()))
        .arg("Main")
        .arg(port.to_string())
        .arg(apps)
        .arg(work.join("tomcat"))
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start java: {e}"))?;
    wait_ready(
        RemoteApp { child, port },
        "tomcat",
        &log,
        Duration::from_secs(30),
    )
}
