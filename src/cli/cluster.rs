//! `strata cluster status`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, Columns};
use super::{ConnectArgs, Output};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The brokers clients see, and the metadata quorum: its leader and each voter's log position and lag
    Status,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.conn.connect().await?;
    match args.cmd {
        ClusterCommand::Status => {
            let md = client.metadata(Some(&[])).await?;
            let quorum = client.describe_quorum().await?;
            let lag = |end: i64| (quorum.high_watermark - end).max(0);
            match args.conn.output {
                Output::Json => print_json(&json!({
                    "cluster_id": md.cluster_id,
                    "brokers": md.brokers.iter().map(|b| json!({
                        "node_id": b.node_id,
                        "host": b.host,
                        "port": b.port,
                    })).collect::<Vec<_>>(),
                    "quorum": {
                        "leader_id": quorum.leader_id,
                        "leader_epoch": quorum.leader_epoch,
                        "high_watermark": quorum.high_watermark,
                        "voters": quorum.voters.iter().map(|(id, end)| json!({
                            "node_id": id,
                            "log_end_offset": end,
                            "lag": lag(*end),
                        })).collect::<Vec<_>>(),
                        "observers": quorum.observers.iter().map(|(id, end)| json!({
                            "node_id": id,
                            "log_end_offset": end,
                            "lag": lag(*end),
                        })).collect::<Vec<_>>(),
                    },
                })),
                Output::Table => {
                    println!(
                        "cluster {}: metadata leader {} (epoch {}), high watermark {}",
                        md.cluster_id.as_deref().unwrap_or("?"),
                        quorum.leader_id,
                        quorum.leader_epoch,
                        quorum.high_watermark
                    );
                    let mut c =
                        Columns::new(&["NODE", "ENDPOINT", "BROKER", "ROLE", "LOG END", "LAG"]);
                    let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id).collect();
                    ids.extend(quorum.voters.iter().map(|(id, _)| *id));
                    ids.extend(quorum.observers.iter().map(|(id, _)| *id));
                    ids.sort_unstable();
                    ids.dedup();
                    for id in ids {
                        let b = md.brokers.iter().find(|b| b.node_id == id);
                        let voter = quorum.voters.iter().find(|(v, _)| *v == id);
                        let observer = quorum.observers.iter().find(|(v, _)| *v == id);
                        let role = match (voter, observer) {
                            (Some(_), _) if id == quorum.leader_id => "leader",
                            (Some(_), _) => "voter",
                            (None, Some(_)) => "learner",
                            (None, None) => "-",
                        };
                        let v = voter.or(observer);
                        c.row([
                            id.to_string(),
                            b.map_or("-".into(), |b| format!("{}:{}", b.host, b.port)),
                            if b.is_some() {
                                "up"
                            } else {
                                "fenced or unregistered"
                            }
                            .to_string(),
                            role.to_string(),
                            v.map_or("-".into(), |(_, end)| end.to_string()),
                            v.map_or("-".into(), |(_, end)| lag(*end).to_string()),
                        ]);
                    }
                    c.print()
                }
            }
        }
    }
}
