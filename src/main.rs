//! The `replscope` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use replscope::link::Links;
use replscope::observe::text::describe;
use replscope::recording;

/// replscope: a transparent proxy for the Redis/Valkey replication link that explains why replicas drop.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with success; usage errors to stderr with exit 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
