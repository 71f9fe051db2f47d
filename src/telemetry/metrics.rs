//! Prometheus metrics, exported at `/metrics` on the admin listener.
//!
//! Overview: counters and histograms are updated on the request path
//! (per API and version, per topic); per-partition gauges (log start and end
//! offsets, partition counts) are refreshed from the broker's state at
//! scrape time, so a deleted partition's series disappears with it. The
//! exposition format is the `prometheus-client` crate's.
//!
//! Names are Kafka-like in meaning and stable: dashboards and alerts
//! (infra/) query them by name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiVersionLabels {
    pub api: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub api: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

pub(crate) fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<ApiVersionLabels, Counter>,
    pub request_errors: Family<ApiErrorLabels, Counter>,
    pub request_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    pub request_total: Family<ApiLabels, Histogram, fn() -> Histogram>,
    pub bytes_in: Family<TopicLabels, Counter>,
    pub bytes_out: Family<TopicLabels, Counter>,
    pub records_in: Family<TopicLabels, Counter>,
    pub records_out: Family<TopicLabels, Counter>,
    pub connections: Gauge,
    pub connections_refused: Counter,
    pub tls_handshake_failures: Counter,
    pub sasl_authentications: Counter,
    pub sasl_authentication_failures: Counter,
    pub authorization_failures: Counter,
    pub request_body_timeouts: Counter,
    pub request_bytes_in_flight: Gauge,
    pub fetch_zero_copy_bytes: Counter,
    pub partitions: Gauge,
    pub under_replicated: Gauge,
    pub under_min_isr: Gauge,
    pub offline_partitions: Gauge,
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    pub replica_max_lag: Gauge,
    pub metadata_applied_end: Gauge,
    pub metadata_replica_lag: Family<NodeLabels, Gauge>,
    pub log_end_offset: Family<PartitionLabels, Gauge>,
    pub log_start_offset: Family<PartitionLabels, Gauge>,
    pub log_size_bytes: Family<PartitionLabels, Gauge>,
    pub tier_copy_lag_bytes: Family<PartitionLabels, Gauge>,
    pub tier_copy_lag_segments: Family<PartitionLabels, Gauge>,
    pub tier_bytes: Family<PartitionLabels, Gauge>,
    pub tier_cache_size_bytes: Gauge,
    pub tier_passes: Counter,
    pub tier_scrub_damaged: Family<PartitionLabels, Gauge>,
    pub tier_view_age: Family<PartitionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub tier_available: Gauge,
    pub consumer_group_lag: Family<GroupPartitionLabels, Gauge>,
    pub cleaner_passes: Counter,
    pub cleaner_read_bytes: Counter,
    pub cleaner_written_bytes: Counter,
    pub cleaner_dirty_ratio: Family<PartitionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub cleaner_max_dirty_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub cleaner_last_clean_age: Family<PartitionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub tier_compaction_passes: Counter,
    pub table_export_segments: Counter,
    pub table_export_files: Counter,
    pub table_export_rows: Counter,
    pub table_export_bytes: Counter,
    pub table_export_errors: Counter,
    pub table_retention_removed_files: Counter,
    pub table_iceberg_commits: Counter,
    pub txn_commits: Counter,
    pub txn_aborts: Counter,
    pub txn_timed_out: Counter,
    pub txn_ongoing: Gauge,
    pub txn_coordinator_load_seconds: Histogram,
    pub table_export_lag_segments: Family<PartitionLabels, Gauge>,
    pub tier_compaction_read_bytes: Counter,
    pub tier_compaction_written_bytes: Counter,
    pub tier_compaction_dirty_ratio:
        Family<PartitionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub tier_compaction_last_age: Family<PartitionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    pub group: String,
    pub topic: String,
    pub partition: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            request_errors: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            request_total: Family::new_with_constructor(latency_histogram),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            records_in: Family::default(),
            records_out: Family::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            tls_handshake_failures: Counter::default(),
            sasl_authentications: Counter::default(),
            sasl_authentication_failures: Counter::default(),
            authorization_failures: Counter::default(),
            request_body_timeouts: Counter::default(),
            request_bytes_in_flight: Gauge::default(),
            fetch_zero_copy_bytes: Counter::default(),
            partitions: Gauge::default(),
            under_replicated: Gauge::default(),
            under_min_isr: Gauge::default(),
            offline_partitions: Gauge::default(),
            metadata_applied_end: Gauge::default(),
            metadata_replica_lag: Family::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            replica_max_lag: Gauge::default(),
            log_end_offset: Family::default(),
            log_start_offset: Family::default(),
            log_size_bytes: Family::default(),
            tier_copy_lag_bytes: Family::default(),
            tier_copy_lag_segments: Family::default(),
            tier_bytes: Family::default(),
            tier_cache_size_bytes: Gauge::default(),
            tier_passes: Counter::default(),
            tier_scrub_damaged: Family::default(),
            tier_view_age: Family::default(),
            tier_available: Gauge::default(),
            consumer_group_lag: Family::default(),
            cleaner_passes: Counter::default(),
            cleaner_read_bytes: Counter::default(),
            cleaner_written_bytes: Counter::default(),
            cleaner_dirty_ratio: Family::default(),
            cleaner_max_dirty_ratio: Gauge::default(),
            cleaner_last_clean_age: Family::default(),
            tier_compaction_passes: Counter::default(),
            table_export_segments: Counter::default(),
            table_export_files: Counter::default(),
            table_export_rows: Counter::default(),
            table_export_bytes: Counter::default(),
            table_export_errors: Counter::default(),
            table_retention_removed_files: Counter::default(),
            table_iceberg_commits: Counter::default(),
            txn_commits: Counter::default(),
            txn_aborts: Counter::default(),
            txn_timed_out: Counter::default(),
            txn_ongoing: Gauge::default(),
            txn_coordinator_load_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            table_export_lag_segments: Family::default(),
            tier_compaction_read_bytes: Counter::default(),
            tier_compaction_written_bytes: Counter::default(),
            tier_compaction_dirty_ratio: Family::default(),
            tier_compaction_last_age: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "strata_requests",
            "Kafka requests handled, by API and version",
            m.requests.clone(),
        );
        registry.register(
            "strata_request_errors",
            "Kafka error codes returned (per partition or request), by API and error",
            m.request_errors.clone(),
        );
        registry.register(
            "strata_request_duration_seconds",
            "Time from a request's decode to its response, by API",
            m.request_duration.clone(),
        );
        registry.register(
            "strata_request_total_seconds",
            "Time from reading a request's length prefix to writing its response to the socket, by API: the decode-to-response time plus reading the body and waiting behind earlier responses of the connection",
            m.request_total.clone(),
        );
        registry.register(
            "strata_topic_bytes_in",
            "Record batch bytes appended, by topic",
            m.bytes_in.clone(),
        );
        registry.register(
            "strata_topic_bytes_out",
            "Record batch bytes returned to fetches, by topic",
            m.bytes_out.clone(),
        );
        registry.register(
            "strata_topic_records_in",
            "Records appended, by topic",
            m.records_in.clone(),
        );
        registry.register(
            "strata_topic_records_out",
            "Records returned to fetches, by topic",
            m.records_out.clone(),
        );
        registry.register(
            "strata_connections",
            "Open Kafka client connections",
            m.connections.clone(),
        );
        registry.register(
            "strata_request_bytes_in_flight",
            "Bytes of requests read and not yet answered (bounded by queued.max.request.bytes)",
            m.request_bytes_in_flight.clone(),
        );
        registry.register(
            "strata_fetch_zero_copy_bytes",
            "Record bytes sent to fetches with sendfile(2), without copying",
            m.fetch_zero_copy_bytes.clone(),
        );
        let started = Gauge::<i64>::default();
        started.set(crate::clock::now_ms() / 1000);
        registry.register(
            "strata_start_time_seconds",
            "When this broker process started, in seconds since the Unix epoch (the window its counters cover)",
            started,
        );
        registry.register(
            "strata_partitions",
            "Partition replicas hosted by this broker",
            m.partitions.clone(),
        );
        registry.register(
            "strata_under_replicated_partitions",
            "Partitions led here whose in-sync replica set is smaller than the replica set",
            m.under_replicated.clone(),
        );
        registry.register(
            "strata_under_min_isr_partitions",
            "Partitions led here whose in-sync replica set is smaller than min.insync.replicas",
            m.under_min_isr.clone(),
        );
        registry.register(
            "strata_offline_partitions",
            "Partitions without a leader (reported by the active controller only)",
            m.offline_partitions.clone(),
        );
        registry.register(
            "strata_isr_shrinks",
            "Followers that left the in-sync replica set of a partition led here",
            m.isr_shrinks.clone(),
        );
        registry.register(
            "strata_isr_expands",
            "Followers that joined the in-sync replica set of a partition led here",
            m.isr_expands.clone(),
        );
        registry.register(
            "strata_replica_max_lag",
            "Largest number of offsets a partition this broker follows is behind its leader's high watermark, as of its last fetch",
            m.replica_max_lag.clone(),
        );
        registry.register(
            "strata_metadata_applied_end",
            "One past the last cluster metadata entry this node applied",
            m.metadata_applied_end.clone(),
        );
        registry.register(
            "strata_metadata_replica_lag_entries",
            "Metadata entries each voter and learner is behind the metadata leader's log end (reported by the metadata leader only)",
            m.metadata_replica_lag.clone(),
        );
        registry.register(
            "strata_partition_log_end_offset",
            "Log end offset, by partition",
            m.log_end_offset.clone(),
        );
        registry.register(
            "strata_partition_log_start_offset",
            "Log start offset, by partition",
            m.log_start_offset.clone(),
        );
        registry.register(
            "strata_partition_log_size_bytes",
            "Bytes of local log segments, by partition",
            m.log_size_bytes.clone(),
        );
        registry.register(
            "strata_tier_copy_lag_bytes",
            "Bytes of sealed local segments not yet in the tier, by partition",
            m.tier_copy_lag_bytes.clone(),
        );
        registry.register(
            "strata_log_cleaner_passes",
            "Log cleaner passes that replaced segments of a compacted partition",
            m.cleaner_passes.clone(),
        );
        registry.register(
            "strata_log_cleaner_read_bytes",
            "Bytes of log the cleaner read (building its key map and copying)",
            m.cleaner_read_bytes.clone(),
        );
        registry.register(
            "strata_log_cleaner_written_bytes",
            "Bytes of cleaned segments the cleaner wrote",
            m.cleaner_written_bytes.clone(),
        );
        registry.register(
            "strata_log_cleaner_dirty_ratio",
            "Dirty bytes over all cleanable bytes of each compacted partition (a pass is due at min.cleanable.dirty.ratio)",
            m.cleaner_dirty_ratio.clone(),
        );
        registry.register(
            "strata_log_cleaner_max_dirty_ratio",
            "The largest dirty ratio over this broker's compacted partitions",
            m.cleaner_max_dirty_ratio.clone(),
        );
        registry.register(
            "strata_log_cleaner_last_clean_age_seconds",
            "Seconds since the cleaner last replaced segments of each compacted partition (+Inf: not since the broker started)",
            m.cleaner_last_clean_age.clone(),
        );
        registry.register(
            "strata_table_export_segments",
            "Tiered segments written as Parquet table files (strata.table.enable)",
            m.table_export_segments.clone(),
        );
        registry.register(
            "strata_table_export_files",
            "Parquet table files put in the store",
            m.table_export_files.clone(),
        );
        registry.register(
            "strata_table_export_rows",
            "Records written as table rows",
            m.table_export_rows.clone(),
        );
        registry.register(
            "strata_table_export_bytes",
            "Bytes of Parquet table files put in the store",
            m.table_export_bytes.clone(),
        );
        registry.register(
            "strata_table_export_errors",
            "Table export passes that failed (retried at the next tier pass)",
            m.table_export_errors.clone(),
        );
        registry.register(
            "strata_table_retention_removed_files",
            "Table files removed by strata.table.retention.ms (or with the tier's retention)",
            m.table_retention_removed_files.clone(),
        );
        registry.register(
            "strata_table_iceberg_commits",
            "Snapshots committed to table topics' Iceberg metadata",
            m.table_iceberg_commits.clone(),
        );
        registry.register(
            "strata_txn_commits",
            "Transactions this broker's coordinator committed (markers written)",
            m.txn_commits.clone(),
        );
        registry.register(
            "strata_txn_aborts",
            "Transactions this broker's coordinator aborted (markers written), timeouts and fencing included",
            m.txn_aborts.clone(),
        );
        registry.register(
            "strata_txn_timed_out",
            "Transactions the coordinator aborted because they ran past transaction.timeout.ms",
            m.txn_timed_out.clone(),
        );
        registry.register(
            "strata_txn_ongoing",
            "Transactions open or being completed on this broker's coordinator",
            m.txn_ongoing.clone(),
        );
        registry.register(
            "strata_txn_coordinator_load_seconds",
            "Time to load a __transaction_state partition when this broker starts to lead it",
            m.txn_coordinator_load_seconds.clone(),
        );
        registry.register(
            "strata_table_export_lag_segments",
            "Segments in the tier that a table topic's leader has not written as Parquet yet, by partition",
            m.table_export_lag_segments.clone(),
        );
        registry.register(
            "strata_tier_compaction_passes",
            "Tier compaction passes that replaced segments of a compacted partition in the tier",
            m.tier_compaction_passes.clone(),
        );
        registry.register(
            "strata_tier_compaction_read_bytes",
            "Bytes tier compaction read from the tier and from its staged copies",
            m.tier_compaction_read_bytes.clone(),
        );
        registry.register(
            "strata_tier_compaction_written_bytes",
            "Bytes of compacted segments tier compaction uploaded",
            m.tier_compaction_written_bytes.clone(),
        );
        registry.register(
            "strata_tier_compaction_dirty_ratio",
            "Dirty bytes over all bytes of each compacted partition's tier, on its leader (a pass is due at min.cleanable.dirty.ratio)",
            m.tier_compaction_dirty_ratio.clone(),
        );
        registry.register(
            "strata_tier_compaction_last_age_seconds",
            "Seconds since tier compaction last replaced segments of each compacted partition's tier, on its leader (+Inf: never)",
            m.tier_compaction_last_age.clone(),
        );
        registry.register(
            "strata_tier_view_age_seconds",
            "Seconds since each tiered partition last took its tier manifest into account; for a read replica, since it last read the source cluster's manifest (what it serves may be this far behind the source's tier)",
            m.tier_view_age.clone(),
        );
        registry.register(
            "strata_tier_scrub_damaged_segments",
            "Tier segments the last scrub found damaged or missing and could not upload again from a local copy, by partition",
            m.tier_scrub_damaged.clone(),
        );
        registry.register(
            "strata_tier_copy_lag_segments",
            "Sealed local segments not yet in the tier, by partition",
            m.tier_copy_lag_segments.clone(),
        );
        registry.register(
            "strata_tier_partition_bytes",
            "Bytes of log data in the tier, by partition",
            m.tier_bytes.clone(),
        );
        registry.register(
            "strata_tier_cache_size_bytes",
            "Bytes held by the tier read cache (memory and disk)",
            m.tier_cache_size_bytes.clone(),
        );
        registry.register(
            "strata_connections_refused",
            "Kafka connections closed on accept by max-connections or max-connections-per-ip",
            m.connections_refused.clone(),
        );
        registry.register(
            "strata_tls_handshake_failures",
            "TLS connections closed because their handshake failed or did not finish in time",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "strata_sasl_authentications",
            "Successful SASL authentications (re-authentications included)",
            m.sasl_authentications.clone(),
        );
        registry.register(
            "strata_sasl_authentication_failures",
            "Failed SASL authentications; each closes its connection",
            m.sasl_authentication_failures.clone(),
        );
        registry.register(
            "strata_authorization_failures",
            "Operations the ACL authorizer refused (one per resource and operation checked)",
            m.authorization_failures.clone(),
        );
        registry.register(
            "strata_request_body_timeouts",
            "Connections closed because a request body did not arrive within request-body-timeout-ms",
            m.request_body_timeouts.clone(),
        );
        registry.register(
            "strata_tier_available",
            "1 while the object store answered the last probe, 0 while it is unusable",
            m.tier_available.clone(),
        );
        registry.register(
            "strata_tier_passes",
            "Passes of the tier loop over every partition (uploads offered, trims, retention)",
            m.tier_passes.clone(),
        );
        registry.register(
            "strata_consumer_group_lag",
            "High watermark minus the committed offset, by group and partition",
            m.consumer_group_lag.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Registers the counters of the broker's sync rounds, write-back and
    /// open segment files.
    pub fn register_storage(
        &mut self,
        sync: &crate::partition::durability::SyncMetrics,
        writeback: &crate::writeback::Writeback,
        files: &crate::log::files::OpenFiles,
    ) {
        self.registry.register(
            "strata_log_writeback_started_bytes",
            "Appended log bytes whose write-back to disk was started early (--log-writeback-bytes)",
            writeback.started_bytes().clone(),
        );
        self.registry.register(
            "strata_sync_round_duration_seconds",
            "Time each acks=all sync round (syncfs or fdatasync of its partitions) took",
            sync.round_seconds.clone(),
        );
        self.registry.register(
            "strata_sync_round_partitions",
            "Partitions synced by acks=all sync rounds, summed over rounds",
            sync.round_partitions.clone(),
        );
        self.registry.register(
            "strata_log_open_segment_files",
            "Segment files open now (at most --max-open-segment-files, besides reads in flight)",
            files.open_gauge().clone(),
        );
        self.registry.register(
            "strata_log_segment_file_opens",
            "Segment files opened: at a first use, or again after closing beyond the budget",
            files.opens_counter().clone(),
        );
    }

    /// Exports the tier's own counters (kept as atomics in the `tiering`
    /// crate) at every scrape.
    pub fn register_tier(
        &mut self,
        tier: std::sync::Arc<tiering::TierMetrics>,
        requests: std::sync::Arc<tiering::cost::StoreRequests>,
    ) {
        self.registry.register_collector(Box::new(TierCollector {
            metrics: tier,
            requests,
        }));
    }

    /// Counts one handled request.
    pub fn observe_request(&self, api: &str, version: i16, seconds: f64) {
        self.requests
            .get_or_create(&ApiVersionLabels {
                api: api.to_string(),
                version: version.to_string(),
            })
            .inc();
        self.request_duration
            .get_or_create(&ApiLabels {
                api: api.to_string(),
            })
            .observe(seconds);
    }

    /// Records a request's whole time in the broker, from its length prefix
    /// read to its response written (`api` as the raw key).
    pub fn observe_request_total(&self, api_key: i16, seconds: f64) {
        let api = match kafka_protocol::messages::ApiKey::try_from(api_key) {
            Ok(k) => format!("{k:?}"),
            Err(()) => api_key.to_string(),
        };
        self.request_total
            .get_or_create(&ApiLabels { api })
            .observe(seconds);
    }

    /// Counts one error code returned by `api`.
    pub fn observe_error(&self, api: &str, error: &str) {
        self.request_errors
            .get_or_create(&ApiErrorLabels {
                api: api.to_string(),
                error: error.to_string(),
            })
            .inc();
    }

    pub fn topic_in(&self, topic: &str, bytes: u64, records: u64) {
        let l = TopicLabels {
            topic: topic.to_string(),
        };
        self.bytes_in.get_or_create(&l).inc_by(bytes);
        self.records_in.get_or_create(&l).inc_by(records);
    }

    pub fn topic_out(&self, topic: &str, bytes: u64, records: u64) {
        let l = TopicLabels {
            topic: topic.to_string(),
        };
        self.bytes_out.get_or_create(&l).inc_by(bytes);
        self.records_out.get_or_create(&l).inc_by(records);
    }

    /// Text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

#[derive(Debug)]
struct TierCollector {
    metrics: std::sync::Arc<tiering::TierMetrics>,
    requests: std::sync::Arc<tiering::cost::StoreRequests>,
}

impl TierCollector {
    fn counter(
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: u64,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let c = prometheus_client::metrics::counter::ConstCounter::new(value);
        let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(m)
    }

    fn gauge(
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: u64,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let g = prometheus_client::metrics::gauge::ConstGauge::new(value as i64);
        let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
        g.encode(m)
    }

    /// A counter family with one series per `(labels, value)`.
    fn counters<const N: usize>(
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        series: &[([(&'static str, String); N], u64)],
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let mut family = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, value) in series {
            let c = prometheus_client::metrics::counter::ConstCounter::new(*value);
            c.encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn histogram(
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        per_op: &[(&str, &tiering::metrics::LatencyHistogram)],
    ) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut family = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for (op, h) in per_op {
            let mut buckets: Vec<(f64, u64)> = tiering::metrics::LATENCY_BUCKETS
                .iter()
                .zip(h.buckets.iter())
                .map(|(b, c)| (*b, c.load(Relaxed)))
                .collect();
            buckets.push((f64::MAX, h.buckets[buckets.len()].load(Relaxed)));
            let labels = [("op", op.to_string())];
            let e = family.encode_family(&labels)?;
            let mut e = e;
            e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum_micros.load(Relaxed) as f64 / 1e6,
                h.count.load(Relaxed),
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

impl prometheus_client::collector::Collector for TierCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.metrics;
        for (name, help, v) in [
            (
                "strata_tier_bytes_uploaded",
                "Bytes written to the object store",
                &m.bytes_uploaded,
            ),
            (
                "strata_tier_bytes_downloaded",
                "Bytes read from the object store",
                &m.bytes_downloaded,
            ),
            (
                "strata_tier_segments_uploaded",
                "Segments added to a manifest",
                &m.segments_uploaded,
            ),
            (
                "strata_tier_upload_errors",
                "Upload attempts that failed",
                &m.upload_errors,
            ),
            (
                "strata_tier_read_errors",
                "Remote reads that failed",
                &m.read_errors,
            ),
            (
                "strata_tier_cache_hits",
                "Tier read-cache lookups served from memory",
                &m.cache_hits,
            ),
            (
                "strata_tier_cache_misses",
                "Tier read-cache lookups that had to fill",
                &m.cache_misses,
            ),
            (
                "strata_tier_disk_cache_hits",
                "Tier read-cache misses in memory served from the disk cache",
                &m.disk_cache_hits,
            ),
            (
                "strata_tier_cache_evictions",
                "Chunks evicted from the memory cache",
                &m.cache_evictions,
            ),
            (
                "strata_tier_crc_mismatches",
                "Checksum failures on data read from the tier",
                &m.crc_mismatches,
            ),
            (
                "strata_tier_store_errors",
                "Object-store request errors",
                &m.store_errors,
            ),
            (
                "strata_tier_segments_refused",
                "Local segments refused for upload because a batch failed its checks",
                &m.segments_refused,
            ),
            (
                "strata_tier_scrub_segments",
                "Tier segments read back and checked by scrubs",
                &m.scrub_segments,
            ),
            (
                "strata_tier_scrub_bytes",
                "Bytes read back from the object store by scrubs",
                &m.scrub_bytes,
            ),
            (
                "strata_tier_scrub_problems",
                "Damaged or missing tier objects found by scrubs (each pass counts what it finds)",
                &m.scrub_problems,
            ),
            (
                "strata_tier_scrub_reuploads",
                "Damaged tier segments uploaded again from a local copy",
                &m.scrub_reuploads,
            ),
            (
                "strata_tier_manifest_conflicts",
                "Tier manifest writes that found the manifest changed since it was read, and read it again",
                &m.manifest_conflicts,
            ),
            (
                "strata_tier_not_owner_writes",
                "Tier manifest writes refused because another cluster took the partition over",
                &m.not_owner_writes,
            ),
        ] {
            Self::counter(&mut encoder, name, help, v.load(Relaxed))?;
        }
        for (name, help, v) in [
            (
                "strata_tier_manifests_missing",
                "Partitions whose tier manifest is missing although they have tiered data (no upload, trim or orphan collection; strata tier repair)",
                &m.manifests_missing,
            ),
            (
                "strata_tier_manifests_unreadable",
                "Partitions whose tier manifest is damaged or of an unknown version",
                &m.manifests_unreadable,
            ),
        ] {
            Self::gauge(&mut encoder, name, help, v.load(Relaxed))?;
        }
        let by_topic = self.requests.by_topic();
        let mut requests = Vec::new();
        let mut bytes = Vec::new();
        for (topic, t) in &by_topic {
            for (op, n) in [
                ("put", t.puts),
                ("get", t.gets),
                ("list", t.lists),
                ("delete", t.deletes),
            ] {
                requests.push(([("topic", topic.clone()), ("op", op.to_string())], n));
            }
            for (direction, n) in [("put", t.bytes_put), ("get", t.bytes_got)] {
                bytes.push((
                    [
                        ("topic", topic.clone()),
                        ("direction", direction.to_string()),
                    ],
                    n,
                ));
            }
        }
        Self::counters(
            &mut encoder,
            "strata_tier_requests",
            "Object-store requests by topic and billing class (put, get, list, delete); topic \"\" for listings of the whole tier",
            &requests,
        )?;
        Self::counters(
            &mut encoder,
            "strata_tier_request_bytes",
            "Bytes sent to (put) and returned by (get) the object store, by topic",
            &bytes,
        )?;
        Self::histogram(
            &mut encoder,
            "strata_tier_request_duration_seconds",
            "Object-store request latency, by operation",
            &[("get", &m.get_latency), ("put", &m.put_latency)],
        )
    }
}

/// Counts the records in a run of whole record batches by reading their
/// headers (no per-record work).
pub fn count_records(batches: &[u8]) -> u64 {
    let mut pos = 0usize;
    let mut n = 0u64;
    while pos + 61 <= batches.len() {
        let len = i32::from_be_bytes([
            batches[pos + 8],
            batches[pos + 9],
            batches[pos + 10],
            batches[pos + 11],
        ]);
        if len < 49 {
            break;
        }
        let count = i32::from_be_bytes([
            batches[pos + 57],
            batches[pos + 58],
            batches[pos + 59],
            batches[pos + 60],
        ]);
        n += count.max(0) as u64;
        pos += 12 + len as usize;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let mut m = Metrics::new();
        m.register_storage(
            &crate::partition::durability::SyncMetrics::new(latency_histogram()),
            &crate::writeback::Writeback::new(1 << 20),
            &crate::log::files::OpenFiles::default(),
        );
        m.observe_request("Produce", 9, 0.001);
        m.observe_error("Produce", "CorruptMessage");
        m.topic_in("t", 100, 3);
        m.topic_out("t", 50, 2);
        let text = m.encode();
        for name in [
            "strata_requests_total{api=\"Produce\",version=\"9\"} 1",
            "strata_request_errors_total{api=\"Produce\",error=\"CorruptMessage\"} 1",
            "strata_request_duration_seconds_bucket",
            "strata_topic_bytes_in_total{topic=\"t\"} 100",
            "strata_topic_records_in_total{topic=\"t\"} 3",
            "strata_topic_bytes_out_total{topic=\"t\"} 50",
            "strata_topic_records_out_total{topic=\"t\"} 2",
            "strata_connections",
            "strata_request_bytes_in_flight",
            "strata_sync_round_duration_seconds_bucket",
            "strata_sync_round_partitions_total",
            "strata_log_writeback_started_bytes_total",
            "strata_log_open_segment_files",
            "strata_log_segment_file_opens_total",
            "strata_partitions",
            "strata_under_replicated_partitions",
            "strata_under_min_isr_partitions",
            "strata_offline_partitions",
            "strata_isr_shrinks_total",
            "strata_isr_expands_total",
            "strata_replica_max_lag",
            "strata_metadata_applied_end",
            "strata_start_time_seconds",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn record_counting_reads_headers_only() {
        let b1 = crate::log::batch::build_batch(&[(None, Some(b"a"), 1), (None, Some(b"b"), 2)]);
        let b2 = crate::log::batch::build_batch(&[(None, Some(b"c"), 3)]);
        let mut all = b1.clone();
        all.extend_from_slice(&b2);
        assert_eq!(count_records(&all), 3);
        assert_eq!(count_records(&all[..b1.len() + 10]), 2);
        assert_eq!(count_records(&[]), 0);
    }
}
