//! The background tier scrub: every `--tier-scrub-interval-ms`, the
//! leader of each tiered partition reads back every object its manifest
//! names and checks it ([`tiering::RemotePartition::scrub`]), at most
//! `--tier-scrub-bytes-per-sec` for the whole broker.
//!
//! A damaged or missing segment object is logged (ERROR, by the tier),
//! counted (`strata_tier_scrub_problems_total`) and shown per partition
//! (`strata_tier_scrub_damaged_segments`); reads of its offsets keep
//! answering an error, never the damaged bytes. Where the local log still
//! holds the segment (same base and last offset), it is uploaded again
//! under new names and the manifest's entry swapped with the same fenced,
//! conditional write as any upload; the damaged objects are left to orphan
//! collection.
//!
//! Failure cases: a store that fails or is slow ends the partition's pass
//! with a warning (the next pass tries again: a failing store is not
//! damage); a leadership that moves during the pass fences the re-upload
//! (the new leader scrubs on its own schedule); a shutdown cancels the
//! pass between reads. The first pass runs one interval after start, so a
//! restart does not read the whole tier again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::partition::Partition;

/// The background passes until `cancel`.
pub async fn run(broker: Arc<Broker>, cancel: CancellationToken) {
    let tier = &broker.config.tier;
    if tier.scrub_interval_ms == 0 {
        return;
    }
    let limiter = tiering::RateLimiter::new(tier.scrub_bytes_per_sec);
    let interval = Duration::from_millis(tier.scrub_interval_ms);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        for p in broker.all_partitions() {
            if cancel.is_cancelled() {
                return;
            }
            if !p.is_leader() || !p.config().tier.writes() {
                continue;
            }
            if let Err(e) = scrub_partition(&p, &limiter, &cancel).await {
                if !e.is_cancelled() {
                    tracing::warn!(partition = %p.name(), error = %tiering::error_chain(&e), "tier scrub stopped; the next pass tries again");
                }
            }
        }
    }
}

/// Scrubs one partition and uploads again each damaged segment its local
/// log still holds. Returns how many damaged segments are left.
pub async fn scrub_partition(
    p: &Partition,
    limiter: &tiering::RateLimiter,
    cancel: &CancellationToken,
) -> Result<usize, tiering::TierError> {
    let Some(remote) = p.remote() else {
        return Ok(0);
    };
    let report = remote.scrub(limiter, cancel).await?;
    let mut damaged: Vec<(i64, i64)> = report
        .problems
        .iter()
        .map(|x| (x.base_offset, x.last_offset))
        .collect();
    damaged.dedup();
    let sealed = p.sealed_segments();
    let mut left = 0;
    for (base, last) in damaged {
        let local = sealed
            .iter()
            .find(|s| s.base_offset == base && s.next_offset - 1 == last);
        let Some(seg) = local else {
            tracing::error!(partition = %p.name(), base_offset = base, last_offset = last, "damaged tier segment has no local copy left: fetches of these offsets fail until DeleteRecords moves the log start past them");
            left += 1;
            continue;
        };
        let upload = match p.segment_upload(seg) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(partition = %p.name(), base_offset = base, error = %e, "cannot describe the local copy of a damaged tier segment");
                left += 1;
                continue;
            }
        };
        match remote.reupload_segment(&upload, cancel, limiter).await {
            Ok(tiering::UploadOutcome::Uploaded(_)) => {}
            // Retention removed it from the manifest meanwhile.
            Ok(tiering::UploadOutcome::AlreadyCovered) => {}
            Err(e) => {
                tracing::warn!(partition = %p.name(), base_offset = base, error = %tiering::error_chain(&e), "re-upload of a damaged tier segment failed; the next pass tries again");
                left += 1;
            }
        }
    }
    p.set_tier_scrub_damaged(left as i64);
    Ok(left)
}
