//! The broker side of tiering: offering sealed segments for upload, local
//! retention after upload, and retention in the tier.
//!
//! Overview: every `tier-interval-ms`, for each local partition of a topic
//! with `remote.storage.enable`: reload the tier's offsets from its
//! manifest, offer every sealed segment above the last uploaded offset and
//! below the high watermark, with its producer snapshot and leader epochs,
//! to the [`tiering::Uploader`] (which bounds
//! concurrency and bandwidth and retries), delete local segments that are in
//! the tier and beyond `local.retention.*`, and apply `retention.*` to the
//! tier (manifest first, then objects).
//!
//! Consistency: only committed data (below the high watermark) leaves the
//! broker; a local segment is deleted only once the manifest names it.
//!
//! Crash safety: uploads that did not reach the manifest are invisible and
//! offered again on the next pass (their objects become orphans, collected
//! after a grace period). Produce never waits on any of this.
//!
//! Cancellation: the loop stops with the shutdown token; the uploader is
//! drained with a deadline by `run`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tiering::{RetentionPolicy, TierError, Uploader};
use tokio_util::sync::CancellationToken;

use super::{now_ms, Broker};
use crate::partition::Partition;

/// Retriable failures of tier passes (an object store outage fails every
/// partition's pass): one line per 30 s, with the count suppressed.
static RETRY_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();
const RETRY_LOG_EVERY_MS: u64 = 30_000;

/// Orphan collection runs on the first pass and every this many passes.
const ORPHAN_EVERY: u64 = 120;

/// Runs the tier loop until `shutdown`.
pub async fn run(broker: Arc<Broker>, uploader: Uploader, shutdown: CancellationToken) {
    let every = Duration::from_millis(broker.config.tier.interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = Duration::from_millis(broker.config.tier.orphan_grace_ms);
    let mut pass: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let collect_orphans = pass % ORPHAN_EVERY == 0;
        pass += 1;
        let partitions = broker.all_partitions();
        reread_manifests(&partitions, &shutdown).await;
        for p in partitions {
            if shutdown.is_cancelled() {
                return;
            }
            let tended = tend(&p, &uploader, collect_orphans.then_some(grace)).await;
            let tended = match tended {
                Ok(()) => publish_topic_meta(&broker, &p).await,
                e => e,
            };
            if let Err(e) = tended {
                let error = tiering::error_chain(&e);
                if e.is_manifest_unusable() || e.is_not_owner() {
                    // The tier logged it at ERROR when it became so; once.
                    tracing::debug!(partition = %p.name(), %error, "tier pass skipped: manifest unusable or not ours");
                } else if e.is_retriable() {
                    if let Some(suppressed) = RETRY_LOG.allow(RETRY_LOG_EVERY_MS) {
                        tracing::warn!(partition = %p.name(), %error, suppressed, "tier pass failed; retrying next pass");
                    }
                } else {
                    tracing::warn!(partition = %p.name(), %error, "tier pass failed");
                }
            }
        }
        broker.metrics.tier_passes.inc();
    }
}

/// Reads from the store, several at once, the manifests a pass must not
/// take from the cache ([`Partition::tier_pass_rereads`]): after a
/// leadership change they are many (every partition a stopped broker led),
/// and one after the other they would hold up the pass. A read that fails
/// is tried again, and reported, by the partition's own pass.
async fn reread_manifests(partitions: &[Arc<Partition>], shutdown: &CancellationToken) {
    let stale: Vec<Arc<Partition>> = partitions
        .iter()
        .filter(|p| p.tier_pass_rereads(&p.config().tier))
        .cloned()
        .collect();
    if stale.is_empty() {
        return;
    }
    let reads = futures::stream::iter(stale)
        .map(|p: Arc<Partition>| async move {
            if let Err(e) = p.reread_tier().await {
                tracing::debug!(partition = %p.name(), error = %e, "manifest read failed; the pass tries again");
            }
        })
        .buffer_unordered(crate::broker::TIER_REFRESH_CONCURRENCY)
        .count();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = reads => {}
    }
}

/// Errors of one pass over one partition.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Partition(#[from] crate::partition::PartitionError),
    #[error(transparent)]
    Tier(#[from] TierError),
}

impl PassError {
    fn tier(&self) -> Option<&TierError> {
        match self {
            PassError::Tier(e) => Some(e),
            PassError::Partition(crate::partition::PartitionError::Tier { source, .. }) => {
                Some(source)
            }
            PassError::Partition(_) => None,
        }
    }

    fn is_manifest_unusable(&self) -> bool {
        self.tier().is_some_and(TierError::is_manifest_unusable)
    }

    fn is_retriable(&self) -> bool {
        self.tier().is_some_and(TierError::is_retriable)
    }

    fn is_not_owner(&self) -> bool {
        self.tier().is_some_and(TierError::is_not_owner)
    }
}

async fn tend(
    p: &Partition,
    uploader: &Uploader,
    collect_orphans: Option<Duration>,
) -> Result<(), PassError> {
    let config = p.config();
    let Some(remote) = p.remote() else {
        return Ok(());
    };
    if !config.tier.enabled {
        return Ok(());
    }
    if p.tier_pass_rereads(&config.tier) {
        p.reread_tier().await?;
    } else {
        p.refresh_tier().await?;
    }
    if config.tier.read_replica {
        // Another cluster writes this tier; a read replica only follows it.
        return Ok(());
    }
    // Another cluster took the partition over: it writes the tier now, and
    // this broker keeps its local data whole (none of it counts as tiered).
    remote.check_owner().await?;
    if !p.is_leader() {
        // Only the leader uploads, trims the tier and collects orphans; a
        // follower drops local segments the manifest covers (read again
        // above when the leader's fetch answers tell of a newer one).
        p.apply_local_retention(now_ms())?;
        return Ok(());
    }
    let uploaded = p.tier_last_offset().unwrap_or(-1);
    // Below the last stable offset, as Kafka's tiered storage: a tiered
    // segment holds no transaction still undecided.
    let hwm = p.last_stable_offset();
    let sealed = p.sealed_segments();
    // A segment refused as damaged stops uploads at it while the local log
    // still holds it (DeleteRecords past it drops it, and uploads go on).
    let refused = match remote.refused_segment() {
        Some((base, _)) if sealed.iter().any(|s| s.base_offset == base) => Some(base),
        Some(_) => {
            remote.clear_refused();
            None
        }
        None => None,
    };
    for seg in sealed {
        let last = seg.next_offset - 1;
        if last <= uploaded {
            continue;
        }
        if seg.next_offset > hwm || refused.is_some_and(|r| seg.base_offset >= r) {
            break;
        }
        let upload = p.segment_upload(&seg)?;
        match uploader.try_enqueue(remote, upload) {
            Ok(_ticket) => {
                tracing::debug!(partition = %p.name(), base_offset = seg.base_offset, "segment queued for upload");
            }
            Err(TierError::AlreadyQueued { .. }) => {}
            Err(TierError::QueueFull { .. }) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let now = now_ms();
    let deleted = p.apply_local_retention(now)?;
    if deleted > 0 {
        tracing::debug!(partition = %p.name(), segments = deleted, "local segments deleted after upload");
    }
    if config.tier.retention_ms.is_some() || config.tier.retention_bytes.is_some() {
        let tiered_to = p.tier_last_offset().unwrap_or(-1);
        // Local bytes not in the tier: all of it but the tiered sealed segments.
        let tiered_locally: u64 = p
            .sealed_segments()
            .iter()
            .filter(|s| s.next_offset - 1 <= tiered_to)
            .map(|s| s.size)
            .sum();
        let local_only_bytes = p.size_bytes().saturating_sub(tiered_locally);
        let outcome = remote
            .apply_retention(
                RetentionPolicy {
                    retention_ms: config.tier.retention_ms.unwrap_or(-1),
                    retention_bytes: config.tier.retention_bytes.unwrap_or(-1),
                    local_only_bytes,
                },
                now,
                p.leader_epoch(),
            )
            .await?;
        if outcome.segments_removed > 0 {
            tracing::info!(
                partition = %p.name(),
                segments = outcome.segments_removed,
                bytes = outcome.bytes_removed,
                log_start_offset = ?outcome.log_start_offset,
                "tier retention deleted segments"
            );
            p.refresh_tier().await?;
        }
    }
    if let Some(grace) = collect_orphans {
        let report = remote.collect_orphans(grace, now).await?;
        tracing::debug!(partition = %p.name(), report = ?report, "orphan collection");
    }
    Ok(())
}

/// Topic configs that describe where a topic's tier is, not the topic:
/// a restore sets them itself.
const NOT_RESTORED: [&str; 3] = [
    crate::config::TIER_CLUSTER_ID_CONFIG,
    crate::config::TAKEOVER_CONFIG,
    crate::config::RESTORE_CONFIG,
];

/// On the leader of a tiered topic's partition 0, keeps the topic's
/// `topic.json` in the tier (partition count and configs; see
/// `tiering::TopicMeta`) up to date, so that a restore brings them back.
async fn publish_topic_meta(broker: &Broker, p: &Partition) -> Result<(), PassError> {
    if p.index != 0 || !p.is_leader() || !p.config().tier.writes() {
        return Ok(());
    }
    let Some(remote) = p.remote() else {
        return Ok(());
    };
    let Some(topic) = broker.view().topic(&p.topic).cloned() else {
        return Ok(());
    };
    let configs = topic
        .configs
        .into_iter()
        .filter(|(k, _)| !NOT_RESTORED.contains(&k.as_str()))
        .collect();
    let partitions = topic.partitions.len() as i32;
    if remote.publish_topic_meta(partitions, configs).await? {
        tracing::debug!(partition = %p.name(), partitions, "topic configs written to the tier");
    }
    Ok(())
}

/// A clean shutdown's last tier pass, once no request is served: every
/// partition this broker leads with tiering on seals its active segment
/// (with its producer snapshot) and offers all the tier lacks, pass after
/// pass, until the tier holds each one's log up to its high watermark or
/// `timeout` passes; then the uploader drains for what is left of it. A
/// cluster stopped cleanly can so be restored with nothing missing. What
/// is not uploaded in time stays local and goes at the next start.
pub async fn upload_on_shutdown(broker: &Broker, uploader: &Uploader, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let led: Vec<Arc<Partition>> = broker
        .all_partitions()
        .into_iter()
        .filter(|p| p.is_leader() && p.remote().is_some() && p.config().tier.writes())
        .collect();
    // Sealing waits for fsyncs: several partitions at once.
    let sealed = futures::stream::iter(led.iter().cloned())
        .map(|p| async move {
            if let Err(e) = publish_topic_meta(broker, &p).await {
                tracing::warn!(partition = %p.name(), error = %e, "cannot write the topic's configs to the tier at shutdown");
            }
            let sealing = Arc::clone(&p);
            match tokio::task::spawn_blocking(move || sealing.seal_active()).await {
                Ok(Ok(sealed)) => sealed,
                Ok(Err(e)) => {
                    tracing::warn!(partition = %p.name(), error = %e, "cannot seal the active segment for the shutdown upload");
                    false
                }
                Err(e) => {
                    tracing::warn!(partition = %p.name(), error = %e, "sealing the active segment for the shutdown upload failed");
                    false
                }
            }
        })
        .buffer_unordered(crate::broker::PARALLEL_OPENS)
        .filter(|sealed| std::future::ready(*sealed))
        .count()
        .await;
    // Whether the tier lacks no sealed segment of `p` below its last
    // stable offset.
    let whole = |p: &Partition| {
        let (tiered, hwm) = (p.tier_last_offset().unwrap_or(-1), p.last_stable_offset());
        !p.sealed_segments()
            .iter()
            .any(|s| s.next_offset - 1 > tiered && s.next_offset <= hwm)
    };
    let mut left: Vec<&Arc<Partition>> = led.iter().filter(|p| !whole(p)).collect();
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        for p in &left {
            if let Err(e) = tend(p, uploader, None).await {
                tracing::debug!(partition = %p.name(), error = %tiering::error_chain(&e), "shutdown tier pass failed; retrying");
            }
        }
        left.retain(|p| !whole(p));
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if left.is_empty() {
        tracing::info!(
            partitions = led.len(),
            sealed,
            "the tier holds every led partition's log"
        );
    } else {
        let names: Vec<String> = left.iter().take(10).map(|p| p.name()).collect();
        tracing::warn!(
            left = left.len(),
            partitions = ?names,
            timeout_ms = timeout.as_millis() as u64,
            "shutdown upload timed out; the rest is uploaded at the next start"
        );
    }
    uploader
        .shutdown(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
}
