//! strata-bench: drives a Kafka-compatible broker with librdkafka and puts
//! every figure beside what the machine physically allows, measured in the
//! same run. See benches/README.md.
//!
//! [`workloads::run_in`] measures everything (the tier runs in [`tier`]),
//! then [`report`] sets each figure beside its reference and writes the
//! JSON, and [`tables`] prints the Markdown tables.

mod broker;
mod cli;
mod cluster;
mod compaction;
mod cpu;
mod http;
mod kafka;
mod partitions;
mod raw;
mod reference;
mod replay;
mod report;
mod stats;
mod table_export;
mod tables;
mod tier;
mod tls;
mod transactions;
mod workloads;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{say, Args, Plan};
use workloads::Results;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<()> {
    let plan = Plan::new(a);
    let _ = report::LOADAVG_AT_START.set(report::loadavg());
    kafka::set_overrides(a.producer_config.clone(), a.consumer_config.clone());
    let started = Instant::now();
    let base = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = base.join(format!(
        "strata-bench-{}-{}",
        std::process::id(),
        workloads::unix_ms()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    say(format!(
        "work dir {}; /proc/loadavg: {}; TCP congestion control: {}",
        work.display(),
        report::loadavg(),
        match &a.tcp_congestion_control {
            Some(cc) => format!("{cc} (--tcp-congestion-control)"),
            None => format!(
                "{} (the system's default)",
                reference::system_congestion_control().unwrap_or_else(|| "unknown".into())
            ),
        }
    ));
    let result = match a.brokers {
        Some(n) => cluster::run(a, &plan, &work, usize::from(n)),
        None if a.tls => tls::run(a, &plan, &work),
        None if a.compaction => compaction::run(a, &plan, &work),
        None if a.table_export => table_export::run(a, &plan, &work),
        None if a.transactions => transactions::run(a, &plan, &work),
        None if a.raw => raw::run(a, &plan, &work),
        None if a.partition_scaling => partitions::run(a, &plan, &work),
        None if a.long_replay => replay::run(a, &plan, &work),
        None => workloads::run_in(a, &plan, &work).and_then(|r| report_all(a, &plan, &r)),
    };
    if a.keep || result.is_err() {
        say(format!("kept {}", work.display()));
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    say(format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    result
}

/// Sets every figure beside its reference, prints the tables and writes
/// the JSON report (with `--json`).
fn report_all(a: &Args, plan: &Plan, r: &Results) -> Result<()> {
    let ratios = report::ratios(a, r);
    tables::print_tables(r, a.consume_record_size, &ratios);
    report::write_json(a, plan, r, &ratios)
}
