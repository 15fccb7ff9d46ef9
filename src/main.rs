//! The `replscope` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use replscope::link::Links;
use replscope::observe::text::describe;
use replscope::proxy::{Proxy, ProxyConfig};
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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Forward a replication link between a master and its replicas, and explain it.
    #[command(after_help = PROXY_EXAMPLES)]
    Proxy {
        /// The master, HOST:PORT (the name is resolved for every new connection).
        #[arg(long, env = "REPLSCOPE_MASTER")]
        master: String,
        /// Where replicas connect.
        #[arg(long, env = "REPLSCOPE_LISTEN", default_value = "127.0.0.1:6380")]
        listen: String,
        /// The route's name, a label on every metric [default: the master address].
        #[arg(long, env = "REPLSCOPE_NAME")]
        name: Option<String>,
        /// Where /metrics and /api/links are served.
        #[arg(long, env = "REPLSCOPE_HTTP", default_value = "127.0.0.1:9190")]
        http: String,
        /// Log format.
        #[arg(long, env = "REPLSCOPE_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Bytes buffered per direction per link (e.g. 256KiB, 1MiB).
        #[arg(long, env = "REPLSCOPE_BUFFER", default_value = "256KiB", value_parser = parse_buffer)]
        buffer: usize,
        /// Most connections open at once; more are refused.
        #[arg(long, env = "REPLSCOPE_MAX_LINKS", default_value_t = 1024)]
        max_links: usize,
    },
    /// Print the proxy's links as a table (from its /api/links).
    Links {
        /// The proxy's HTTP address.
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
    },
    /// Replay a recorded link (JSON Lines, one read per line) and print each connection's story.
    ///
    /// Example: replscope replay ../shared/captures/valkey-8.1.8-dual.jsonl
    Replay {
        /// The recording.
        file: PathBuf,
        /// Print each link's story as JSON (one object per line) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_buffer(s: &str) -> Result<usize, String> {
    let n = replscope::size::parse_size(s).map_err(|e| e.to_string())?;
    if !(1024..=(1 << 30)).contains(&n) {
        return Err(format!("{s} is outside 1KiB..1GiB"));
    }
    usize::try_from(n).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Proxy { master, listen, name, http, log_format, buffer, max_links } => {
            init_logs(log_format);
            let name = name.unwrap_or_else(|| master.clone());
            let config = ProxyConfig { master, listen, name, http, buffer, max_links };
            runtime()?.block_on(async move {
                let proxy = Proxy::bind(config).await?;
                proxy.run(stop_signal()).await?;
                tracing::info!("stopped");
                Ok(())
            })
        }
        Command::Links { http } => {
            print!("{}", links::table(&http)?);
            Ok(())
        }
        Command::Demo { server, every, duration } => demo::run(server, every, duration),
        Command::Replay { file, json } => {
            let reads = recording::load(&file)?;
            let mut links = Links::new();
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
