//! The `replscope` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use replscope::config::{self, values};
use replscope::link::Fed;
use replscope::observe::text::describe;
use replscope::proxy::{Proxy, ProxyConfig, Reloader, RouteConfig};
use replscope::recording;

mod demo;
mod links;

const PROXY_EXAMPLES: &str = "\
Examples:
  # Between a master on 10.0.0.5:6379 and a replica on this host; then on the replica:
  #   REPLICAOF 127.0.0.1 6380
  replscope proxy --master 10.0.0.5:6379

  # Name the route, listen on all interfaces, JSON logs for a log shipper
  replscope proxy --master redis-main.internal:6379 --name main --listen 0.0.0.0:6380 --log-format json

  # Several masters, one route each, from a file (deploy/replscope.toml); `kill -HUP` reloads it
  replscope proxy --config /etc/replscope/replscope.toml

  # Watch it
  curl -s localhost:9190/metrics | grep replscope_
  replscope links";

/// replscope: a transparent proxy for the Redis/Valkey replication link that explains why replicas drop.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start; boxing variants would only obscure the clap derive.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Forward a replication link between a master and its replicas, and explain it.
    #[command(after_help = PROXY_EXAMPLES)]
    Proxy(ProxyArgs),
    /// Add, list or remove injected faults on a running proxy (started with --enable-faults).
    #[command(after_help = FAULT_EXAMPLES)]
    Fault {
        #[command(subcommand)]
        action: FaultCommand,
    },
    /// Ask a running proxy whether it is up (GET /healthz): exit 0 if so, else one line and exit 1. For
    /// container health checks, which have no curl.
    Health {
        /// The proxy's HTTP address: HOST:PORT or a URL (http://HOST:PORT).
        #[arg(long, env = "REPLSCOPE_HTTP", default_value = "127.0.0.1:9190")]
        http: String,
    },
    /// Print the proxy's links as a table (from its /api/links).
    Links {
        /// The proxy's HTTP address: HOST:PORT or a URL (http://HOST:PORT).
        #[arg(long, env = "REPLSCOPE_HTTP", default_value = "127.0.0.1:9190")]
        http: String,
    },
    /// Start a master, a replica and a proxy between them on loopback, with a small load, and watch.
    Demo {
        /// The server binary (redis-server or valkey-server) [default: the first on PATH].
        #[arg(long, env = "REPLSCOPE_SERVER")]
        server: Option<PathBuf>,
        /// Seconds between two prints of the links table.
        #[arg(long, default_value_t = 3)]
        every: u64,
        /// Stop by itself after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// What to show: a healthy link (steady), or the classic full-resync loop (output-buffer-loop).
        #[arg(long, value_enum, default_value = "steady")]
        scenario: demo::Scenario,
    },
    /// Replay a recorded link (JSON Lines, one read per line) and print each connection's story.
    ///
    /// Example: replscope replay tests/data/captures/valkey-8.1.8-dual.jsonl
    Replay {
        /// The recording.
        file: PathBuf,
        /// Print each link's story as JSON (one object per line) instead of text.
        #[arg(long)]
        json: bool,
    },
}

const FAULT_EXAMPLES: &str = "\
Examples:
  # Throttle the RDB transfer to 4 MiB/s for a minute
  replscope fault add bandwidth --rate 4MiB/s --direction master-to-replica --when phase=rdb-transfer --for 60s
  # Cut the link (with a reset) halfway through the RDB, once
  replscope fault add cut --how reset --when rdb-percent=50 --times 1
  # Stall the replica's ACKs for 5 s while it streams
  replscope fault add stall --duration 5s --direction replica-to-master --when phase=streaming
  replscope fault list
  replscope fault rm --all";

/// `replscope proxy`'s flags.
#[derive(clap::Args)]
struct ProxyArgs {
    /// Several routes from a TOML file (see deploy/replscope.toml); SIGHUP reloads it. The route flags
    /// (--master, --listen, --name, --assume-*, --buffer, --max-links, --forget-after) are then the
    /// file's; --http, --log-format and --enable-faults given here win over it.
    #[arg(long, env = "REPLSCOPE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The master, HOST:PORT (the port is required; the name is resolved for every new connection).
    #[arg(long, env = "REPLSCOPE_MASTER", value_parser = values::master, required_unless_present = "config", conflicts_with = "config")]
    master: Option<String>,
    /// Where replicas connect [default: 127.0.0.1:6380].
    #[arg(long, env = "REPLSCOPE_LISTEN", value_parser = values::listen, conflicts_with = "config")]
    listen: Option<String>,
    /// The route's name, a label on every metric [default: the master address].
    #[arg(long, env = "REPLSCOPE_NAME", conflicts_with = "config")]
    name: Option<String>,
    /// Where /metrics and /api/links are served, for every route [default: 127.0.0.1:9190].
    #[arg(long, env = "REPLSCOPE_HTTP", value_parser = values::listen)]
    http: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "REPLSCOPE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// The largest buffer a busy direction of a link borrows for one read (e.g. 256KiB, 1MiB); quiet
    /// directions read through 16KiB, idle ones hold none [default: 1MiB].
    #[arg(long, env = "REPLSCOPE_BUFFER", value_parser = values::buffer, conflicts_with = "config")]
    buffer: Option<usize>,
    /// Bytes of buffers larger than 16KiB lent out at once, over every link and route; past it, busy
    /// directions read through 16KiB (e.g. 16MiB) [default: 16MiB].
    #[arg(long, env = "REPLSCOPE_BUFFER_POOL", value_parser = values::buffer)]
    buffer_pool: Option<usize>,
    /// Most connections open at once; more are refused [default: 1024].
    #[arg(long, env = "REPLSCOPE_MAX_LINKS", conflicts_with = "config", value_parser = parse_max_links)]
    max_links: Option<usize>,
    /// Allow /api/faults (fault injection: for staging, not production).
    #[arg(long, env = "REPLSCOPE_ENABLE_FAULTS")]
    enable_faults: bool,
    /// Bearer token fault changes need when --http is not on loopback.
    #[arg(long, env = "REPLSCOPE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A fault to install at start, e.g. "cut how=reset when=rdb-percent=50 times=1" (repeatable).
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    faults: Vec<replscope::fault::FaultSpec>,
    /// Ask the master about itself over replscope's own connection (not the replicas'): its
    /// client-output-buffer-limit, repl-backlog-size and repl-timeout (cited as read from the master,
    /// before any --assume-*) and each replica connection's output buffer (omem). Implied by
    /// --master-auth-user or a password.
    #[arg(long, env = "REPLSCOPE_INTROSPECT", conflicts_with = "config")]
    introspect: bool,
    /// The ACL user replscope asks the master as; it needs +config|get +info +client|list (without
    /// +config|get it falls back to --assume-* and the defaults). Its password is read from
    /// REPLSCOPE_MASTER_AUTH_PASSWORD.
    #[arg(long, env = "REPLSCOPE_MASTER_AUTH_USER", conflicts_with = "config")]
    master_auth_user: Option<String>,
    /// The password for --master-auth-user (or the default user's): only from the environment
    /// variable, never on the command line, where every user of the host can read it.
    #[arg(long, env = "REPLSCOPE_MASTER_AUTH_PASSWORD", hide_env_values = true, conflicts_with = "config")]
    master_auth_password: Option<String>,
    /// The master's client-output-buffer-limit replica, e.g. "256mb 64mb 60": full syncs whose
    /// forecast exceeds it are flagged (replscope_sync_doomed).
    #[arg(long, env = "REPLSCOPE_ASSUME_OUTPUT_BUFFER_LIMIT", value_parser = values::output_buffer_limit, conflicts_with = "config")]
    assume_output_buffer_limit: Option<replscope::link::forecast::OutputBufferLimit>,
    /// The master's (and replica's) repl-timeout, e.g. 60s: a close counts as a timeout only after that
    /// much silence (less 1 s for the servers' clock ticks), and explanations cite it as assumed.
    #[arg(long, env = "REPLSCOPE_ASSUME_REPL_TIMEOUT", value_parser = values::repl_timeout, conflicts_with = "config")]
    assume_repl_timeout: Option<std::time::Duration>,
    /// The master's repl-backlog-size, e.g. 1mb: refused partial resyncs are measured against it.
    #[arg(long, env = "REPLSCOPE_ASSUME_BACKLOG", value_parser = values::backlog, conflicts_with = "config")]
    assume_backlog: Option<u64>,
    /// A replica with no open link for this long loses its record and every series labelled with it
    /// (e.g. 10m, 30s; 0 keeps them for ever) [default: 10m].
    #[arg(long, env = "REPLSCOPE_FORGET_AFTER", value_parser = values::forget_after, conflicts_with = "config")]
    forget_after: Option<std::time::Duration>,
}

/// What `replscope proxy` runs with, and what a reload compares against.
struct Setup {
    log_format: LogFormat,
    proxy: ProxyConfig,
    /// The file, with `--config`.
    file: Option<PathBuf>,
}

impl ProxyArgs {
    /// The log format and the proxy's configuration, from the flags or the file they name.
    fn into_setup(self) -> anyhow::Result<Setup> {
        let (routes, file_http, file_format, file_faults) = match &self.config {
            Some(path) => {
                let file = config::load(path)?;
                (file.routes, file.http, file.log_format, file.enable_faults)
            }
            None => {
                if std::env::args_os().any(|a| a.to_string_lossy().starts_with("--master-auth-password")) {
                    anyhow::bail!(
                        "--master-auth-password on the command line shows the password to every user of this host (ps): \
                         set REPLSCOPE_MASTER_AUTH_PASSWORD instead"
                    );
                }
                let introspect = replscope::introspect::Introspection::from_parts(
                    self.introspect,
                    self.master_auth_user.clone(),
                    self.master_auth_password.clone(),
                )
                .map_err(anyhow::Error::msg)?;
                let master = self.master.clone().unwrap_or_default();
                let forget = self.forget_after.unwrap_or(config::DEFAULT_FORGET_AFTER);
                let route = RouteConfig {
                    name: self.name.clone().unwrap_or_else(|| master.clone()),
                    master,
                    listen: self.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
                    buffer: self.buffer.unwrap_or(config::DEFAULT_BUFFER),
                    max_links: self.max_links.unwrap_or(config::DEFAULT_MAX_LINKS),
                    settings: replscope::link::settings::ServerSettings {
                        repl_timeout: self.assume_repl_timeout,
                        output_buffer_limit: self.assume_output_buffer_limit,
                        backlog: self.assume_backlog,
                        master: Default::default(),
                    },
                    forget_after: (!forget.is_zero()).then_some(forget),
                    introspect,
                };
                (vec![route], None, None, None)
            }
        };
        let log_format = match (self.log_format, file_format.as_deref()) {
            (Some(f), _) => f,
            (None, Some("json")) => LogFormat::Json,
            (None, _) => LogFormat::Text,
        };
        let proxy = ProxyConfig {
            http: self.http.or(file_http).unwrap_or_else(|| DEFAULT_HTTP.to_string()),
            enable_faults: self.enable_faults || file_faults.unwrap_or(false),
            admin_token: self.admin_token,
            faults: self.faults,
            routes,
            buffer_pool: self.buffer_pool.unwrap_or(replscope::proxy::pool::DEFAULT_BUDGET),
            http_limits: Default::default(),
        };
        Ok(Setup { log_format, proxy, file: self.config })
    }
}

/// `--max-links`: 0 would refuse every replica, so it is refused here.
fn parse_max_links(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 refuses every connection: give 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of links (1 or more)")),
    }
}

const DEFAULT_LISTEN: &str = "127.0.0.1:6380";
const DEFAULT_HTTP: &str = "127.0.0.1:9190";

/// Where the API is, and the token for changes.
#[derive(clap::Args)]
struct ApiArgs {
    /// The proxy's HTTP address.
    #[arg(long, env = "REPLSCOPE_HTTP", default_value = "127.0.0.1:9190")]
    http: String,
    /// The proxy's --admin-token (needed when its --http is not on loopback).
    #[arg(long, env = "REPLSCOPE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

// Parsed once at start; boxing variants would only obscure the clap derive.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum FaultCommand {
    /// Add a fault: bandwidth (--rate), latency (--delay [--jitter]), stall (--duration), cut (--how),
    /// limit (--bytes).
    Add {
        /// bandwidth, latency, stall, cut or limit.
        #[arg(value_parser = ["bandwidth", "latency", "stall", "cut", "limit"])]
        kind: String,
        /// Bandwidth: bytes per second, e.g. 4MiB/s.
        #[arg(long)]
        rate: Option<String>,
        /// Latency: e.g. 250ms.
        #[arg(long)]
        delay: Option<String>,
        /// Latency: plus or minus, e.g. 20ms.
        #[arg(long)]
        jitter: Option<String>,
        /// Stall: e.g. 5s.
        #[arg(long)]
        duration: Option<String>,
        /// Cut: fin or reset.
        #[arg(long)]
        how: Option<String>,
        /// Limit: bytes still forwarded before the cut, e.g. 1MiB.
        #[arg(long)]
        bytes: Option<String>,
        /// master-to-replica, replica-to-master or both.
        #[arg(long, default_value = "both")]
        direction: String,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this replica endpoint (ip:port).
        #[arg(long)]
        replica: Option<String>,
        /// now, phase=P, phase=P+30s, rdb-bytes=N or rdb-percent=P.
        #[arg(long, default_value = "now")]
        when: String,
        /// Remove the fault after this long, e.g. 60s.
        #[arg(long = "for")]
        for_: Option<String>,
        /// Stop firing after this many links.
        #[arg(long)]
        times: Option<u64>,
        /// all (links open now or later) or open (only the links open now).
        #[arg(long, default_value = "all")]
        scope: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the faults in force.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a fault, or all of them.
    Rm {
        /// The fault's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Remove every fault.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change a bandwidth fault's rate while it runs.
    Set {
        /// The fault's id.
        id: u64,
        /// The new rate, e.g. 8MiB/s.
        #[arg(long)]
        rate: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn parse_fault(s: &str) -> Result<replscope::fault::FaultSpec, String> {
    replscope::fault::FaultRequest::from_words(s).and_then(|r| r.into_spec()).map_err(|e| e.0)
}

fn main() -> ExitCode {
    replscope::proxy::memory::return_large_blocks();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: stdout, success.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("replscope: {} (see --help)", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    if let Command::Health { http } = &cli.command {
        // Docker reads 1 as unhealthy (2 is reserved).
        return match links::request(http, "GET", "/healthz", None, None) {
            Ok(body) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("replscope: unhealthy: {e}");
                ExitCode::from(1)
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replscope: {e}");
            ExitCode::from(2)
        }
    }
}

/// A clap error on one line: its text up to the usage, without the `error:` prefix.
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = words.join(" ");
    joined.strip_prefix("error: ").unwrap_or(&joined).to_string()
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REPLSCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours are for a person at a terminal, never for a journal or a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The proxy's two runtimes: the control plane (one thread: accepting, dialling, handshakes, the HTTP
/// API, introspection, light links) and the data plane (a thread per core: transfers). See
/// `replscope::proxy::planes`.
fn runtimes() -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let data = tokio::runtime::Builder::new_multi_thread().thread_name("replscope-data").enable_all().build()?;
    Ok((control, data))
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> anyhow::Result<Hangups> {
    Ok(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?)
}

#[cfg(not(unix))]
fn hangups() -> anyhow::Result<Hangups> {
    Ok(())
}

/// Reloads the file on every SIGHUP: a file with a mistake, or routes that cannot start, leave the
/// running configuration as it is, and the log says why.
#[cfg(unix)]
async fn reload_on_hangup(mut hangups: Hangups, reloader: Reloader, setup: Setup) {
    while hangups.recv().await.is_some() {
        let Some(path) = &setup.file else {
            tracing::info!("SIGHUP: nothing to reload (the routes come from flags, not --config)");
            continue;
        };
        let file = match config::load(path) {
            Ok(file) => file,
            Err(e) => {
                reloader.failed();
                tracing::error!(error = %e, "reload failed: the running configuration stays");
                continue;
            }
        };
        // The process's own settings are taken once, at start.
        let ignored = [
            ("http", file.http.as_ref().is_some_and(|h| *h != setup.proxy.http)),
            ("enable-faults", file.enable_faults.is_some_and(|f| f != setup.proxy.enable_faults)),
            (
                "log-format",
                file.log_format.as_deref().is_some_and(|f| (f == "json") != (setup.log_format == LogFormat::Json)),
            ),
        ];
        for (key, changed) in ignored {
            if changed {
                tracing::warn!(key, "{key} changed in the file: it takes effect at the next restart, not on reload");
            }
        }
        match reloader.reload(file.routes).await {
            Ok(report) => tracing::info!(%report, "configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "reload failed: the running configuration stays"),
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_hangup(_: Hangups, _: Reloader, _: Setup) {}

fn fault_command(action: FaultCommand) -> anyhow::Result<()> {
    match action {
        FaultCommand::Add {
            kind,
            rate,
            delay,
            jitter,
            duration,
            how,
            bytes,
            direction,
            route,
            replica,
            when,
            for_,
            times,
            scope,
            api,
        } => {
            let mut body = serde_json::json!({ "kind": kind, "direction": direction, "when": when, "scope": scope });
            for (key, value) in [
                ("rate", rate),
                ("delay", delay),
                ("jitter", jitter),
                ("duration", duration),
                ("how", how),
                ("bytes", bytes),
                ("route", route),
                ("replica", replica),
                ("for", for_),
            ] {
                if let Some(v) = value {
                    body[key] = serde_json::Value::String(v);
                }
            }
            if let Some(t) = times {
                body["times"] = t.into();
            }
            let out = links::request(&api.http, "POST", "/api/faults", Some(&body.to_string()), api.token.as_deref())?;
            let fault: serde_json::Value = serde_json::from_str(&out)?;
            println!("added fault {}", links::fault_line(&fault));
        }
        FaultCommand::List { api } => {
            let out = links::request(&api.http, "GET", "/api/faults", None, api.token.as_deref())?;
            print!("{}", links::faults_table(&serde_json::from_str(&out)?));
        }
        FaultCommand::Rm { id, all, api } => {
            let path = match (id, all) {
                (Some(id), false) => format!("/api/faults/{id}"),
                _ => "/api/faults".to_string(),
            };
            let out = links::request(&api.http, "DELETE", &path, None, api.token.as_deref())?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            println!("removed {}", v["removed"]);
        }
        FaultCommand::Set { id, rate, api } => {
            let body = serde_json::json!({ "rate": rate }).to_string();
            let out =
                links::request(&api.http, "PATCH", &format!("/api/faults/{id}"), Some(&body), api.token.as_deref())?;
            println!("changed fault {}", links::fault_line(&serde_json::from_str(&out)?));
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Proxy(args) => {
            let setup = args.into_setup()?;
            init_logs(setup.log_format);
            let (control, data) = runtimes()?;
            let data_plane = data.handle().clone();
            let ran = control.block_on(async move {
                let proxy = Proxy::bind(setup.proxy.clone()).await?.with_data_plane(data_plane);
                // Before the proxy says it is ready: from then on a SIGHUP must reload, not kill.
                let hangups = hangups()?;
                tokio::spawn(reload_on_hangup(hangups, proxy.reloader(), setup));
                proxy.run(stop_signal()).await?;
                tracing::info!("stopped");
                Ok(())
            });
            // Every link has ended (or was given up on after the grace period): nothing left to wait for.
            data.shutdown_background();
            ran
        }
        Command::Health { .. } => Ok(()),
        Command::Links { http } => {
            print!("{}", links::table(&http)?);
            Ok(())
        }
        Command::Demo { server, every, duration, scenario } => demo::run(server, every, duration, scenario),
        Command::Fault { action } => fault_command(action),
        Command::Replay { file, json } => {
            let reads = recording::load(&file)?;
            let mut links = Fed::new();
            let ids = recording::replay(&reads, &mut links);
            for (conn, id) in ids {
                let Some(link) = links.get(id) else { continue };
                if json {
                    let story = serde_json::json!({ "conn": conn, "id": id, "link": link });
                    println!("{story}");
                } else {
                    print!("{}", describe(&format!("conn {conn}"), link));
                }
            }
            Ok(())
        }
    }
}
