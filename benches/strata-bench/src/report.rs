//! The report: every figure beside the physical reference measured in the
//! same run (a ratio, with the target where there is one), and all of it as
//! JSON with a description of the machine.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::cli::{say, Args, Plan, MIB};
use crate::kafka::{self, ConsumeResult, ProduceResult};
use crate::reference::{self, Transfer};
use crate::stats;
use crate::tier::TierRun;
use crate::workloads::{E2eRun, Results};

fn produce_json(r: &ProduceResult) -> Value {
    json!({
        "records": r.records,
        "bytes": r.bytes,
        "seconds": r.secs,
        "records_per_sec": r.records_per_sec(),
        "mb_per_sec": r.mb_per_sec(),
        "latency": r.latency.json(),
        "broker_cpu_pct": r.cpu.broker_pct,
        "client_cpu_pct": r.cpu.client_pct,
    })
}

fn client_json(c: &kafka::ClientSplit) -> Value {
    json!({
        "queue_to_request": c.queue.json(),
        "request_round_trip": c.rtt.json(),
    })
}

/// The label of the replay set read by the same consumer from librdkafka's
/// mock broker, wherever it is printed (a "librdkafka" reference is shown
/// in the Targets table).
pub const MOCK_CONSUMER: &str = "librdkafka's mock broker, same consumer";

fn consume_json(r: &ConsumeResult) -> Value {
    json!({
        "records": r.records,
        "bytes": r.bytes,
        "seconds": r.secs,
        "records_per_sec": r.records_per_sec(),
        "mb_per_sec": r.mb_per_sec(),
        "broker_cpu_pct": r.cpu.broker_pct,
        "client_cpu_pct": r.cpu.client_pct,
    })
}

fn transfer_json(t: &Transfer) -> Value {
    json!({ "bytes": t.bytes, "seconds": t.secs, "mb_per_sec": t.mb_per_sec() })
}

/// One Strata figure beside its reference.
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub reference_name: String,
    pub reference: f64,
    /// Target on value/reference: (bound, true = at least, false = at most).
    pub target: Option<(f64, bool)>,
}

impl Ratio {
    pub fn ratio(&self) -> f64 {
        self.value / self.reference
    }
    pub fn met(&self) -> Option<bool> {
        let (bound, at_least) = self.target?;
        Some(if at_least {
            self.ratio() >= bound
        } else {
            self.ratio() <= bound
        })
    }
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "reference_name": self.reference_name,
            "reference": self.reference,
            "ratio": self.ratio(),
            "target": self.target.map(|(b, at_least)| format!("{} {b}", if at_least { ">=" } else { "<=" })),
            "met": self.met(),
        })
    }
}

pub fn tier_json(t: &TierRun) -> Value {
    json!({
        "first_read": consume_json(&t.first),
        "warm": consume_json(&t.warm),
        "cold": consume_json(&t.cold),
        "raw_reads": transfer_json(&t.raw),
        "raw_reads_kind": t.raw_name,
        "tier_bytes": t.tier_bytes,
        "warm_cache_hit_ratio": t.warm_hit_ratio,
        "warm_zero_copy_bytes": t.warm_zero_copy_bytes,
        "cold_bytes_downloaded": t.cold_downloaded,
        "cold_gets": t.cold_gets,
        "cold_gets_per_mib": t.cold_gets_per_mib(),
        "broker_peak_rss_bytes": t.rss_first_process,
        "cold_broker_peak_rss_bytes": t.rss_cold_process,
        "cache_capacity_bytes": t.cache_bytes,
    })
}

/// A tier run's cold replay beside raw reads of the same objects, and the
/// restarted broker's peak RSS beside the tier cache bound.
pub fn cold_ratios(t: &TierRun) -> Vec<Ratio> {
    let mut ratios = vec![Ratio {
        name: format!("cold replay ({})", t.backend),
        value: t.cold.mb_per_sec(),
        unit: "MB/s",
        reference_name: t.raw_name.into(),
        reference: t.raw.mb_per_sec(),
        target: (t.backend == "s3").then_some((0.80, true)),
    }];
    if let Some(rss) = t.rss_cold_process {
        ratios.push(Ratio {
            name: format!("broker peak RSS, cold replay ({})", t.backend),
            value: rss as f64 / MIB as f64,
            unit: "MiB",
            reference_name: "tier cache capacity + 256 MiB".into(),
            reference: (t.cache_bytes + 256 * MIB) as f64 / MIB as f64,
            target: Some((1.0, false)),
        });
    }
    ratios
}

/// Each figure beside its reference, with the target on their ratio where
/// there is one.
pub fn ratios(a: &Args, r: &Results) -> Vec<Ratio> {
    let Results {
        produce_rows,
        e2e_runs,
        hot,
        loopback,
        sendfile_ref,
        mock_consume,
        disk_sync,
        disk_end,
        tiers,
        ..
    } = r;
    let mut ratios = vec![
        Ratio {
            name: "hot consume".into(),
            value: hot.mb_per_sec(),
            unit: "MB/s",
            reference_name: "loopback TCP copy".into(),
            reference: loopback.mb_per_sec(),
            target: Some((0.60, true)),
        },
        Ratio {
            name: "hot consume".into(),
            value: hot.mb_per_sec(),
            unit: "MB/s",
            reference_name: "loopback sendfile copy".into(),
            reference: sendfile_ref.mb_per_sec(),
            target: None,
        },
        Ratio {
            name: "hot consume".into(),
            value: hot.mb_per_sec(),
            unit: "MB/s",
            reference_name: MOCK_CONSUMER.into(),
            reference: mock_consume.mb_per_sec(),
            target: None,
        },
        Ratio {
            name: MOCK_CONSUMER.into(),
            value: mock_consume.mb_per_sec(),
            unit: "MB/s",
            reference_name: "loopback TCP copy".into(),
            reference: loopback.mb_per_sec(),
            target: None,
        },
    ];
    for (spec, r) in produce_rows {
        let is_target = spec.record_bytes == 1024 && spec.acks == "all" && spec.partitions == 16;
        ratios.push(Ratio {
            name: format!(
                "produce {} B acks={} {} partitions",
                spec.record_bytes, spec.acks, spec.partitions
            ),
            value: r.mb_per_sec(),
            unit: "MB/s",
            reference_name: "disk write, fdatasync at the end".into(),
            reference: disk_end.mb_per_sec(),
            target: is_target.then_some((0.25, true)),
        });
        if is_target {
            ratios.push(Ratio {
                name: "produce 1024 B acks=all 16 partitions".into(),
                value: r.mb_per_sec(),
                unit: "MB/s",
                reference_name: "disk write, fdatasync every 1 MiB".into(),
                reference: disk_sync.mb_per_sec(),
                target: None,
            });
        }
    }
    for t in tiers {
        ratios.extend(cold_ratios(t));
        ratios.push(Ratio {
            name: format!("warm replay ({})", t.backend),
            value: t.warm.mb_per_sec(),
            unit: "MB/s",
            reference_name: "hot consume".into(),
            reference: hot.mb_per_sec(),
            target: Some((0.70, true)),
        });
    }
    for (
        spec,
        E2eRun {
            paced,
            e2e,
            client_floor,
            disk_floor,
            ..
        },
    ) in e2e_runs
    {
        let name = |how: &str| {
            format!(
                "produce p99 at {:.0}% of max ({} B acks={} {} partitions{how})",
                a.e2e_fraction * 100.0,
                spec.record_bytes,
                spec.acks,
                spec.partitions
            )
        };
        // The producer alone beside each reference: the client's own floor,
        // the disk's (acks=all), and the target.
        let mut refs = vec![(
            "librdkafka's mock broker: p99, same rate",
            client_floor.latency.p99_ms,
            None,
        )];
        if let Some(floor) = disk_floor {
            refs.push((
                "disk: write to fdatasync'd p99, same rate",
                floor.p99_ms,
                None,
            ));
        }
        refs.push(("5 ms", 5.0, Some((1.0, false))));
        for (reference_name, reference, target) in refs {
            ratios.push(Ratio {
                name: name(""),
                value: paced.latency.p99_ms,
                unit: "ms",
                reference_name: reference_name.into(),
                reference,
                target,
            });
        }
        ratios.push(Ratio {
            name: name(", consumer tailing"),
            value: e2e.produce.latency.p99_ms,
            unit: "ms",
            reference_name: "5 ms".into(),
            reference: 5.0,
            target: None,
        });
    }
    ratios
}

/// Writes every figure as JSON to `--json`, if given.
pub fn write_json(a: &Args, plan: &Plan, r: &Results, ratios: &[Ratio]) -> Result<()> {
    let Results {
        strata_bin,
        produce_rows,
        hot_rows,
        e2e_runs,
        hot,
        loopback,
        sendfile_ref,
        mock_consume,
        disk_sync,
        disk_end,
        fsync_lat,
        tiers,
        rss_file_broker,
    } = r;
    let machine = machine_json();
    let report = json!({
        "tool": "strata-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "quick": a.quick,
        "machine": machine,
        "broker": {
            "managed": strata_bin.is_some(),
            "bin": strata_bin.as_ref().map(|p| p.display().to_string()),
            "bootstrap": a.bootstrap,
            "tier_cache_memory_bytes": strata_bin.as_ref().map(|_| plan.cache_bytes),
            "tier_chunk_bytes": strata_bin.as_ref().map(|_| a.tier_chunk_bytes),
            "tcp_congestion_control": a.tcp_congestion_control,
        },
        "settings": {
            "produce_bytes_per_run": plan.produce_bytes,
            "linger_ms": a.linger_ms,
            "consume_bytes": plan.consume_bytes,
            "consume_record_size": a.consume_record_size,
            "consume_partitions": a.consume_partitions,
            "tier_segment_bytes": plan.segment_bytes,
            "raw_read_threads": a.raw_read_threads,
            "e2e_fraction": a.e2e_fraction,
            "producer_config": a.producer_config.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "consumer_config": a.consumer_config.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "e2e_seconds": plan.e2e_seconds,
            "mb": "10^6 bytes of record values",
        },
        "produce": produce_rows.iter().map(|(s, r)| {
            let mut v = produce_json(r);
            v["record_bytes"] = json!(s.record_bytes);
            v["acks"] = json!(s.acks);
            v["partitions"] = json!(s.partitions);
            v
        }).collect::<Vec<_>>(),
        "e2e": e2e_runs.iter().map(|(spec, E2eRun { max, paced, paced_split, client_floor, disk_floor, e2e, split })| json!({
            "record_bytes": spec.record_bytes,
            "acks": spec.acks,
            "partitions": spec.partitions,
            "linger_ms": spec.linger_ms,
            "fraction_of_max": a.e2e_fraction,
            "max_records_per_sec": max.records_per_sec(),
            "max_seconds": max.secs,
            "target_records_per_sec": e2e.target_rate,
            "produce_alone": produce_json(paced),
            "produce_alone_broker": paced_split.json(),
            "produce_alone_client": client_json(&paced.client),
            "client_floor_mock_broker": produce_json(client_floor),
            "disk_paced_sync_latency": disk_floor.as_ref().map(stats::Summary::json),
            "broker": split.json(),
            "produce": produce_json(&e2e.produce),
            "received": e2e.received,
            "e2e_latency": e2e.latency.json(),
        })).collect::<Vec<_>>(),
        "consume": {
            "hot": consume_json(hot),
        "hot_by_record_size": hot_rows.iter().map(|(s, c)| {
            let mut v = consume_json(c);
            v["record_bytes"] = json!(s.record_bytes);
            v["partitions"] = json!(s.partitions);
            v
        }).collect::<Vec<_>>(),
            "file": tiers.iter().find(|t| t.backend == "file").map(tier_json),
            "s3": tiers.iter().find(|t| t.backend == "s3").map(tier_json),
        },
        "references": {
            "loopback_tcp": transfer_json(loopback),
            "loopback_sendfile": transfer_json(sendfile_ref),
            "consume_mock_broker": consume_json(mock_consume),
            "disk_fdatasync_1mib": transfer_json(disk_sync),
            "disk_fdatasync_end": transfer_json(disk_end),
            "fdatasync_4kib_latency": fsync_lat.json(),
            "file_tier_reads": tiers.iter().find(|t| t.backend == "file").map(|t| transfer_json(&t.raw)),
            "s3_ranged_gets": tiers.iter().find(|t| t.backend == "s3").map(|t| transfer_json(&t.raw)),
        },
        "rss": {
            "file_broker_peak_bytes": rss_file_broker,
            "tier_cache_capacity_bytes": plan.cache_bytes,
        },
        "targets": ratios.iter().map(Ratio::json).collect::<Vec<_>>(),
    });
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
        say(format!("wrote {}", path.display()));
    }
    Ok(())
}

fn machine_json() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_bytes": mem_kib.map(|k| k * 1024),
        "cpu": model,
        "os": std::env::consts::OS,
        "loadavg_at_start": LOADAVG_AT_START.get(),
        "loadavg_at_end": loadavg(),
        "tcp_congestion_control_default": reference::system_congestion_control(),
    })
}

/// /proc/loadavg when the run started: other load on the machine skews
/// every figure, so the report says how busy it was.
pub static LOADAVG_AT_START: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Writes the report of a one-figure-set mode (`--brokers`, `--tls`,
/// `--compaction`, `--table-export`, `--transactions`, `--raw`) to `path`: the tool's header fields,
/// then `figures`' own.
pub fn write_mode_json(a: &Args, path: &std::path::Path, figures: Value) -> Result<()> {
    let mut report = json!({
        "tool": "strata-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "quick": a.quick,
    });
    if let (Some(r), Value::Object(f)) = (report.as_object_mut(), figures) {
        r.extend(f);
    }
    std::fs::write(path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("write {}", path.display()))
}

/// Prints the broker's peak RSS, when known.
pub fn print_peak_rss(rss: Option<u64>) {
    if let Some(bytes) = rss {
        println!("broker peak RSS: {:.0} MiB", bytes as f64 / 1048576.0);
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}
