//! The `rain-edge` command: argument parsing, logging, and the three modes
//! (run, `--check`, `demo`). anyhow is used here only.

use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(feature = "demo")]
use rain_edge::demo;
use rain_edge::{edge, server};

// NOTE: a proxy allocates and frees many small buffers per page from several
// threads; under load glibc's malloc took about a third of rain-edge's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Opts out of transparent huge pages. mimalloc asks for them on its arenas,
/// and a proxy's heap is many small, short-lived blocks: with huge pages,
/// 2 MiB regions that are mostly free still count in RSS (under 2,000
/// concurrent pages, 59 MB of a 133 MB RSS were huge pages).
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours; a failure (an old kernel) only leaves the default in place.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

const USAGE: &str = "\
usage: rain-edge [--config PATH] [--check] [--upgrade] [--log-format text|json]
       rain-edge demo [--config PATH]
       rain-edge --version

  --config PATH   the configuration file (default: config/rain-edge.toml;
                  for `demo`: config/demo.toml)
  --check         validate the config, its templates and their fragments;
                  print every error and exit 1, or exit 0
  --upgrade       take the listening sockets over from the running instance:
                  start this one, then send the old one SIGQUIT
                  (through server.upgrade_socket)
  demo            start the bundled demo origins and rain-edge together
  --log-format F  `text` (default) or `json`: one JSON object per line
  --version       print the version

Logging: RUST_LOG (default `info`). Every line of a request carries its
request id and the node id. `RUST_LOG=info,rain_edge::access=info` adds an
access line per page with its fragments' outcomes (`=debug`: every request).";

struct Args {
    config: Option<PathBuf>,
    check: bool,
    demo: bool,
    json_logs: bool,
    upgrade: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: None,
        check: false,
        demo: false,
        json_logs: false,
        upgrade: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                let p = it.next().ok_or("--config needs a path")?;
                args.config = Some(PathBuf::from(p));
            }
            s if s.starts_with("--config=") => {
                args.config = Some(PathBuf::from(&s["--config=".len()..]))
            }
            "--check" => args.check = true,
            "--upgrade" | "-u" => args.upgrade = true,
            "--log-format" => match it.next().as_deref() {
                Some("json") => args.json_logs = true,
                Some("text") => args.json_logs = false,
                other => {
                    return Err(format!(
                        "--log-format takes `text` or `json`, not `{}`",
                        other.unwrap_or("")
                    ))
                }
            },
            "demo" => args.demo = true,
            "--version" | "-V" => {
                println!("rain-edge {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(args))
}

fn init_logging(json: bool) {
    // The access log is off unless RUST_LOG asks for it: a line per page
    // costs more than some pages do.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rain_edge::access=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rain-edge: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let default = if args.demo {
        "config/demo.toml"
    } else {
        "config/rain-edge.toml"
    };
    let config = args.config.unwrap_or_else(|| PathBuf::from(default));
    if args.check {
        return match edge::load_snapshot(&config) {
            Ok(snap) => {
                for w in snap.cfg.warnings() {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: OK ({} origins, {} routes)",
                    config.display(),
                    snap.cfg.origins.len(),
                    snap.cfg.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s)", errors.0.len());
                ExitCode::FAILURE
            }
        };
    }
    init_logging(args.json_logs);
    match run(config, args.demo, args.upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rain-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: PathBuf, with_demo: bool, upgrade: bool) -> anyhow::Result<()> {
    let before_exit = if with_demo {
        Some(start_demo(&config)?)
    } else {
        None
    };
    server::run(
        config,
        server::RunOptions {
            upgrade,
            before_exit,
        },
    )?;
    Ok(())
}

/// Starts the demo's origins; what stops them (run just before exiting).
#[cfg(feature = "demo")]
fn start_demo(config: &std::path::Path) -> anyhow::Result<Box<dyn FnOnce() + Send>> {
    let started = demo::start_origins(config).map_err(anyhow::Error::msg)?;
    for addr in &started.addrs {
        tracing::info!(%addr, "demo origin started");
    }
    for app in &started.apps {
        tracing::info!(port = app.port, "remote application started");
    }
    tracing::info!("open http://127.0.0.1:8080/ (and /tailor); Ctrl-C stops the demo");
    // Dropping them stops the demo's remote apps.
    Ok(Box::new(move || drop(started)))
}

#[cfg(not(feature = "demo"))]
fn start_demo(_config: &std::path::Path) -> anyhow::Result<Box<dyn FnOnce() + Send>> {
    anyhow::bail!(
        "this binary was built without the demo: build with `--features demo` (scripts/demo does)"
    )
}
