//! The `strata` command: `strata serve` runs a broker; `strata topic`,
//! `group`, `produce` and `consume` talk to one (see `strata::cli`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::config::{BrokerConfig, ServeArgs};

#[global_allocator]
static ALLOC: strata::alloc::GuardedAlloc = strata::alloc::GuardedAlloc;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Kafka-compatible event streaming broker with tiered storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a broker (defaults: ./data, Kafka on 127.0.0.1:9092, admin HTTP on 127.0.0.1:9644)
    Serve(ServeArgs),
    #[command(flatten)]
    Client(strata::cli::Command),
}

fn main() -> ExitCode {
    // Before any other thread exists, so none has an arena of its own yet.
    let arenas = strata::alloc::limit_malloc_arenas();
    let cli: Cli = strata::cli::parse_args();
    match cli.command {
        Command::Serve(args) => {
            let config = match BrokerConfig::load(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {}", error_chain(&e));
                    return ExitCode::from(2);
                }
            };
            let _telemetry = strata::telemetry::init(&config);
            match arenas {
                Some(arenas) => tracing::info!(arenas, "malloc arenas limited"),
                None => tracing::info!(
                    "malloc arenas left as the C library or MALLOC_ARENA_MAX sets them"
                ),
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("strata")
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(strata::run::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("broker failed: {e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(cmd) => strata::cli::run(cmd),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
