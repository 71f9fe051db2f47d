//! `--transactions`: what transactions cost the producer. One broker; the
//! tool produces --produce-bytes of 1 KiB records round robin over 16
//! partitions with a transactional producer (transactions of 1,000
//! records, each committed) and with an idempotent producer (acks=all, the
//! same settings otherwise), alternating rounds, and reports the
//! transactional producer's MB/s as a ratio of the idempotent one's. The
//! broker's CPU per MB comes with each run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan};
use crate::cpu::Mark;
use crate::kafka;

const ROUNDS: usize = 3;
const KINDS: [&str; 2] = ["transactional", "idempotent"];
const PARTITIONS: i32 = 16;
const RECORD_BYTES: usize = 1024;
const TXN_RECORDS: u64 = 1_000;
const TIMEOUT: Duration = Duration::from_secs(120);

/// One produce run: MB/s and the broker's CPU in percent of one core.
struct Run {
    kind: &'static str,
    mb_per_sec: f64,
    broker_cpu_pct: f64,
    transactions: u64,
}

fn produce(
    bs: &str,
    topic: &str,
    records: u64,
    kind: &'static str,
    pid: Option<u32>,
) -> Result<Run> {
    let mut config = kafka::base_config(bs);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        // At most transaction.timeout.ms (librdkafka's default 60 s).
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("batch.size", "1000000");
    let transactional = kind == "transactional";
    if transactional {
        config.set(
            "transactional.id",
            format!("strata-bench-{}-{topic}", std::process::id()),
        );
    }
    // Delivery reports are events the application serves: polled here,
    // and drained before each commit (commit_transaction's own flush waits
    // for them in 100 ms steps, which alone would cap the rate).
    let producer: BaseProducer = config.create().context("create producer")?;
    let drain = |p: &BaseProducer| {
        while p.in_flight_count() > 0 {
            p.poll(Duration::from_millis(1));
        }
    };
    if transactional {
        producer
            .init_transactions(TIMEOUT)
            .context("init_transactions")?;
    }
    let pool = kafka::payload_pool(RECORD_BYTES + 4096);
    let mark = Mark::now(pid);
    let start = Instant::now();
    let mut transactions = 0;
    for i in 0..records {
        if transactional && i % TXN_RECORDS == 0 {
            if i > 0 {
                drain(&producer);
                producer.commit_transaction(TIMEOUT).context("commit")?;
                transactions += 1;
            }
            producer.begin_transaction().context("begin")?;
        }
        let off = (i as usize * 61) % 4096;
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(&pool[off..off + RECORD_BYTES])
            .partition((i % PARTITIONS as u64) as i32);
        producer.poll(Duration::ZERO);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(anyhow!("produce to {topic}: {e}")),
            }
        }
    }
    drain(&producer);
    if transactional {
        producer.commit_transaction(TIMEOUT).context("commit")?;
        transactions += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = mark.cpu();
    Ok(Run {
        kind,
        mb_per_sec: (records * RECORD_BYTES as u64) as f64 / secs / 1e6,
        broker_cpu_pct: cpu.broker_pct.unwrap_or(f64::NAN),
        transactions,
    })
}

pub fn run(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    let bin = match &a.strata_bin {
        Some(p) => p.clone(),
        None => broker::find_strata_bin()?,
    };
    std::fs::create_dir_all(work)?;
    let mut b = Broker::start(&bin, &work.join("broker"), Vec::new(), Vec::new())?;
    let bs = b.bootstrap.clone();
    let pid = b.pid();
    let records = (plan.produce_bytes / RECORD_BYTES as u64).max(TXN_RECORDS);
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        for kind in KINDS {
            let topic = format!("sb{}-{round}-{}", std::process::id(), &kind[..3]);
            kafka::create_topic(&bs, &topic, PARTITIONS, &[])?;
            let r = produce(&bs, &topic, records, kind, pid)?;
            say(format!(
                "{kind} producer (round {}): {:.1} MB/s, {} transactions, broker CPU {:.0}%",
                round + 1,
                r.mb_per_sec,
                r.transactions,
                r.broker_cpu_pct
            ));
            kafka::delete_topic(&bs, &topic)?;
            runs.push(r);
        }
    }
    let rss = b.peak_rss();
    b.stop()?;
    let best = |kind: &str| {
        runs.iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.mb_per_sec)
            .fold(0.0, f64::max)
    };
    let (txn, idem) = (best("transactional"), best("idempotent"));
    println!(
        "\n## Transactions: {PARTITIONS} partitions, {RECORD_BYTES} B records, {TXN_RECORDS} records per transaction\n"
    );
    println!("| figure | value | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| transactional producer MB/s (best of {ROUNDS}) | {txn:.1} | idempotent producer {idem:.1} | {:.2} |",
        txn / idem
    );
    println!("\n| run | producer | MB/s | broker CPU % |");
    println!("|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {} | {:.1} | {:.0} |",
            i / KINDS.len() + 1,
            r.kind,
            r.mb_per_sec,
            r.broker_cpu_pct
        );
    }
    crate::report::print_peak_rss(rss);
    if let Some(path) = &a.json {
        let report = json!({
            "transactional_mb_per_sec": txn,
            "idempotent_mb_per_sec": idem,
            "transactional_over_idempotent": txn / idem,
            "runs": runs.iter().map(|r| json!({"producer": r.kind, "mb_per_sec": r.mb_per_sec, "broker_cpu_pct": r.broker_cpu_pct})).collect::<Vec<_>>(),
        });
        crate::report::write_mode_json(a, path, report)?;
    }
    Ok(())
}
