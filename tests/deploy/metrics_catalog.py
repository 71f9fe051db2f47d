"""The metrics Strata's /metrics exports (names and labels as agreed with
the telemetry work), and helpers to find what a PromQL expression uses.

The live test (test_metrics_live.py) checks the dashboards against the real
exporter; this catalog lets the static tests check names and labels without
a broker."""

from __future__ import annotations

import re

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

# name -> (type, labels)
CATALOG: dict[str, tuple[str, frozenset[str]]] = {
    "strata_requests_total": (COUNTER, frozenset({"api", "version"})),
    "strata_request_errors_total": (COUNTER, frozenset({"api", "error"})),
    "strata_request_duration_seconds": (HISTOGRAM, frozenset({"api"})),
    "strata_request_total_seconds": (HISTOGRAM, frozenset({"api"})),
    "strata_topic_bytes_in_total": (COUNTER, frozenset({"topic"})),
    "strata_topic_bytes_out_total": (COUNTER, frozenset({"topic"})),
    "strata_topic_records_in_total": (COUNTER, frozenset({"topic"})),
    "strata_topic_records_out_total": (COUNTER, frozenset({"topic"})),
    "strata_partitions": (GAUGE, frozenset()),
    "strata_under_replicated_partitions": (GAUGE, frozenset()),
    "strata_under_min_isr_partitions": (GAUGE, frozenset()),
    "strata_offline_partitions": (GAUGE, frozenset()),
    "strata_isr_shrinks_total": (COUNTER, frozenset()),
    "strata_isr_expands_total": (COUNTER, frozenset()),
    "strata_replica_max_lag": (GAUGE, frozenset()),
    "strata_metadata_applied_end": (GAUGE, frozenset()),
    "strata_metadata_replica_lag_entries": (GAUGE, frozenset({"node"})),
    "strata_partition_log_end_offset": (GAUGE, frozenset({"topic", "partition"})),
    "strata_partition_log_start_offset": (GAUGE, frozenset({"topic", "partition"})),
    "strata_consumer_group_lag": (GAUGE, frozenset({"group", "topic", "partition"})),
    "strata_connections": (GAUGE, frozenset()),
    "strata_sasl_authentications_total": (COUNTER, frozenset()),
    "strata_sasl_authentication_failures_total": (COUNTER, frozenset()),
    "strata_authorization_failures_total": (COUNTER, frozenset()),
    "strata_tls_handshake_failures_total": (COUNTER, frozenset()),
    "strata_tier_copy_lag_bytes": (GAUGE, frozenset({"topic", "partition"})),
    "strata_tier_copy_lag_segments": (GAUGE, frozenset({"topic", "partition"})),
    "strata_tier_bytes_uploaded_total": (COUNTER, frozenset()),
    "strata_tier_bytes_downloaded_total": (COUNTER, frozenset()),
    "strata_tier_upload_errors_total": (COUNTER, frozenset()),
    "strata_tier_read_errors_total": (COUNTER, frozenset()),
    "strata_tier_manifest_conflicts_total": (COUNTER, frozenset()),
    "strata_tier_cache_hits_total": (COUNTER, frozenset()),
    "strata_tier_cache_misses_total": (COUNTER, frozenset()),
    "strata_tier_cache_evictions_total": (COUNTER, frozenset()),
    "strata_tier_cache_size_bytes": (GAUGE, frozenset()),
    "strata_tier_request_duration_seconds": (HISTOGRAM, frozenset({"op"})),
    "strata_tier_requests_total": (COUNTER, frozenset({"topic", "op"})),
    "strata_tier_request_bytes_total": (COUNTER, frozenset({"topic", "direction"})),
    "strata_start_time_seconds": (GAUGE, frozenset()),
    "strata_tier_scrub_bytes_total": (COUNTER, frozenset()),
    "strata_tier_scrub_problems_total": (COUNTER, frozenset()),
    "strata_tier_scrub_reuploads_total": (COUNTER, frozenset()),
    "strata_tier_scrub_damaged_segments": (GAUGE, frozenset({"topic", "partition"})),
    "strata_tier_view_age_seconds": (GAUGE, frozenset({"topic", "partition"})),
    "strata_log_open_segment_files": (GAUGE, frozenset()),
    "strata_log_segment_file_opens_total": (COUNTER, frozenset()),
    "strata_log_cleaner_passes_total": (COUNTER, frozenset()),
    "strata_log_cleaner_read_bytes_total": (COUNTER, frozenset()),
    "strata_log_cleaner_written_bytes_total": (COUNTER, frozenset()),
    "strata_log_cleaner_dirty_ratio": (GAUGE, frozenset({"topic", "partition"})),
    "strata_log_cleaner_max_dirty_ratio": (GAUGE, frozenset()),
    "strata_log_cleaner_last_clean_age_seconds": (GAUGE, frozenset({"topic", "partition"})),
    "strata_tier_compaction_passes_total": (COUNTER, frozenset()),
    "strata_table_export_segments_total": (COUNTER, frozenset()),
    "strata_table_export_files_total": (COUNTER, frozenset()),
    "strata_table_export_rows_total": (COUNTER, frozenset()),
    "strata_table_export_bytes_total": (COUNTER, frozenset()),
    "strata_table_export_errors_total": (COUNTER, frozenset()),
    "strata_table_retention_removed_files_total": (COUNTER, frozenset()),
    "strata_table_iceberg_commits_total": (COUNTER, frozenset()),
    "strata_txn_commits_total": (COUNTER, frozenset()),
    "strata_txn_aborts_total": (COUNTER, frozenset()),
    "strata_txn_timed_out_total": (COUNTER, frozenset()),
    "strata_txn_ongoing": (GAUGE, frozenset()),
    "strata_txn_coordinator_load_seconds": (HISTOGRAM, frozenset()),
    "strata_table_export_lag_segments": (GAUGE, frozenset({"topic", "partition"})),
    "strata_tier_compaction_read_bytes_total": (COUNTER, frozenset()),
    "strata_tier_compaction_written_bytes_total": (COUNTER, frozenset()),
    "strata_tier_compaction_dirty_ratio": (GAUGE, frozenset({"topic", "partition"})),
    "strata_tier_compaction_last_age_seconds": (GAUGE, frozenset({"topic", "partition"})),
}

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"instance", "job"})

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names() -> dict[str, str]:
    """Every series name a query may use -> its catalog family."""
    names = {}
    for family, (kind, _) in CATALOG.items():
        if kind == HISTOGRAM:
            for suffix in HISTOGRAM_SUFFIXES:
                names[family + suffix] = family
        else:
            names[family] = family
    return names


METRIC_RE = re.compile(r"\bstrata_[a-z0-9_]+\b")
GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER_RE = re.compile(r"\{([^}]*)\}")
LABEL_IN_MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def metrics_in(expr: str) -> set[str]:
    return set(METRIC_RE.findall(expr))


def labels_in(expr: str) -> set[str]:
    """Label names an expression groups by or matches on. Template strings
    such as {{topic}} in legends are not part of the expression."""
    labels = set()
    for group in GROUPING_RE.findall(expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    for matcher in MATCHER_RE.findall(expr):
        labels |= set(LABEL_IN_MATCHER_RE.findall(matcher))
    return labels


def label_values_query(query: str) -> tuple[str, str] | None:
    """label_values(metric, label) of a Grafana template variable."""
    m = re.fullmatch(r"\s*label_values\(\s*([a-z0-9_]+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query)
    return (m.group(1), m.group(2)) if m else None
