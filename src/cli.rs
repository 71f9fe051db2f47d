//! The `strata` client subcommands: `topic`, `group`, `produce`, `consume`,
//! `tier`, `table`, `cluster`, `user`, `acl`.
//!
//! Overview: each subcommand connects with [`crate::client::Client`] (never
//! broker internals), prints a human table by default or JSON with
//! `--output json`, and ends with exit code 0 on success, 1 on a runtime
//! failure (one line on stderr: `error: cannot connect to HOST:PORT:
//! connection refused`) and 2 on bad arguments.
//!
//! Cancellation: Ctrl-C ends `consume` cleanly (output flushed, exit 0);
//! other commands are short and simply die with the process.

mod acl;
mod cluster;
mod consume;
mod format;
mod group;
mod log_dirs;
mod output;
mod produce;
mod table;
mod tier;
mod tier_cost;
mod topic;
mod txn;
mod user;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::client::{Client, ClientOptions};

pub use consume::ConsumeArgs;
pub use group::GroupArgs;
pub use produce::ProduceArgs;
pub use topic::TopicArgs;

/// Exit code for bad arguments (as clap uses).
const EXIT_USAGE: u8 = 2;

/// The client subcommands, flattened into the `strata` command.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe, delete topics and change their configs
    Topic(TopicArgs),
    /// List consumer groups; describe members, committed offsets and lag
    Group(GroupArgs),
    /// Transactional ids: list them, describe one's transaction
    Txn(txn::TxnArgs),
    /// Produce records read from stdin or a file, one per line (kcat -P)
    Produce(ProduceArgs),
    /// Print records of a topic to stdout (kcat -C)
    Consume(ConsumeArgs),
    /// Tiered storage: per-partition status, restore a topic from the tier, repair a manifest
    Tier(tier::TierArgs),
    /// Topics as tables (strata.table.enable): status of the Parquet files, backfill of older history
    Table(table::TableArgs),
    /// Brokers and the metadata quorum
    Cluster(cluster::ClusterArgs),
    /// Users with SASL/SCRAM credentials: create, delete, list
    User(user::UserArgs),
    /// ACLs (with the broker's --authorizer acl): add, list, remove
    Acl(acl::AclArgs),
}

/// How results are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// Aligned columns for people
    #[default]
    Table,
    /// JSON for scripts (JSON lines for `consume`)
    Json,
}

/// Options every client subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker to bootstrap from (HOST:PORT, several separated by commas)
    #[arg(
        long,
        short = 'b',
        env = "STRATA_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,

    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,

    /// Seconds to wait for a connection or a response
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub timeout: u64,

    /// Client properties for secured listeners, one key=value per line
    /// (as Kafka's tools take): security.protocol, ssl.ca.location,
    /// ssl.certificate.location, ssl.key.location, sasl.mechanism,
    /// sasl.username, sasl.password
    #[arg(long, env = "STRATA_COMMAND_CONFIG", global = true)]
    pub command_config: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    async fn connect(&self) -> anyhow::Result<Client> {
        let security = match &self.command_config {
            Some(path) => {
                crate::client::Security::from_properties(&crate::client::read_properties(path)?)?
            }
            None => crate::client::Security::default(),
        };
        let options = ClientOptions {
            client_id: "strata-cli".to_owned(),
            connect_timeout: Duration::from_secs(self.timeout.min(10)),
            request_timeout: Duration::from_secs(self.timeout),
            security,
        };
        Ok(Client::connect_with(&self.bootstrap, options).await?)
    }
}

/// A mistake in the command line found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Parse the command line; on a mistake print one line and exit 2.
pub fn parse_args<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(p) => p,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
                _ => {
                    eprintln!("{}", one_line_clap_error(&e.render().to_string()));
                    std::process::exit(i32::from(EXIT_USAGE));
                }
            }
        }
    }
}

/// clap's multi-line message (error, tips, usage) as one line.
fn one_line_clap_error(rendered: &str) -> String {
    let before_usage = rendered.split("\nUsage:").next().unwrap_or(rendered);
    let words: Vec<&str> = before_usage
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("tip:") && !l.starts_with("For more information")
        })
        .collect();
    let mut line = words.join(" ");
    if !line.starts_with("error:") {
        line = format!("error: {line}");
    }
    line.push_str(" (see --help)");
    line
}

/// Run a client subcommand to completion.
pub fn run(cmd: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {}", io_reason(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cmd {
            Command::Topic(a) => topic::run(a).await,
            Command::Group(a) => group::run(a).await,
            Command::Txn(a) => txn::run(a).await,
            Command::Produce(a) => produce::run(a).await,
            Command::Consume(a) => consume::run(a).await,
            Command::Tier(a) => tier::run(a).await,
            Command::Table(a) => table::run(a).await,
            Command::Cluster(a) => cluster::run(a).await,
            Command::User(a) => user::run(a).await,
            Command::Acl(a) => acl::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error and its causes on one line, io errors in plain words.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io_reason(io),
            None => cause.to_string(),
        };
        // Some errors repeat their cause in their own message.
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ").replace('\n', " ")
}

/// `Connection refused (os error 111)` -> `connection refused`.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let fixed = match e.kind() {
        K::ConnectionRefused => Some("connection refused"),
        K::ConnectionReset => Some("connection reset by peer"),
        K::ConnectionAborted => Some("connection aborted"),
        K::TimedOut => Some("timed out"),
        K::AddrNotAvailable => Some("address not available"),
        K::BrokenPipe => Some("broken pipe"),
        K::UnexpectedEof => Some("unexpected end of file"),
        _ => None,
    };
    if let Some(f) = fixed {
        return f.to_owned();
    }
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Bytes,
    Records,
}

/// A progress bar on stderr, drawn only when stderr is a terminal and
/// `show`; a spinner when `len` is unknown.
pub(crate) fn progress_bar(len: Option<u64>, unit: Unit, show: bool) -> indicatif::ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (pb, template) = match (len, unit) {
        (Some(n), Unit::Bytes) => (
            indicatif::ProgressBar::new(n),
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        ),
        (Some(n), Unit::Records) => (
            indicatif::ProgressBar::new(n),
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records {msg}",
        ),
        (None, _) => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {msg}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// `KEY=VALUE` for clap.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_plainly() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_reason(&e), "connection refused");
        let e = std::io::Error::other("Name or service not known (os error -2)");
        assert_eq!(io_reason(&e), "name or service not known");
    }

    #[test]
    fn connect_error_is_one_line() {
        let e = crate::client::ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            error_line(&anyhow::Error::new(e)),
            "cannot connect to 127.0.0.1:1: connection refused"
        );
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <TOPIC>\n\nUsage: strata topic create <TOPIC>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_clap_error(rendered),
            "error: the following required arguments were not provided: <TOPIC> (see --help)"
        );
        let rendered = "error: unexpected argument '--nope' found\n\n  tip: to pass '--nope' as a value, use '-- --nope'\n\nUsage: strata topic list\n";
        assert_eq!(
            one_line_clap_error(rendered),
            "error: unexpected argument '--nope' found (see --help)"
        );
        let rendered = "error: invalid value 'x' for '--offset <OFFSET>': bad\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_clap_error(rendered),
            "error: invalid value 'x' for '--offset <OFFSET>': bad (see --help)"
        );
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }
}
