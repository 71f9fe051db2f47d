//! `strata cluster status`, `drain`, `remove-broker`, `add-voter` and
//! `reassignments`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, Columns};
use super::{ConnectArgs, Output};
use crate::client::{Client, OngoingReassignment, Reassignment};

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
    /// Move every replica off a broker (partition reassignment): each goes to the running broker with the fewest replicas that does not hold the partition yet
    Drain {
        /// The broker to empty
        #[arg(long)]
        broker: i32,
        /// Wait until every move has finished
        #[arg(long)]
        wait: bool,
    },
    /// Remove a stopped broker that hosts no replica (drain it, then stop it) from the cluster for good; a metadata voter cannot be removed
    RemoveBroker {
        /// The broker to remove
        #[arg(long)]
        broker: i32,
    },
    /// Make a broker that follows the metadata log (a learner) a voter of the metadata quorum (AddRaftVoter): how a single node grows into a cluster
    AddVoter {
        /// The broker to make a voter
        #[arg(long)]
        broker: i32,
    },
    /// Partition reassignments in progress: replicas, and those joining and leaving
    Reassignments,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.conn.connect().await?;
    match args.cmd {
        ClusterCommand::Drain { broker, wait } => {
            drain(&client, args.conn.output, broker, wait).await
        }
        ClusterCommand::RemoveBroker { broker } => {
            client.unregister_broker(broker).await?;
            match args.conn.output {
                Output::Json => print_json(&json!({ "removed": broker })),
                Output::Table => super::output::print_str(&format!("broker {broker} removed\n")),
            }
        }
        ClusterCommand::AddVoter { broker } => {
            client.add_raft_voter(broker).await?;
            match args.conn.output {
                Output::Json => print_json(&json!({ "voter": broker })),
                Output::Table => super::output::print_str(&format!("broker {broker} is a voter\n")),
            }
        }
        ClusterCommand::Reassignments => {
            let ongoing = client.list_partition_reassignments().await?;
            print_reassignments(args.conn.output, &ongoing)
        }
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

fn print_reassignments(output: Output, ongoing: &[OngoingReassignment]) -> anyhow::Result<()> {
    let join = |v: &[i32]| {
        v.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match output {
        Output::Json => print_json(&json!(ongoing
            .iter()
            .map(|r| json!({
                "topic": r.topic,
                "partition": r.partition,
                "replicas": r.replicas,
                "adding": r.adding,
                "removing": r.removing,
            }))
            .collect::<Vec<_>>())),
        Output::Table => {
            let mut c = Columns::new(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"]);
            for r in ongoing {
                c.row([
                    r.topic.clone(),
                    r.partition.to_string(),
                    join(&r.replicas),
                    join(&r.adding),
                    join(&r.removing),
                ]);
            }
            c.print()
        }
    }
}

/// Moves every replica of `broker` elsewhere, then (with `wait`) waits
/// until no move is in progress.
async fn drain(client: &Client, output: Output, broker: i32, wait: bool) -> anyhow::Result<()> {
    let md = client.metadata(None).await?;
    let running: Vec<i32> = md.brokers.iter().map(|b| b.node_id).collect();
    let partitions: Vec<(String, i32, Vec<i32>)> = md
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.clone(), p.partition, p.replicas.clone()))
        })
        .collect();
    let moves = plan_drain(&partitions, &running, broker).map_err(anyhow::Error::msg)?;
    let outcomes = if moves.is_empty() {
        Vec::new()
    } else {
        client.alter_partition_reassignments(&moves).await?
    };
    let mut failed = 0;
    let rows: Vec<(&Reassignment, String)> = moves
        .iter()
        .zip(outcomes)
        .map(|(m, r)| {
            let outcome = match r {
                Ok(()) => "moving".to_string(),
                Err(e) => {
                    failed += 1;
                    e.to_string()
                }
            };
            (m, outcome)
        })
        .collect();
    match output {
        Output::Json => print_json(&json!(rows
            .iter()
            .map(|(m, outcome)| json!({
                "topic": m.topic,
                "partition": m.partition,
                "replicas": m.replicas,
                "outcome": outcome,
            }))
            .collect::<Vec<_>>()))?,
        Output::Table => {
            let mut c = Columns::new(&["TOPIC", "PARTITION", "TO", "OUTCOME"]);
            for (m, outcome) in &rows {
                c.row([
                    m.topic.clone(),
                    m.partition.to_string(),
                    m.replicas
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    outcome.clone(),
                ]);
            }
            c.print()?
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} moves refused", moves.len());
    }
    if wait {
        loop {
            let ongoing = client.list_partition_reassignments().await?;
            if ongoing.is_empty() {
                eprintln!("broker {broker} holds no replica");
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// The moves that empty `drained`: each of its replicas goes to the
/// running broker, not yet a replica of that partition, that holds the
/// fewest replicas (counting the moves planned before it; ties to the
/// lower id), in the drained broker's place in the replica list.
fn plan_drain(
    partitions: &[(String, i32, Vec<i32>)],
    running: &[i32],
    drained: i32,
) -> Result<Vec<Reassignment>, String> {
    let mut load: std::collections::BTreeMap<i32, usize> = running
        .iter()
        .filter(|b| **b != drained)
        .map(|b| (*b, 0))
        .collect();
    for (_, _, replicas) in partitions {
        for b in replicas {
            if let Some(n) = load.get_mut(b) {
                *n += 1;
            }
        }
    }
    let mut moves = Vec::new();
    for (topic, partition, replicas) in partitions {
        if !replicas.contains(&drained) {
            continue;
        }
        let Some((&to, _)) = load
            .iter()
            .filter(|(b, _)| !replicas.contains(b))
            .min_by_key(|(b, n)| (**n, **b))
        else {
            return Err(format!(
                "no running broker can take the replica. topic={topic}, partition={partition}, replicas={replicas:?}"
            ));
        };
        *load.entry(to).or_default() += 1;
        moves.push(Reassignment {
            topic: topic.clone(),
            partition: *partition,
            replicas: Some(
                replicas
                    .iter()
                    .map(|b| if *b == drained { to } else { *b })
                    .collect(),
            ),
        });
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_spreads_the_replicas_over_the_least_loaded_brokers() {
        let parts = vec![
            ("a".to_string(), 0, vec![3, 1]),
            ("a".to_string(), 1, vec![1, 3]),
            ("a".to_string(), 2, vec![2, 1]),
            ("b".to_string(), 0, vec![3]),
        ];
        let moves = plan_drain(&parts, &[1, 2, 3, 4], 3).expect("plan");
        let got: Vec<(String, i32, Vec<i32>)> = moves
            .into_iter()
            .map(|m| (m.topic, m.partition, m.replicas.expect("target")))
            .collect();
        // Loads before: 1 -> 3, 2 -> 1, 4 -> 0.
        assert_eq!(
            got,
            vec![
                ("a".to_string(), 0, vec![4, 1]),
                ("a".to_string(), 1, vec![1, 2]),
                ("b".to_string(), 0, vec![4]),
            ]
        );
        let err = plan_drain(&parts, &[1, 3], 3).unwrap_err();
        assert!(err.contains("topic=a, partition=0"), "{err}");
        assert!(plan_drain(&parts, &[1, 2, 3], 4).expect("plan").is_empty());
    }
}
