//! `strata tier cost`: what each topic's tier costs in the object store.
//!
//! Requests and bytes moved come from the brokers' own counters
//! (`strata_tier_requests_total`, `strata_tier_request_bytes_total`, read
//! from each broker's `/metrics`), which count every request the tier
//! makes (see `tiering::cost`); stored bytes come from the tier's log
//! dirs (DescribeLogDirs, as `strata tier status` reads them). The
//! monthly estimate is the storage at its current size plus each
//! broker's request rate since it started, carried over a month, priced
//! from a table (S3 Standard by default, `--prices FILE` to change it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::output::{print_json, print_str, Columns};
use super::Output;
use crate::client::Client;

/// Seconds in the month prices are quoted for (730 hours, as AWS bills).
const MONTH_SECS: f64 = 730.0 * 3600.0;
const GIB: f64 = (1u64 << 30) as f64;

#[derive(Args, Debug)]
pub struct CostArgs {
    /// Topics to show (default: every topic)
    topics: Vec<String>,
    /// A broker's metrics URL, once per broker: requests are counted by
    /// each broker for what it uploads and serves
    #[arg(long = "metrics", default_value = "http://127.0.0.1:9644/metrics")]
    metrics: Vec<String>,
    /// Prices in USD, a TOML file with any of storage_per_gib_month,
    /// put_per_1000, get_per_1000, list_per_1000, delete_per_1000,
    /// transfer_out_per_gib [default: S3 Standard, us-east-1]
    #[arg(long)]
    prices: Option<PathBuf>,
}

/// Prices in USD.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    pub storage_per_gib_month: f64,
    pub put_per_1000: f64,
    pub get_per_1000: f64,
    pub list_per_1000: f64,
    pub delete_per_1000: f64,
    /// Bytes the store returns; free to a broker in the bucket's region.
    pub transfer_out_per_gib: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            storage_per_gib_month: 0.023,
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            list_per_1000: 0.005,
            delete_per_1000: 0.0,
            transfer_out_per_gib: 0.0,
        }
    }
}

impl Prices {
    fn load(path: &std::path::Path) -> anyhow::Result<Prices> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the price table {}", path.display()))?;
        let prices: Prices = toml::from_str(&text)
            .with_context(|| format!("invalid price table {}", path.display()))?;
        for (key, v) in [
            ("storage_per_gib_month", prices.storage_per_gib_month),
            ("put_per_1000", prices.put_per_1000),
            ("get_per_1000", prices.get_per_1000),
            ("list_per_1000", prices.list_per_1000),
            ("delete_per_1000", prices.delete_per_1000),
            ("transfer_out_per_gib", prices.transfer_out_per_gib),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                anyhow::bail!(
                    "invalid price table {}: {key} must be a number >= 0, not {v}",
                    path.display()
                );
            }
        }
        Ok(prices)
    }
}

/// Request counts of one topic: totals, and totals carried over a month.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub puts: f64,
    pub gets: f64,
    pub lists: f64,
    pub deletes: f64,
    pub bytes_put: f64,
    pub bytes_got: f64,
}

impl Usage {
    fn add(&mut self, other: &Usage, scale: f64) {
        self.puts += other.puts * scale;
        self.gets += other.gets * scale;
        self.lists += other.lists * scale;
        self.deletes += other.deletes * scale;
        self.bytes_put += other.bytes_put * scale;
        self.bytes_got += other.bytes_got * scale;
    }

    fn request_cost(&self, p: &Prices) -> f64 {
        (self.puts * p.put_per_1000
            + self.gets * p.get_per_1000
            + self.lists * p.list_per_1000
            + self.deletes * p.delete_per_1000)
            / 1000.0
            + self.bytes_got / GIB * p.transfer_out_per_gib
    }
}

/// One broker's scrape: its start time and per-topic usage.
#[derive(Debug, Default)]
pub struct Scrape {
    pub start_time: Option<f64>,
    pub by_topic: BTreeMap<String, Usage>,
    /// `strata_tier_scrub_damaged_segments` by topic and partition.
    pub scrub_damaged: BTreeMap<(String, i32), f64>,
    /// The compaction gauges by topic and partition.
    pub compaction: BTreeMap<(String, i32), CompactionScrape>,
}

/// A compacted partition's cleaner state as a broker's gauges report it
/// (`None`: this broker does not report it).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CompactionScrape {
    /// `strata_log_cleaner_dirty_ratio`
    pub dirty_ratio: Option<f64>,
    /// `strata_log_cleaner_last_clean_age_seconds` (+Inf: not since start)
    pub last_clean_age: Option<f64>,
    /// `strata_tier_compaction_dirty_ratio` (the leader's)
    pub tier_dirty_ratio: Option<f64>,
    /// `strata_tier_compaction_last_age_seconds` (+Inf: never)
    pub tier_last_age: Option<f64>,
}

impl CompactionScrape {
    /// Two brokers' reports of one partition: the largest dirty ratios and
    /// the most recent cleans.
    pub fn merge(&mut self, o: &CompactionScrape) {
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        self.dirty_ratio = max(self.dirty_ratio, o.dirty_ratio);
        self.last_clean_age = min(self.last_clean_age, o.last_clean_age);
        self.tier_dirty_ratio = max(self.tier_dirty_ratio, o.tier_dirty_ratio);
        self.tier_last_age = min(self.tier_last_age, o.tier_last_age);
    }
}

/// The compaction state of every compacted partition the brokers at
/// `urls` (their /metrics) report, merged.
pub async fn scrape_compaction(
    urls: &[String],
) -> anyhow::Result<BTreeMap<(String, i32), CompactionScrape>> {
    let mut out: BTreeMap<(String, i32), CompactionScrape> = BTreeMap::new();
    for url in urls {
        for (key, c) in scrape(url).await?.compaction {
            out.entry(key).or_default().merge(&c);
        }
    }
    Ok(out)
}

/// Seconds ago as an operator reads it: `12s ago`, `never`, `-` (unknown).
pub fn age_text(age: Option<f64>) -> String {
    match age {
        None => "-".into(),
        Some(a) if !a.is_finite() => "never".into(),
        Some(a) => format!("{a:.0}s ago"),
    }
}

/// Reads the tier counters out of a Prometheus text exposition.
pub fn parse_scrape(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        // Prometheus writes infinities as +Inf / -Inf.
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_string())
            })
        };
        match name {
            "strata_start_time_seconds" => s.start_time = Some(value),
            "strata_tier_scrub_damaged_segments"
            | "strata_log_cleaner_dirty_ratio"
            | "strata_log_cleaner_last_clean_age_seconds"
            | "strata_tier_compaction_dirty_ratio"
            | "strata_tier_compaction_last_age_seconds" => {
                let (Some(topic), Some(p)) = (label("topic"), label("partition")) else {
                    continue;
                };
                let Ok(p) = p.parse() else {
                    continue;
                };
                let key = (topic, p);
                if name == "strata_tier_scrub_damaged_segments" {
                    s.scrub_damaged.insert(key, value);
                    continue;
                }
                let c = s.compaction.entry(key).or_default();
                match name {
                    "strata_log_cleaner_dirty_ratio" => c.dirty_ratio = Some(value),
                    "strata_log_cleaner_last_clean_age_seconds" => c.last_clean_age = Some(value),
                    "strata_tier_compaction_dirty_ratio" => c.tier_dirty_ratio = Some(value),
                    _ => c.tier_last_age = Some(value),
                }
            }
            "strata_tier_requests_total" => {
                let (Some(topic), Some(op)) = (label("topic"), label("op")) else {
                    continue;
                };
                let u = s.by_topic.entry(topic).or_default();
                match op.as_str() {
                    "put" => u.puts += value,
                    "get" => u.gets += value,
                    "list" => u.lists += value,
                    "delete" => u.deletes += value,
                    _ => {}
                }
            }
            "strata_tier_request_bytes_total" => {
                let (Some(topic), Some(dir)) = (label("topic"), label("direction")) else {
                    continue;
                };
                let u = s.by_topic.entry(topic).or_default();
                match dir.as_str() {
                    "put" => u.bytes_put += value,
                    "get" => u.bytes_got += value,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    s
}

/// A topic's line of the report.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CostRow {
    pub topic: String,
    pub usage: Usage,
    pub monthly: Usage,
    pub stored_bytes: f64,
    pub storage_per_month: f64,
    pub requests_per_month: f64,
}

/// Puts the scrapes (with the seconds each broker has been up) and the
/// stored bytes per topic together, priced by `prices`. Topic "" holds
/// what no topic owns (listings of the whole tier).
pub fn report(
    scrapes: &[(Scrape, f64)],
    stored: &BTreeMap<String, f64>,
    prices: &Prices,
) -> Vec<CostRow> {
    let mut rows: BTreeMap<String, CostRow> = BTreeMap::new();
    for (scrape, uptime) in scrapes {
        let scale = MONTH_SECS / uptime.max(1.0);
        for (topic, u) in &scrape.by_topic {
            let row = rows.entry(topic.clone()).or_default();
            row.usage.add(u, 1.0);
            row.monthly.add(u, scale);
        }
    }
    for (topic, bytes) in stored {
        rows.entry(topic.clone()).or_default().stored_bytes = *bytes;
    }
    rows.into_iter()
        .map(|(topic, mut r)| {
            r.topic = topic;
            r.storage_per_month = r.stored_bytes / GIB * prices.storage_per_gib_month;
            r.requests_per_month = r.monthly.request_cost(prices);
            r
        })
        .collect()
}

pub(super) async fn scrape(url: &str) -> anyhow::Result<Scrape> {
    let resp = reqwest::get(url)
        .await
        .with_context(|| format!("cannot read the broker metrics at {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("cannot read the broker metrics at {url}"))?;
    if !status.is_success() {
        anyhow::bail!("the broker metrics at {url} answered {status}");
    }
    let s = parse_scrape(&text);
    if s.start_time.is_none() {
        anyhow::bail!("{url} holds no strata_start_time_seconds: not a Strata broker's /metrics");
    }
    Ok(s)
}

pub async fn run(client: &Client, args: CostArgs, out: Output) -> anyhow::Result<()> {
    let prices = match &args.prices {
        Some(p) => Prices::load(p)?,
        None => Prices::default(),
    };
    let now = crate::clock::now_ms() as f64 / 1000.0;
    let mut scrapes = Vec::new();
    for url in &args.metrics {
        let s = scrape(url).await?;
        let uptime = now - s.start_time.unwrap_or(now);
        scrapes.push((s, uptime));
    }
    let names: Vec<&str> = args.topics.iter().map(String::as_str).collect();
    let md = client
        .metadata(if names.is_empty() { None } else { Some(&names) })
        .await?;
    let sizes = super::log_dirs::log_dir_sizes(client, &md).await?;
    let mut stored: BTreeMap<String, f64> = BTreeMap::new();
    for ((topic, _), s) in &sizes {
        *stored.entry(topic.clone()).or_default() += s.tier_bytes as f64;
    }
    let mut rows = report(&scrapes, &stored, &prices);
    if !args.topics.is_empty() {
        rows.retain(|r| args.topics.contains(&r.topic));
    }
    let total = rows.iter().fold(CostRow::default(), |mut t, r| {
        t.usage.add(&r.usage, 1.0);
        t.monthly.add(&r.monthly, 1.0);
        t.stored_bytes += r.stored_bytes;
        t.storage_per_month += r.storage_per_month;
        t.requests_per_month += r.requests_per_month;
        t
    });
    let uptimes: Vec<f64> = scrapes.iter().map(|(_, u)| *u).collect();
    match out {
        Output::Json => {
            let row = |r: &CostRow| {
                json!({
                    "topic": r.topic,
                    "put_requests": r.usage.puts,
                    "get_requests": r.usage.gets,
                    "list_requests": r.usage.lists,
                    "delete_requests": r.usage.deletes,
                    "bytes_put": r.usage.bytes_put,
                    "bytes_got": r.usage.bytes_got,
                    "stored_bytes": r.stored_bytes,
                    "monthly": {
                        "put_requests": r.monthly.puts,
                        "get_requests": r.monthly.gets,
                        "list_requests": r.monthly.lists,
                        "delete_requests": r.monthly.deletes,
                        "storage_usd": r.storage_per_month,
                        "requests_usd": r.requests_per_month,
                        "total_usd": r.storage_per_month + r.requests_per_month,
                    },
                })
            };
            print_json(&json!({
                "broker_uptime_seconds": uptimes,
                "prices": prices,
                "topics": rows.iter().map(row).collect::<Vec<_>>(),
                "total": row(&total),
            }))
        }
        Output::Table => {
            let mut text = format!(
                "Requests since each broker started ({} broker{}, up {}); a month at that rate, storage at its size now.\n\n",
                uptimes.len(),
                if uptimes.len() == 1 { "" } else { "s" },
                uptimes
                    .iter()
                    .map(|u| format!("{:.0} s", u))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut c = Columns::new(&[
                "TOPIC",
                "PUT",
                "GET",
                "LIST",
                "DELETE",
                "BYTES PUT",
                "BYTES GOT",
                "STORED",
                "STORAGE $/MONTH",
                "REQUESTS $/MONTH",
                "TOTAL $/MONTH",
            ]);
            for r in rows.iter().chain([&total]) {
                let name = if std::ptr::eq(r, &total) {
                    "(total)".to_string()
                } else if r.topic.is_empty() {
                    "(whole tier)".to_string()
                } else {
                    r.topic.clone()
                };
                c.row([
                    name,
                    format!("{:.0}", r.usage.puts),
                    format!("{:.0}", r.usage.gets),
                    format!("{:.0}", r.usage.lists),
                    format!("{:.0}", r.usage.deletes),
                    format!("{:.0}", r.usage.bytes_put),
                    format!("{:.0}", r.usage.bytes_got),
                    format!("{:.0}", r.stored_bytes),
                    format!("{:.4}", r.storage_per_month),
                    format!("{:.4}", r.requests_per_month),
                    format!("{:.4}", r.storage_per_month + r.requests_per_month),
                ]);
            }
            text.push_str(&c.render());
            if uptimes.iter().any(|u| *u < 3600.0) {
                text.push_str(
                    "\nA broker has been up less than an hour: the monthly request figures carry its start-up (uploads, cache fills) over the whole month.\n",
                );
            }
            print_str(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP strata_start_time_seconds When this broker process started
# TYPE strata_start_time_seconds gauge
strata_start_time_seconds 1000
# TYPE strata_tier_requests counter
strata_tier_requests_total{topic="orders",op="put"} 10
strata_tier_requests_total{topic="orders",op="get"} 2000
strata_tier_requests_total{topic="orders",op="list"} 4
strata_tier_requests_total{topic="orders",op="delete"} 3
strata_tier_requests_total{topic="",op="list"} 6
strata_tier_request_bytes_total{topic="orders",direction="put"} 1073741824
strata_tier_request_bytes_total{topic="orders",direction="get"} 2147483648
strata_tier_bytes_uploaded_total 5
strata_tier_scrub_damaged_segments{topic="orders",partition="3"} 2
strata_log_cleaner_dirty_ratio{topic="changes",partition="1"} 0.25
strata_log_cleaner_last_clean_age_seconds{topic="changes",partition="1"} +Inf
strata_tier_compaction_dirty_ratio{topic="changes",partition="1"} 0.5
strata_tier_compaction_last_age_seconds{topic="changes",partition="1"} 12.5
"#;

    #[test]
    fn a_scrape_yields_each_topics_requests_and_bytes() {
        let s = parse_scrape(TEXT);
        assert_eq!(s.start_time, Some(1000.0));
        let o = s.by_topic["orders"];
        assert_eq!(
            o,
            Usage {
                puts: 10.0,
                gets: 2000.0,
                lists: 4.0,
                deletes: 3.0,
                bytes_put: GIB,
                bytes_got: 2.0 * GIB,
            }
        );
        assert_eq!(s.by_topic[""].lists, 6.0);
        assert_eq!(s.scrub_damaged[&("orders".to_string(), 3)], 2.0);
        let c = s.compaction[&("changes".to_string(), 1)];
        assert_eq!(c.dirty_ratio, Some(0.25));
        assert_eq!(c.last_clean_age, Some(f64::INFINITY));
        assert_eq!(c.tier_dirty_ratio, Some(0.5));
        assert_eq!(c.tier_last_age, Some(12.5));
        assert_eq!(age_text(c.last_clean_age), "never");
        assert_eq!(age_text(c.tier_last_age), "12s ago");
        assert_eq!(age_text(None), "-");
        let mut merged = c;
        merged.merge(&CompactionScrape {
            dirty_ratio: Some(0.1),
            last_clean_age: Some(3.0),
            tier_dirty_ratio: None,
            tier_last_age: None,
        });
        assert_eq!(merged.dirty_ratio, Some(0.25));
        assert_eq!(merged.last_clean_age, Some(3.0));
        assert_eq!(merged.tier_last_age, Some(12.5));
    }

    #[test]
    fn the_estimate_carries_each_brokers_rate_over_a_month() {
        // One broker up a tenth of a month, one up a whole month.
        let a = (parse_scrape(TEXT), MONTH_SECS / 10.0);
        let b = (parse_scrape(TEXT), MONTH_SECS);
        let stored = BTreeMap::from([("orders".to_string(), 10.0 * GIB)]);
        let prices = Prices {
            transfer_out_per_gib: 0.09,
            ..Prices::default()
        };
        let rows = report(&[a, b], &stored, &prices);
        let o = rows.iter().find(|r| r.topic == "orders").unwrap();
        assert_eq!(o.usage.gets, 4000.0);
        assert!((o.monthly.gets - 2000.0 * 11.0).abs() < 1e-6);
        assert!((o.storage_per_month - 0.23).abs() < 1e-9);
        let requests = (10.0 * 11.0 * 0.005 + 2000.0 * 11.0 * 0.0004 + 4.0 * 11.0 * 0.005) / 1000.0
            + 2.0 * 11.0 * 0.09;
        assert!((o.requests_per_month - requests).abs() < 1e-9, "{o:?}");
        // A topic with requests but nothing stored, and the whole tier.
        assert!(rows
            .iter()
            .any(|r| r.topic.is_empty() && r.stored_bytes == 0.0));
    }

    #[test]
    fn a_price_table_overrides_the_defaults_and_names_a_bad_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.toml");
        std::fs::write(&path, "get_per_1000 = 0.001\n").unwrap();
        let p = Prices::load(&path).unwrap();
        assert_eq!(p.get_per_1000, 0.001);
        assert_eq!(p.put_per_1000, Prices::default().put_per_1000);
        std::fs::write(&path, "get_per_100 = 0.001\n").unwrap();
        let e = format!("{:#}", Prices::load(&path).unwrap_err());
        assert!(e.contains("get_per_100"), "{e}");
        std::fs::write(&path, "put_per_1000 = -1.0\n").unwrap();
        let e = format!("{:#}", Prices::load(&path).unwrap_err());
        assert!(e.contains("put_per_1000 must be"), "{e}");
    }
}
