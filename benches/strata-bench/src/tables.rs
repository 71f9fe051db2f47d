//! The report as Markdown tables on stdout.

use crate::kafka::{ConsumeResult, ProduceSpec};
use crate::report::{Ratio, MOCK_CONSUMER};
use crate::stats;
use crate::workloads::{BrokerSplit, E2eRun, Results};

/// A Markdown table with columns padded to their widest cell.
struct Table {
    head: Vec<&'static str>,
    /// Right-aligned (numeric) columns.
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(cols: &[(&'static str, bool)]) -> Table {
        Table {
            head: cols.iter().map(|c| c.0).collect(),
            right: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut w: Vec<usize> = self.head.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let cells: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if self.right[i] {
                        format!("{c:>width$}", width = w[i])
                    } else {
                        format!("{c:<width$}", width = w[i])
                    }
                })
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(self.head.iter().map(|h| h.to_string()).collect());
        let sep: Vec<String> = w
            .iter()
            .zip(&self.right)
            .map(|(n, r)| {
                if *r {
                    format!("{}:", "-".repeat(n + 1))
                } else {
                    "-".repeat(n + 2)
                }
            })
            .collect();
        out.push_str(&format!("|{}|\n", sep.join("|")));
        for r in &self.rows {
            out.push_str(&line(r.clone()));
        }
        out
    }
}

fn f0(x: f64) -> String {
    format!("{x:.0}")
}
fn f1(x: f64) -> String {
    format!("{x:.1}")
}
fn f2(x: f64) -> String {
    format!("{x:.2}")
}

/// Prints the report as Markdown tables: produce, consume, end to end, the
/// physical references, and the targets.
pub fn print_tables(r: &Results, consume_record_size: usize, ratios: &[Ratio]) {
    produce_table(r);
    consume_table(r, consume_record_size);
    e2e_table(&r.e2e_runs);
    references_table(r);
    targets_table(ratios);
}

/// Produce at maximum throughput, beside the disk.
fn produce_table(r: &Results) {
    let Results {
        produce_rows,
        disk_end,
        ..
    } = r;
    let mut t = Table::new(&[
        ("record B", true),
        ("acks", true),
        ("partitions", true),
        ("records/s", true),
        ("MB/s", true),
        ("p50 ms", true),
        ("p99 ms", true),
        ("p999 ms", true),
        ("vs disk", true),
        ("broker CPU %", true),
        ("client CPU %", true),
    ]);
    for (s, r) in produce_rows {
        t.row(vec![
            s.record_bytes.to_string(),
            s.acks.clone(),
            s.partitions.to_string(),
            f0(r.records_per_sec()),
            f1(r.mb_per_sec()),
            f2(r.latency.p50_ms),
            f2(r.latency.p99_ms),
            f2(r.latency.p999_ms),
            f2(r.mb_per_sec() / disk_end.mb_per_sec()),
            r.cpu.cells()[0].clone(),
            r.cpu.cells()[1].clone(),
        ]);
    }
    println!(
        "\nProduce at maximum throughput (latency: delivery reports; vs disk: MB/s over the sequential write with one fdatasync at the end, {:.1} MB/s)\n\n{}",
        disk_end.mb_per_sec(),
        t.render()
    );
}

/// Consume, hot and from the tier, beside loopback copies and the mock
/// broker.
fn consume_table(r: &Results, consume_record_size: usize) {
    let Results {
        hot_rows,
        hot,
        loopback,
        sendfile_ref,
        mock_consume,
        tiers,
        ..
    } = r;
    let mut t = Table::new(&[
        ("workload", false),
        ("records/s", true),
        ("MB/s", true),
        ("reference", false),
        ("ref MB/s", true),
        ("ratio", true),
        ("broker CPU %", true),
        ("client CPU %", true),
    ]);
    let mut row = |name: String, c: &ConsumeResult, rname: &str, rmb: f64| {
        let [b, cl] = c.cpu.cells();
        t.row(vec![
            name,
            f0(c.records_per_sec()),
            f1(c.mb_per_sec()),
            rname.to_string(),
            f1(rmb),
            f2(c.mb_per_sec() / rmb),
            b,
            cl,
        ]);
    };
    for (s, c) in hot_rows {
        row(
            format!("hot, {} B x {} partitions", s.record_bytes, s.partitions),
            c,
            "loopback TCP copy",
            loopback.mb_per_sec(),
        );
    }
    row(
        format!("hot, replay set ({consume_record_size} B)"),
        hot,
        "loopback TCP copy",
        loopback.mb_per_sec(),
    );
    row(
        format!("hot, replay set ({consume_record_size} B)"),
        hot,
        "loopback sendfile copy",
        sendfile_ref.mb_per_sec(),
    );
    row(
        format!("hot, replay set ({consume_record_size} B)"),
        hot,
        MOCK_CONSUMER,
        mock_consume.mb_per_sec(),
    );
    row(
        format!("replay set from librdkafka's mock broker ({consume_record_size} B)"),
        mock_consume,
        "loopback TCP copy",
        loopback.mb_per_sec(),
    );
    for tr in tiers {
        let b = tr.backend;
        row(
            format!("{b}:// first tier read"),
            &tr.first,
            "hot consume",
            hot.mb_per_sec(),
        );
        row(
            format!("{b}:// warm (tier cache)"),
            &tr.warm,
            "hot consume",
            hot.mb_per_sec(),
        );
        row(
            format!("{b}:// cold (restarted)"),
            &tr.cold,
            tr.raw_name,
            tr.raw.mb_per_sec(),
        );
    }
    println!(
        "Consume, one consumer, whole topic from the start\n\n{}",
        t.render()
    );
    println!(
        "mock broker: the same consumer over the same records from librdkafka's in-process mock broker (memory only), \
         the client's own ceiling on the machine the bench runs on"
    );
    for tr in tiers {
        println!(
            "{}:// cold replay: {} object-store GETs, {:.3} per MiB replayed (one per 4 MiB chunk is 0.25, plus index and manifest reads)",
            tr.backend,
            tr.cold_gets,
            tr.cold_gets_per_mib()
        );
    }
}

/// End to end at a fixed rate, with the broker's and the client's share of
/// the latency.
fn e2e_table(e2e_runs: &[(ProduceSpec, E2eRun)]) {
    let mut t = Table::new(&[
        ("acks", true),
        ("max rec/s", true),
        ("records/s", true),
        ("MB/s", true),
        ("latency", false),
        ("p50 ms", true),
        ("p99 ms", true),
        ("p999 ms", true),
        ("max ms", true),
        ("broker CPU %", true),
        ("client CPU %", true),
    ]);
    let mut title = String::new();
    let mut rounds_note = String::new();
    for (spec, run) in e2e_runs {
        let E2eRun {
            max,
            paced,
            paced_split,
            client_floor,
            disk_floor,
            e2e,
            split,
        } = run;
        title = format!(
            "{} B records, {} partitions, linger.ms={}; max: producing flat out for {:.1} s",
            spec.record_bytes, spec.partitions, spec.linger_ms, max.secs
        );
        let lead = |t: &mut Table, name: &str, cells: [String; 4], cpu: [String; 2]| {
            let [p50, p99, p999, top] = cells;
            let [bc, cc] = cpu;
            t.row(vec![
                spec.acks.clone(),
                f0(max.records_per_sec()),
                f0(e2e.target_rate),
                f1(e2e.target_rate * spec.record_bytes as f64 / 1e6),
                name.into(),
                p50,
                p99,
                p999,
                top,
                bc,
                cc,
            ]);
        };
        let at_most = |v: f64| format!("<= {}", f2(v));
        let broker_rows = |t: &mut Table, split: &BrokerSplit| {
            for (name, h) in [
                ("  broker: Produce request", &split.produce),
                ("  broker: read to response written", &split.produce_total),
                ("  broker: sync round", &split.rounds),
            ] {
                if let Some(h) = h {
                    lead(
                        t,
                        name,
                        [
                            at_most(h.p50_ms),
                            at_most(h.p99_ms),
                            at_most(h.p999_ms),
                            "".into(),
                        ],
                        ["".into(), "".into()],
                    );
                }
            }
        };
        let latency_cells =
            |l: &stats::Summary| [f2(l.p50_ms), f2(l.p99_ms), f2(l.p999_ms), f2(l.max_ms)];
        lead(
            &mut t,
            "produce alone (delivery report)",
            latency_cells(&paced.latency),
            paced.cpu.cells(),
        );
        broker_rows(&mut t, paced_split);
        for (name, w) in [
            ("  librdkafka: queue to request", &paced.client.queue),
            ("  librdkafka: request round trip", &paced.client.rtt),
        ] {
            let ms = |v: Option<f64>| v.map_or("n/a".into(), f2);
            lead(
                &mut t,
                name,
                [ms(w.p50_ms()), ms(w.p99_ms()), "".into(), ms(w.max_ms())],
                ["".into(), "".into()],
            );
        }
        lead(
            &mut t,
            "  same client, librdkafka's mock broker",
            latency_cells(&client_floor.latency),
            client_floor.cpu.cells(),
        );
        if let Some(floor) = disk_floor {
            lead(
                &mut t,
                "  disk alone: write to fdatasync'd",
                latency_cells(floor),
                ["".into(), "".into()],
            );
        }
        let cpu = e2e.produce.cpu.cells();
        for (name, l) in [
            ("consumer tailing: produce", &e2e.produce.latency),
            ("consumer tailing: produce -> consume", &e2e.latency),
        ] {
            lead(&mut t, name, latency_cells(l), cpu.clone());
        }
        broker_rows(&mut t, split);
        for (how, split) in [("alone", paced_split), ("consumer tailing", split)] {
            let mut parts = Vec::new();
            if let Some(r) = &split.produce {
                parts.push(format!(
                    "{} Produce requests, {:.2} ms each on average",
                    r.count, r.mean_ms
                ));
            }
            if let Some(r) = &split.produce_total {
                parts.push(format!(
                    "{:.2} ms from reading each to writing its response",
                    r.mean_ms
                ));
            }
            if let (Some(r), Some(p)) = (&split.rounds, split.round_partitions) {
                parts.push(format!(
                    "{} sync rounds, {:.1} partitions and {:.2} ms each on average",
                    r.count, p, r.mean_ms
                ));
            }
            if !parts.is_empty() {
                rounds_note += &format!("acks={} ({how}): {}\n", spec.acks, parts.join("; "));
            }
        }
    }
    println!("End to end at a fixed rate ({title})\n\n{}", t.render());
    println!(
        "librdkafka rows: from its statistics, the count-weighted mean of each second's p50 and p99, and the largest value; \
         mock broker: the same producer at the same rate against librdkafka's in-process mock broker (memory only), the client's own floor on the machine the bench runs on"
    );
    if e2e_runs.iter().any(|(_, r)| r.split.produce.is_some()) {
        println!(
            "broker rows: from the broker's histograms, each figure the upper bound of its bucket\n{rounds_note}"
        );
    }
}

/// The physical references measured in the same run.
fn references_table(r: &Results) {
    let Results {
        loopback,
        sendfile_ref,
        disk_sync,
        disk_end,
        fsync_lat,
        tiers,
        ..
    } = r;
    let mut t = Table::new(&[
        ("reference", false),
        ("bytes", true),
        ("seconds", true),
        ("MB/s", true),
    ]);
    let mut refs = vec![
        ("loopback TCP copy (1 MiB writes)".to_string(), *loopback),
        (
            "loopback sendfile copy (from the page cache)".to_string(),
            *sendfile_ref,
        ),
        ("disk write, fdatasync every 1 MiB".to_string(), *disk_sync),
        ("disk write, fdatasync at the end".to_string(), *disk_end),
    ];
    for tr in tiers {
        refs.push((format!("{} ({}://)", tr.raw_name, tr.backend), tr.raw));
    }
    for (name, x) in refs {
        t.row(vec![
            name,
            x.bytes.to_string(),
            format!("{:.3}", x.secs),
            f1(x.mb_per_sec()),
        ]);
    }
    println!(
        "Physical references (same run); 4 KiB append + fdatasync latency: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n\n{}",
        fsync_lat.p50_ms,
        fsync_lat.p99_ms,
        fsync_lat.p999_ms,
        t.render()
    );
}

/// The figures with a target, and the headline ones.
fn targets_table(ratios: &[Ratio]) {
    let shown: Vec<&Ratio> = ratios
        .iter()
        .filter(|r| {
            r.target.is_some()
                || r.name.contains("1024 B acks=all 16")
                || r.reference_name.starts_with("librdkafka")
        })
        .collect();
    ratios_table(&shown);
}

/// Each figure beside its reference, their ratio and its target.
pub fn ratios_table(ratios: &[&Ratio]) {
    let mut t = Table::new(&[
        ("figure", false),
        ("value", true),
        ("reference", false),
        ("ref", true),
        ("ratio", true),
        ("target", true),
        ("met", false),
    ]);
    for r in ratios {
        t.row(vec![
            format!("{} ({})", r.name, r.unit),
            f2(r.value),
            r.reference_name.clone(),
            f2(r.reference),
            f2(r.ratio()),
            r.target
                .map(|(b, l)| format!("{}{b}", if l { ">= " } else { "<= " }))
                .unwrap_or_default(),
            match r.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            }
            .into(),
        ]);
    }
    println!("Targets\n\n{}", t.render());
}
