//! `strata user create|delete|list`: SCRAM credentials in cluster
//! metadata (AlterUserScramCredentials, DescribeUserScramCredentials).
//! The password is salted here; only the salted password is sent.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::output::{print_json, print_str, Columns};
use super::{usage, ConnectArgs, Output};
use crate::client::ScramUpsert;
use crate::metadata::ScramMechanism;
use crate::security::scram::{self, MAX_ITERATIONS, MIN_ITERATIONS};

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: UserCommand,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    fn scram(self) -> ScramMechanism {
        match self {
            Mechanism::ScramSha256 => ScramMechanism::Sha256,
            Mechanism::ScramSha512 => ScramMechanism::Sha512,
        }
    }
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user, or change its password, for SASL/SCRAM
    Create {
        name: String,
        /// The password (or use --password-file)
        #[arg(long, conflicts_with = "password_file")]
        password: Option<String>,
        /// File whose first line is the password
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        /// Mechanisms to set (repeat for both) [default: both]
        #[arg(long = "mechanism", value_enum)]
        mechanisms: Vec<Mechanism>,
        /// PBKDF2 iterations (4096-16384)
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
    /// Delete a user's SCRAM credentials
    Delete {
        name: String,
        /// Only these mechanisms [default: every one it has]
        #[arg(long = "mechanism", value_enum)]
        mechanisms: Vec<Mechanism>,
    },
    /// List the users with SCRAM credentials
    List,
}

pub async fn run(args: UserArgs) -> anyhow::Result<()> {
    let client = args.conn.connect().await?;
    let out = args.conn.output;
    match args.cmd {
        UserCommand::Create {
            name,
            password,
            password_file,
            mechanisms,
            iterations,
        } => {
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
                return Err(usage(format!(
                    "--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}"
                )));
            }
            let password = match (password, password_file) {
                (Some(p), None) => p,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                _ => return Err(usage("give --password or --password-file")),
            };
            if password.is_empty() {
                return Err(usage("the password must not be empty"));
            }
            let mechanisms = if mechanisms.is_empty() {
                ScramMechanism::ALL.to_vec()
            } else {
                mechanisms.iter().map(|m| m.scram()).collect()
            };
            let upserts: Vec<ScramUpsert> = mechanisms
                .iter()
                .map(|m| {
                    let salt: [u8; 16] = rand::random();
                    ScramUpsert {
                        user: name.clone(),
                        mechanism: m.code(),
                        iterations: iterations as i32,
                        salt: salt.to_vec(),
                        salted_password: scram::salted_password(
                            *m,
                            password.as_bytes(),
                            &salt,
                            iterations,
                        ),
                    }
                })
                .collect();
            finish(
                client.alter_scram_credentials(&[], &upserts).await?,
                out,
                "created",
            )
        }
        UserCommand::Delete { name, mechanisms } => {
            let mechanisms: Vec<ScramMechanism> = if mechanisms.is_empty() {
                let described = client
                    .describe_scram_credentials(Some(std::slice::from_ref(&name)))
                    .await?;
                let (_, creds) = described
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("no answer for user {name}"))?;
                creds?
                    .iter()
                    .filter_map(|(code, _)| ScramMechanism::from_code(*code))
                    .collect()
            } else {
                mechanisms.iter().map(|m| m.scram()).collect()
            };
            let deletions: Vec<(String, i8)> = mechanisms
                .iter()
                .map(|m| (name.clone(), m.code()))
                .collect();
            finish(
                client.alter_scram_credentials(&deletions, &[]).await?,
                out,
                "deleted",
            )
        }
        UserCommand::List => {
            let users = client.describe_scram_credentials(None).await?;
            let mut rows = Vec::new();
            for (user, creds) in users {
                let creds = creds?;
                let list: Vec<(String, i32)> = creds
                    .iter()
                    .map(|(code, iterations)| {
                        let name = ScramMechanism::from_code(*code)
                            .map_or_else(|| format!("mechanism {code}"), |m| m.name().to_string());
                        (name, *iterations)
                    })
                    .collect();
                rows.push((user, list));
            }
            match out {
                Output::Json => print_json(&json!(rows
                    .iter()
                    .map(|(u, l)| json!({
                        "user": u,
                        "credentials": l.iter().map(|(m, i)| json!({"mechanism": m, "iterations": i})).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>())),
                Output::Table => {
                    if rows.is_empty() {
                        return print_str("no users\n");
                    }
                    let mut c = Columns::new(&["USER", "MECHANISM", "ITERATIONS"]);
                    for (u, l) in &rows {
                        for (m, i) in l {
                            c.row([u.clone(), m.clone(), i.to_string()]);
                        }
                    }
                    c.print()
                }
            }
        }
    }
}

/// Prints each user's outcome; the first failure is the command's error.
fn finish(
    results: Vec<(String, Result<(), crate::client::ClientError>)>,
    out: Output,
    done: &str,
) -> anyhow::Result<()> {
    let mut first_error = None;
    for (user, r) in results {
        match r {
            Ok(()) => match out {
                Output::Json => print_json(&json!({"user": user, "result": done}))?,
                Output::Table => print_str(&format!("user {user} {done}\n"))?,
            },
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
