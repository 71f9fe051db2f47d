//! `--tls`: what TLS costs. The tool starts one broker with a PLAINTEXT
//! and an SSL listener (a CA and a server certificate made for the run),
//! then measures, in the same run and alternating the two listeners, a hot
//! consume (the data set in the page cache; sendfile on PLAINTEXT, read
//! and encrypted on SSL) and an acks=1 produce, and reports each SSL
//! figure as a ratio of the PLAINTEXT one, with the broker's CPU per MB.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan};
use crate::kafka::{self, ProduceSpec};

/// Rounds of each workload per listener (PLAINTEXT, SSL, PLAINTEXT, SSL):
/// alternating spreads the machine's drift over both.
const ROUNDS: usize = 2;

/// One measured run.
struct Run {
    workload: &'static str,
    listener: &'static str,
    mb_per_sec: f64,
    broker_cpu_pct: Option<f64>,
}

impl Run {
    /// Broker CPU seconds per GB moved.
    fn cpu_s_per_gb(&self) -> Option<f64> {
        Some(self.broker_cpu_pct? / 100.0 / self.mb_per_sec * 1000.0)
    }
}

/// Writes a CA and a server certificate for 127.0.0.1 into `dir`; returns
/// (CA, certificate, key) paths.
fn certificates(dir: &Path) -> Result<(String, String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "strata-bench CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "strata-bench broker");
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &ca)?;
    let write = |name: &str, pem: String| -> Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, pem).with_context(|| format!("write {}", path.display()))?;
        Ok(path.display().to_string())
    };
    Ok((
        write("ca.pem", ca.pem())?,
        write("server.pem", cert.pem())?,
        write("server.key", key.serialize_pem())?,
    ))
}

pub fn run(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    let bin = match &a.strata_bin {
        Some(p) => p.clone(),
        None => broker::find_strata_bin()?,
    };
    std::fs::create_dir_all(work)?;
    let (ca, cert, key) = certificates(work)?;
    let mut args = vec![
        "--listeners".to_string(),
        "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".to_string(),
        "--ssl-certificate-file".to_string(),
        cert,
        "--ssl-key-file".to_string(),
        key,
    ];
    if let Some(cc) = &a.tcp_congestion_control {
        args.extend(["--tcp-congestion-control".into(), cc.clone()]);
    }
    let mut b = Broker::start(&bin, &work.join("broker"), args, Vec::new())?;
    let plain = b.listener("PLAINTEXT")?.to_string();
    let ssl = b.listener("SSL")?.to_string();
    kafka::secure(
        &ssl,
        vec![
            ("security.protocol".into(), "SSL".into()),
            ("ssl.ca.location".into(), ca),
        ],
    );
    say(format!(
        "broker {} with PLAINTEXT at {plain} and SSL at {ssl}",
        bin.display()
    ));
    let pid = b.pid();
    let listeners = [("PLAINTEXT", plain.as_str()), ("SSL", ssl.as_str())];

    // The consume data set, produced once over PLAINTEXT.
    let prefix = format!("sb{}", std::process::id());
    let topic = format!("{prefix}-tls-consume");
    let partitions = a.consume_partitions;
    let size = a.consume_record_size;
    kafka::create_topic(&plain, &topic, partitions, &[])?;
    let spec = ProduceSpec {
        topic: topic.clone(),
        partitions,
        record_bytes: size,
        records: (plan.consume_bytes / size as u64).max(1),
        acks: "1".into(),
        linger_ms: a.linger_ms,
        rate: None,
        keys: None,
    };
    kafka::produce(&plain, &spec, Instant::now(), false, false, None)?;
    // One read to bring it into the page cache.
    kafka::consume_all(&plain, &topic, partitions, None)?;

    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        for (name, addr) in listeners {
            let r = kafka::consume_all(addr, &topic, partitions, pid)?;
            say(format!(
                "hot consume over {name} (round {}): {:.1} MB/s, broker CPU {}%",
                round + 1,
                r.mb_per_sec(),
                r.cpu.cells()[0]
            ));
            runs.push(Run {
                workload: "hot consume",
                listener: name,
                mb_per_sec: r.mb_per_sec(),
                broker_cpu_pct: r.cpu.broker_pct,
            });
        }
    }
    let produce_size = a.e2e_record_size;
    for round in 0..ROUNDS {
        for (name, addr) in listeners {
            let topic = format!("{prefix}-tls-produce-{name}-{round}");
            kafka::create_topic(&plain, &topic, 16, &[])?;
            let spec = ProduceSpec {
                topic,
                partitions: 16,
                record_bytes: produce_size,
                records: (plan.produce_bytes / produce_size as u64).max(1),
                acks: "1".into(),
                linger_ms: a.linger_ms,
                rate: None,
                keys: None,
            };
            let r = kafka::produce(addr, &spec, Instant::now(), false, true, pid)?;
            say(format!(
                "produce acks=1 over {name} (round {}): {:.1} MB/s, broker CPU {}%",
                round + 1,
                r.mb_per_sec(),
                r.cpu.cells()[0]
            ));
            runs.push(Run {
                workload: "produce acks=1",
                listener: name,
                mb_per_sec: r.mb_per_sec(),
                broker_cpu_pct: r.cpu.broker_pct,
            });
        }
    }
    let rss = b.peak_rss();
    b.stop()?;
    print_table(&runs, size, produce_size, rss);
    if let Some(path) = &a.json {
        write_json(a, path, &runs)?;
    }
    Ok(())
}

/// The best round of `workload` over `listener`.
fn best<'a>(runs: &'a [Run], workload: &str, listener: &str) -> Option<&'a Run> {
    runs.iter()
        .filter(|r| r.workload == workload && r.listener == listener)
        .max_by(|a, b| a.mb_per_sec.total_cmp(&b.mb_per_sec))
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn print_table(runs: &[Run], consume_size: usize, produce_size: usize, rss: Option<u64>) {
    println!(
        "\n## TLS against PLAINTEXT: hot consume of {consume_size} B records, produce acks=1 of {produce_size} B records (16 partitions); best of {ROUNDS} alternating rounds\n"
    );
    println!("| workload | PLAINTEXT MB/s | SSL MB/s | SSL / PLAINTEXT | broker CPU s/GB PLAINTEXT | broker CPU s/GB SSL |");
    println!("|---|---|---|---|---|---|");
    for workload in ["hot consume", "produce acks=1"] {
        let (Some(p), Some(s)) = (
            best(runs, workload, "PLAINTEXT"),
            best(runs, workload, "SSL"),
        ) else {
            continue;
        };
        println!(
            "| {workload} | {:.1} | {:.1} | {:.2} | {} | {} |",
            p.mb_per_sec,
            s.mb_per_sec,
            s.mb_per_sec / p.mb_per_sec,
            cell(p.cpu_s_per_gb()),
            cell(s.cpu_s_per_gb()),
        );
    }
    if let Some(bytes) = rss {
        println!("\nbroker peak RSS: {:.0} MiB", bytes as f64 / 1048576.0);
    }
}

fn write_json(a: &Args, path: &Path, runs: &[Run]) -> Result<()> {
    let rows: Vec<_> = runs
        .iter()
        .map(|r| {
            json!({
                "workload": r.workload,
                "listener": r.listener,
                "mb_per_sec": r.mb_per_sec,
                "broker_cpu_pct": r.broker_cpu_pct,
            })
        })
        .collect();
    let ratios: serde_json::Map<String, serde_json::Value> = ["hot consume", "produce acks=1"]
        .iter()
        .filter_map(|w| {
            let (p, s) = (best(runs, w, "PLAINTEXT")?, best(runs, w, "SSL")?);
            Some((w.to_string(), json!(s.mb_per_sec / p.mb_per_sec)))
        })
        .collect();
    let report = json!({
        "tls": rows,
        "ssl_over_plaintext": ratios,
    });
    crate::report::write_mode_json(a, path, report)
}
