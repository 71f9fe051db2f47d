//! `--brokers N`: what replication costs. The tool starts N brokers as one
//! cluster (each a metadata voter, one shared `file://` tier), then for
//! each acks setting produces the same records, at maximum throughput, to
//! a topic of replication factor 1 and to one of factor N, in the same
//! run, and reports factor N's throughput and latency beside factor 1's.
//! Every broker and the client share the machine's cores, so the ratio
//! includes the followers' CPU as well as their fetch round trips and
//! fsyncs.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan};
use crate::kafka::{self, ProduceResult, ProduceSpec};

/// One produce run of the comparison.
pub struct Row {
    pub replicas: i32,
    pub acks: String,
    pub result: ProduceResult,
}

/// Starts the cluster, runs the comparison, prints it and writes the JSON.
pub fn run(a: &Args, plan: &Plan, work: &Path, brokers: usize) -> Result<()> {
    let bin = match &a.strata_bin {
        Some(p) => p.clone(),
        None => broker::find_strata_bin()?,
    };
    let controllers: Vec<String> = (0..brokers).map(|_| free_addr()).collect::<Result<_>>()?;
    let voters = controllers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let tier = format!("file://{}", work.join("tier").display());
    say(format!(
        "starting {brokers} brokers of {} as one cluster (voters {voters}, tier {tier})",
        bin.display()
    ));
    let mut cluster = Vec::with_capacity(brokers);
    for (i, controller) in controllers.iter().enumerate() {
        let mut args = vec![
            "--node-id".to_string(),
            (i + 1).to_string(),
            "--controller-listen".to_string(),
            controller.clone(),
            "--controller-quorum-voters".to_string(),
            voters.clone(),
            "--tier-url".to_string(),
            tier.clone(),
        ];
        if let Some(cc) = &a.tcp_congestion_control {
            args.extend(["--tcp-congestion-control".into(), cc.clone()]);
        }
        let dir = work.join(format!("broker-{}", i + 1));
        cluster.push(Broker::launch(&bin, &dir, args, Vec::new())?);
    }
    for b in &cluster {
        b.wait_ready()
            .with_context(|| format!("broker at {}", b.bootstrap))?;
    }
    let bootstrap = cluster
        .iter()
        .map(|b| b.bootstrap.clone())
        .collect::<Vec<_>>()
        .join(",");
    say(format!("cluster at {bootstrap}"));

    let prefix = format!("sb{}", std::process::id());
    let size = a.e2e_record_size;
    let partitions = a.partitions.iter().copied().max().unwrap_or(1);
    let mut rows = Vec::new();
    for acks in &a.acks {
        for replicas in [1, brokers as i32] {
            let topic = format!("{prefix}-rf{replicas}-a{acks}");
            kafka::create_replicated_topic(&bootstrap, &topic, partitions, replicas, &[])?;
            let spec = ProduceSpec {
                topic,
                partitions,
                record_bytes: size,
                records: (plan.produce_bytes / size as u64).max(1),
                acks: acks.clone(),
                linger_ms: a.linger_ms,
                rate: None,
                keys: None,
            };
            let result = kafka::produce(&bootstrap, &spec, Instant::now(), false, true, None)?;
            say(format!(
                "produce {size} B acks={acks} partitions={partitions} replication factor {replicas}: {:.0} rec/s, {:.1} MB/s, p99 {:.2} ms",
                result.records_per_sec(),
                result.mb_per_sec(),
                result.latency.p99_ms
            ));
            rows.push(Row {
                replicas,
                acks: acks.clone(),
                result,
            });
        }
    }
    for b in &mut cluster {
        b.stop()?;
    }
    print_table(brokers, size, partitions, &rows);
    if let Some(path) = &a.json {
        write_json(a, path, brokers, size, partitions, &rows)?;
    }
    Ok(())
}

/// Factor N's figure over factor 1's for the same acks setting.
fn overhead(rows: &[Row], acks: &str) -> Option<(f64, f64)> {
    let of = |rf_one: bool| {
        rows.iter()
            .find(|r| r.acks == acks && (r.replicas == 1) == rf_one)
    };
    let (one, many) = (of(true)?, of(false)?);
    Some((
        many.result.mb_per_sec() / one.result.mb_per_sec(),
        many.result.latency.p99_ms / one.result.latency.p99_ms,
    ))
}

fn print_table(brokers: usize, size: usize, partitions: i32, rows: &[Row]) {
    println!("\n## Replication: {brokers} brokers, {size} B records, {partitions} partitions\n");
    println!("| acks | replication factor | rec/s | MB/s | p50 ms | p99 ms | p999 ms | MB/s vs factor 1 | p99 vs factor 1 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (tput, p99) = match (r.replicas, overhead(rows, &r.acks)) {
            (1, _) | (_, None) => ("1.00".to_string(), "1.00".to_string()),
            (_, Some((t, p))) => (format!("{t:.2}"), format!("{p:.2}")),
        };
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {tput} | {p99} |",
            r.acks,
            r.replicas,
            r.result.records_per_sec(),
            r.result.mb_per_sec(),
            r.result.latency.p50_ms,
            r.result.latency.p99_ms,
            r.result.latency.p999_ms,
        );
    }
}

fn write_json(
    a: &Args,
    path: &Path,
    brokers: usize,
    size: usize,
    partitions: i32,
    rows: &[Row],
) -> Result<()> {
    let runs: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "acks": r.acks,
                "replication_factor": r.replicas,
                "records": r.result.records,
                "records_per_sec": r.result.records_per_sec(),
                "mb_per_sec": r.result.mb_per_sec(),
                "latency": {
                    "p50_ms": r.result.latency.p50_ms,
                    "p99_ms": r.result.latency.p99_ms,
                    "p999_ms": r.result.latency.p999_ms,
                },
            })
        })
        .collect();
    let overheads: serde_json::Map<String, serde_json::Value> = a
        .acks
        .iter()
        .filter_map(|acks| {
            let (tput, p99) = overhead(rows, acks)?;
            Some((
                acks.clone(),
                json!({"mb_per_sec_ratio": tput, "p99_ratio": p99}),
            ))
        })
        .collect();
    let report = json!({
        "brokers": brokers,
        "record_bytes": size,
        "partitions": partitions,
        "replication": runs,
        "overhead": overheads,
    });
    crate::report::write_mode_json(a, path, report)
}

/// A free loopback address for a controller listener.
fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}
