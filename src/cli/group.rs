//! `strata group list|describe`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{opt, print_json, print_str, Columns};
use super::{ConnectArgs, Output};
use crate::client::{Client, GroupDescription, OffsetSpec};

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List consumer groups
    List,
    /// Show a group's members, assignments, committed offsets and lag
    Describe { group: String },
}

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let client = args.conn.connect().await?;
    match args.cmd {
        GroupCommand::List => list(&client, args.conn.output).await,
        GroupCommand::Describe { group } => describe(&client, &group, args.conn.output).await,
    }
}

async fn list(client: &Client, out: Output) -> anyhow::Result<()> {
    let groups = client.list_groups().await?;
    match out {
        Output::Json => print_json(&json!(groups
            .iter()
            .map(|g| json!({
                "group": g.group_id,
                "protocol_type": g.protocol_type,
                "state": g.state,
            }))
            .collect::<Vec<_>>())),
        Output::Table => {
            if groups.is_empty() {
                return print_str("no groups\n");
            }
            let mut c = Columns::new(&["GROUP", "STATE", "PROTOCOL TYPE"]);
            for g in &groups {
                c.row([
                    g.group_id.clone(),
                    opt(g.state.clone()),
                    g.protocol_type.clone(),
                ]);
            }
            c.print()
        }
    }
}

/// One row of the offsets table.
struct PartitionLag {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    member: Option<String>,
}

impl PartitionLag {
    fn lag(&self) -> Option<i64> {
        Some((self.log_end? - self.committed?).max(0))
    }
}

async fn describe(client: &Client, group: &str, out: Output) -> anyhow::Result<()> {
    let desc = client.describe_group(group).await?;
    let committed = client.offset_fetch(group).await?;
    if desc.state == "Dead" && desc.members.is_empty() && committed.is_empty() {
        anyhow::bail!("no such group. group={group}");
    }

    // Partitions with a commit or an owner.
    let mut rows: BTreeMap<(String, i32), PartitionLag> = BTreeMap::new();
    for c in &committed {
        rows.entry((c.topic.clone(), c.partition))
            .or_insert_with(|| PartitionLag {
                topic: c.topic.clone(),
                partition: c.partition,
                committed: None,
                log_end: None,
                member: None,
            })
            .committed = (c.offset >= 0).then_some(c.offset);
    }
    for m in &desc.members {
        for a in &m.assignment {
            for &p in &a.partitions {
                rows.entry((a.topic.clone(), p))
                    .or_insert_with(|| PartitionLag {
                        topic: a.topic.clone(),
                        partition: p,
                        committed: None,
                        log_end: None,
                        member: None,
                    })
                    .member = Some(m.member_id.clone());
            }
        }
    }
    let keys: Vec<(String, i32)> = rows.keys().cloned().collect();
    if !keys.is_empty() {
        for (tp, r) in client.list_offsets(&keys, OffsetSpec::Latest).await? {
            if let (Some(row), Ok(o)) = (rows.get_mut(&tp), r) {
                row.log_end = Some(o.offset);
            }
        }
    }
    let rows: Vec<PartitionLag> = rows.into_values().collect();
    let total_lag: i64 = rows.iter().filter_map(PartitionLag::lag).sum();

    match out {
        Output::Json => print_json(&describe_json(&desc, &rows, total_lag)),
        Output::Table => {
            let c = &desc.coordinator;
            let protocol = if desc.protocol.is_empty() {
                desc.protocol_type.clone()
            } else {
                format!("{}/{}", desc.protocol_type, desc.protocol)
            };
            let mut s = format!(
                "Group: {}  State: {}  Protocol: {}  Coordinator: {} ({}:{})  Members: {}  Total lag: {}\n",
                desc.group_id,
                desc.state,
                if protocol.is_empty() { "-" } else { &protocol },
                c.node_id,
                c.host,
                c.port,
                desc.members.len(),
                total_lag
            );
            if !desc.members.is_empty() {
                s.push('\n');
                let mut t = Columns::new(&["MEMBER", "CLIENT ID", "HOST", "ASSIGNMENT"]);
                for m in &desc.members {
                    let assignment = m
                        .assignment
                        .iter()
                        .map(|a| {
                            let ps: Vec<String> = a.partitions.iter().map(i32::to_string).collect();
                            format!("{}:{}", a.topic, ps.join(","))
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    t.row([
                        m.member_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        if assignment.is_empty() {
                            "-".into()
                        } else {
                            assignment
                        },
                    ]);
                }
                s.push_str(&t.render());
            }
            s.push('\n');
            if rows.is_empty() {
                s.push_str("no committed offsets\n");
            } else {
                let mut t = Columns::new(&[
                    "TOPIC",
                    "PARTITION",
                    "COMMITTED",
                    "LOG END",
                    "LAG",
                    "MEMBER",
                ]);
                for r in &rows {
                    t.row([
                        r.topic.clone(),
                        r.partition.to_string(),
                        opt(r.committed),
                        opt(r.log_end),
                        opt(r.lag()),
                        opt(r.member.clone()),
                    ]);
                }
                s.push_str(&t.render());
            }
            print_str(&s)
        }
    }
}

fn describe_json(
    desc: &GroupDescription,
    rows: &[PartitionLag],
    total_lag: i64,
) -> serde_json::Value {
    json!({
        "group": desc.group_id,
        "state": desc.state,
        "protocol_type": desc.protocol_type,
        "protocol": desc.protocol,
        "coordinator": {
            "node_id": desc.coordinator.node_id,
            "host": desc.coordinator.host,
            "port": desc.coordinator.port,
        },
        "members": desc.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "group_instance_id": m.group_instance_id,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "assignment": m.assignment.iter().map(|a| json!({
                "topic": a.topic,
                "partitions": a.partitions,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "offsets": rows.iter().map(|r| json!({
            "topic": r.topic,
            "partition": r.partition,
            "committed_offset": r.committed,
            "log_end_offset": r.log_end,
            "lag": r.lag(),
            "member_id": r.member,
        })).collect::<Vec<_>>(),
        "total_lag": total_lag,
    })
}
