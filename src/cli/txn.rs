//! `strata txn list|describe`: transactional ids and their transactions.

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, print_str, Columns};
use super::{ConnectArgs, Output};
use crate::client::Client;

#[derive(Args, Debug)]
pub struct TxnArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: TxnCommand,
}

#[derive(Subcommand, Debug)]
enum TxnCommand {
    /// List transactional ids with their producer ids and states
    List,
    /// Show a transactional id: state, producer id and epoch, timeout and the open transaction's partitions
    Describe { transactional_id: String },
}

pub async fn run(args: TxnArgs) -> anyhow::Result<()> {
    let client = args.conn.connect().await?;
    match args.cmd {
        TxnCommand::List => list(&client, args.conn.output).await,
        TxnCommand::Describe { transactional_id } => {
            describe(&client, &transactional_id, args.conn.output).await
        }
    }
}

async fn list(client: &Client, out: Output) -> anyhow::Result<()> {
    let txns = client.list_transactions().await?;
    match out {
        Output::Json => print_json(&json!(txns
            .iter()
            .map(|t| json!({
                "transactional_id": t.transactional_id,
                "producer_id": t.producer_id,
                "state": t.state,
                "coordinator": t.coordinator,
            }))
            .collect::<Vec<_>>())),
        Output::Table => {
            if txns.is_empty() {
                return print_str("no transactional ids\n");
            }
            let mut c = Columns::new(&["TRANSACTIONAL ID", "PRODUCER ID", "STATE", "COORDINATOR"]);
            for t in &txns {
                c.row([
                    t.transactional_id.clone(),
                    t.producer_id.to_string(),
                    t.state.clone(),
                    t.coordinator.to_string(),
                ]);
            }
            c.print()
        }
    }
}

async fn describe(client: &Client, id: &str, out: Output) -> anyhow::Result<()> {
    let t = client.describe_transaction(id).await?;
    let partitions: Vec<String> = t
        .partitions
        .iter()
        .map(|(topic, p)| format!("{topic}-{p}"))
        .collect();
    match out {
        Output::Json => print_json(&json!({
            "transactional_id": t.transactional_id,
            "state": t.state,
            "producer_id": t.producer_id,
            "producer_epoch": t.producer_epoch,
            "timeout_ms": t.timeout_ms,
            "start_ms": t.start_ms,
            "partitions": partitions,
            "coordinator": t.coordinator,
        })),
        Output::Table => {
            let started = if t.start_ms < 0 {
                "-".to_string()
            } else {
                t.start_ms.to_string()
            };
            print_str(&format!(
                "transactional id: {}\nstate: {}\nproducer id: {} (epoch {})\ntimeout: {} ms\nstarted: {}\ncoordinator: {}\npartitions: {}\n",
                t.transactional_id,
                t.state,
                t.producer_id,
                t.producer_epoch,
                t.timeout_ms,
                started,
                t.coordinator,
                if partitions.is_empty() {
                    "-".to_string()
                } else {
                    partitions.join(", ")
                },
            ))
        }
    }
}
