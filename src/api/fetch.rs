//! Fetch: whole batches up to the high watermark, from the local log or
//! the tier.
//!
//! Plan: each partition is read in request order within the fetch's byte
//! budget ([`Partition::read`]); an offset below the local log answers
//! [`ReadData::InTier`] and becomes a tier read with its share of the
//! budget set aside, run concurrently after the local pass.
//!
//! A fetch long-polls: when fewer than `min_bytes` are available it waits,
//! woken by a high-watermark change of any partition it asked for (not by
//! sleeping), until `max_wait_ms` runs out. The first partition with data
//! always gets at least one whole batch even above the byte limits (KIP-74).
//! Fetch sessions (KIP-227) are not kept: every response carries session id
//! 0, which tells clients to send full fetch requests.
//!
//! Local data is not read into memory when zero-copy is on (the default):
//! each partition's batches are a file range, sent by the connection with
//! sendfile(2) behind a placeholder in the response (`zerocopy`). Data from
//! the tier goes the same way when its chunks are in the tier's disk cache
//! (a placeholder then stands for several parts: file ranges, and bytes of
//! chunks that are in memory); otherwise it is bytes.

use crate::security::acl::{Operation, ResourceType};
use crate::security::Caller;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::sync::watch;
use uuid::Uuid;

use super::error::{leader_epoch_error, partition_error_code, Code};
use super::FileRanges;
use crate::broker::Broker;
use crate::partition::{Partition, ReadData, ReadMode};
use crate::telemetry::metrics::count_records;
use crate::zerocopy::{self, parts_len, Part};

const READ_COMMITTED: i8 = 1;

struct Target {
    topic_idx: usize,
    index: i32,
    offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
    partition: Result<Arc<Partition>, i16>,
}

pub async fn handle(
    broker: &Broker,
    req: FetchRequest,
    version: i16,
    caller: &Caller,
) -> (FetchResponse, FileRanges) {
    if req.session_id != 0 {
        let resp = FetchResponse::default()
            .with_error_code(Code::FetchSessionIdNotFound.code())
            .with_session_id(0);
        return (resp, Vec::new());
    }
    let view = broker.view();
    super::record_target(
        &view,
        version,
        req.topics.iter().map(|t| {
            (
                &t.topic,
                t.topic_id,
                t.partitions.iter().map(|p| p.partition).collect(),
            )
        }),
    );
    let mut topics: Vec<(TopicName, Uuid)> = Vec::new();
    let mut targets = Vec::new();
    for ft in &req.topics {
        let (topic, unknown) = if version >= 13 {
            (view.topic_by_id(ft.topic_id), Code::UnknownTopicId.code())
        } else {
            (
                view.topic(ft.topic.0.as_str()),
                Code::UnknownTopicOrPartition.code(),
            )
        };
        topics.push((ft.topic.clone(), ft.topic_id));
        let name = topic
            .map(|t| t.name.as_str())
            .unwrap_or(ft.topic.0.as_str());
        let denied = (topic.is_some() || version < 13)
            && !caller.allows(Operation::Read, ResourceType::Topic, name);
        for fp in &ft.partitions {
            let partition = match topic {
                _ if denied => Err(Code::TopicAuthorizationFailed.code()),
                None => Err(unknown),
                Some(t) => broker
                    .leader_partition(t, fp.partition)
                    .map_err(super::error::not_served_code),
            };
            targets.push(Target {
                topic_idx: topics.len() - 1,
                index: fp.partition,
                offset: fp.fetch_offset,
                max_bytes: fp.partition_max_bytes,
                current_leader_epoch: fp.current_leader_epoch,
                partition,
            });
        }
    }
    let mut watches: Vec<watch::Receiver<i64>> = targets
        .iter()
        .filter_map(|t| t.partition.as_ref().ok().map(|p| p.watch_high_watermark()))
        .collect();
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let deadline = tokio::time::Instant::now() + max_wait;
    let read_committed = version >= 4 && req.isolation_level == READ_COMMITTED;
    loop {
        for w in &mut watches {
            w.borrow_and_update();
        }
        let Gathered {
            mut parts,
            mut regions,
            mut bytes,
            mut any_error,
            remote,
        } = read_all(
            &targets,
            req.max_bytes,
            read_committed,
            version,
            broker.config.zero_copy,
        );
        if !remote.is_empty() {
            let (b, e) = read_remote(
                &mut parts,
                &mut regions,
                remote,
                RemoteWait {
                    fetch: max_wait,
                    give_up: Duration::from_millis(broker.config.tier.read_timeout_ms),
                },
                read_committed,
                broker.config.zero_copy,
                broker.tier_fetch_limiter.clone(),
            )
            .await;
            bytes += b;
            any_error |= e;
        }
        let done = bytes >= req.min_bytes.max(0) as usize
            || any_error
            || watches.is_empty()
            || tokio::time::Instant::now() >= deadline;
        if done {
            enforce_byte_limits(&mut parts, &mut regions, &targets, req.max_bytes);
            let mut files = Vec::new();
            for ((i, pd), region) in parts.iter_mut().zip(regions.iter_mut()) {
                let name = &topic_name(&topics, *i, &view);
                if let Some((region, records)) = region.take() {
                    let len = parts_len(&region);
                    broker.metrics.topic_out(name, len, records);
                    let in_files: u64 = region
                        .iter()
                        .filter(|p| matches!(p, Part::File(_)))
                        .map(Part::len)
                        .sum();
                    let holder = if broker.config.zero_copy && in_files > 0 {
                        zerocopy::placeholder(files.len(), len)
                    } else {
                        None
                    };
                    match holder {
                        Some(p) => {
                            broker.metrics.fetch_zero_copy_bytes.inc_by(in_files);
                            pd.records = Some(p);
                            files.push((files.len(), region));
                        }
                        None => match zerocopy::Part::join(&region) {
                            Ok(b) => pd.records = Some(b),
                            Err(e) => {
                                tracing::error!(topic = %name, partition = pd.partition_index, error = %e, "segment read failed");
                                pd.error_code = Code::KafkaStorageError.code();
                            }
                        },
                    }
                } else if let Some(data) = pd.records.as_ref().filter(|d| !d.is_empty()) {
                    broker
                        .metrics
                        .topic_out(name, data.len() as u64, count_records(data));
                }
            }
            return (build_response(topics, parts, version), files);
        }
        let changed = futures::future::select_all(watches.iter_mut().map(|w| w.changed().boxed()));
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Failed remote reads (every fetch of a partition fails while the object
/// store is down): one line per 10 s, with the count suppressed.
static REMOTE_READ_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();

/// Shortest time a fetch waits for the tier before answering without it.
const MIN_REMOTE_WAIT: Duration = Duration::from_millis(500);

/// How long a fetch waits for the tier: `fetch` (its own wait, at least
/// [`MIN_REMOTE_WAIT`]) for this read, and `give_up` for a partition whose
/// tier reads have had no answer at all.
struct RemoteWait {
    fetch: Duration,
    give_up: Duration,
}

/// Reads from the tier concurrently, each in its own task. A read slower
/// than the fetch's wait answers with no data for that partition (the
/// client fetches again) while the read goes on and fills the cache, so a
/// slow object store never holds up the other partitions. Once a
/// partition's tier reads have had no answer for `give_up` (the object
/// store is down or hangs), its fetches answer REQUEST_TIMED_OUT, which
/// clients report, instead of empty data for as long as the outage lasts.
async fn read_remote(
    parts: &mut [(usize, PartitionData)],
    regions: &mut Regions,
    reads: Vec<RemoteRead>,
    wait: RemoteWait,
    read_committed: bool,
    zero_copy: bool,
    limiter: Arc<tiering::RateLimiter>,
) -> (usize, bool) {
    let give_up = wait.give_up;
    let wait = wait.fetch.max(MIN_REMOTE_WAIT);
    let tasks: Vec<_> = reads
        .into_iter()
        .map(|r| {
            let RemoteRead {
                slot: i,
                partition: p,
                offset,
                budget,
            } = r;
            let task = tokio::spawn({
                let p = p.clone();
                let limiter = limiter.clone();
                async move {
                    // Pace what fetches ask of the object store.
                    let _ = limiter.acquire(budget.max(1) as u64, None).await;
                    p.read_remote(offset, budget.max(1), zero_copy).await
                }
            });
            (i, p, offset, task)
        })
        .collect();
    let deadline = tokio::time::Instant::now() + wait;
    let mut bytes = 0;
    let mut any_error = false;
    for (i, p, offset, task) in tasks {
        let pd = &mut parts[i].1;
        pd.high_watermark = p.high_watermark();
        pd.last_stable_offset = p.last_stable_offset();
        pd.log_start_offset = p.log_start_offset();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(read))) => {
                p.remote_read_answered();
                bytes += read.len as usize;
                if read_committed {
                    // Tiered segments lie below the last stable offset;
                    // their aborted transactions come with them.
                    let end = offset + read.offsets as i64;
                    if let Err(e) = p.load_tier_aborted(offset, end).await {
                        tracing::warn!(partition = %p.name(), error = %e, "tier transaction index unreadable");
                        pd.error_code = partition_error_code(&e);
                        any_error = true;
                        continue;
                    }
                    pd.aborted_transactions = Some(aborted_list(&p.aborted_between(offset, end)));
                }
                pd.records = Some(bytes::Bytes::new());
                regions[i] = Some((read.pieces, read.offsets));
            }
            Ok(Ok(Err(e))) => {
                p.remote_read_answered();
                if let Some(suppressed) = REMOTE_READ_LOG.allow(10_000) {
                    tracing::warn!(partition = %p.name(), error = %tiering::error_chain(&e), suppressed, "remote read failed");
                }
                pd.error_code = partition_error_code(&e);
                any_error = true;
            }
            Ok(Err(e)) => {
                tracing::error!(partition = %p.name(), error = %e, "remote read task failed");
                pd.error_code = Code::KafkaStorageError.code();
                any_error = true;
            }
            Err(_) => {
                let silent = p.remote_read_silent();
                if silent >= give_up {
                    if let Some(suppressed) = REMOTE_READ_LOG.allow(10_000) {
                        tracing::warn!(partition = %p.name(), silent_ms = silent.as_millis() as u64, suppressed, "tier reads have had no answer for tier-read-timeout-ms; answering REQUEST_TIMED_OUT");
                    }
                    pd.error_code = Code::RequestTimedOut.code();
                    any_error = true;
                } else {
                    tracing::debug!(partition = %p.name(), "remote read slower than the fetch wait; answering without it");
                    pd.records = Some(bytes::Bytes::new());
                }
            }
        }
    }
    (bytes, any_error)
}

/// Each partition's data when it is parts, not bytes in the response (with
/// the offsets they cover): local file ranges, and all data from the tier.
type Regions = Vec<Option<(Vec<Part>, u64)>>;

/// A read that must go to the tier, with the bytes of the fetch's budget
/// set aside for it.
struct RemoteRead {
    slot: usize,
    partition: Arc<Partition>,
    offset: i64,
    budget: usize,
}

/// What one pass over the local logs gathered: each partition's answer
/// (with its data as parts when it has some), the bytes found, whether a
/// partition answered an error, and the reads left for the tier.
struct Gathered {
    parts: Vec<(usize, PartitionData)>,
    regions: Regions,
    bytes: usize,
    any_error: bool,
    remote: Vec<RemoteRead>,
}

/// Reads every partition of the fetch from its local log, in request
/// order, within the fetch's byte budget: each partition gets at most its
/// own `partition_max_bytes` of what is left, and the first partition with
/// data at least one batch (KIP-74). A partition whose offset is in the
/// tier sets its share of the budget aside for the tier read that follows,
/// so tier reads stay within the fetch's `max_bytes` too; with no budget
/// left it answers watermarks only.
fn read_all(
    targets: &[Target],
    max_bytes: i32,
    read_committed: bool,
    version: i16,
    zero_copy: bool,
) -> Gathered {
    let mode = if zero_copy {
        ReadMode::File
    } else {
        ReadMode::Bytes
    };
    let mut remaining = if max_bytes <= 0 {
        i32::MAX as usize
    } else {
        max_bytes as usize
    };
    // Some partition before has data or a tier read that may bring some.
    let mut claimed = false;
    let mut g = Gathered {
        parts: Vec::with_capacity(targets.len()),
        regions: Vec::with_capacity(targets.len()),
        bytes: 0,
        any_error: false,
        remote: Vec::new(),
    };
    for t in targets {
        let mut region = None;
        let mut pd = PartitionData::default()
            .with_partition_index(t.index)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1));
        match &t.partition {
            Err(code) => {
                pd.error_code = *code;
                g.any_error = true;
            }
            Ok(p) => {
                if let Some(code) = leader_epoch_error(t.current_leader_epoch, p.leader_epoch()) {
                    pd.error_code = code;
                    g.any_error = true;
                } else {
                    let budget = (t.max_bytes.max(0) as usize).min(remaining);
                    let budget = if claimed { budget } else { budget.max(1) };
                    match p.read_isolated(t.offset, budget, mode, read_committed) {
                        Ok(r) => {
                            pd.high_watermark = r.high_watermark;
                            pd.last_stable_offset = r.last_stable_offset;
                            pd.log_start_offset = r.log_start_offset;
                            if read_committed {
                                pd.aborted_transactions = Some(aborted_list(&r.aborted));
                            }
                            // Bytes found here, and bytes set aside for the tier.
                            let (found, set_aside) = match r.data {
                                ReadData::Bytes(data) => {
                                    let n = data.len();
                                    pd.records = Some(data);
                                    (n, 0)
                                }
                                ReadData::File { region: f, offsets } => {
                                    let n = f.len as usize;
                                    region = Some((vec![Part::File(f)], offsets));
                                    pd.records = Some(bytes::Bytes::new());
                                    (n, 0)
                                }
                                ReadData::InTier if budget > 0 => {
                                    g.remote.push(RemoteRead {
                                        slot: g.parts.len(),
                                        partition: p.clone(),
                                        offset: t.offset,
                                        budget,
                                    });
                                    (0, budget)
                                }
                                ReadData::InTier => {
                                    pd.records = Some(bytes::Bytes::new());
                                    (0, 0)
                                }
                            };
                            claimed |= found + set_aside > 0;
                            remaining = remaining.saturating_sub(found + set_aside);
                            g.bytes += found;
                        }
                        Err(e) => {
                            pd.error_code = partition_error_code(&e);
                            pd.high_watermark = p.high_watermark();
                            pd.log_start_offset = p.log_start_offset();
                            pd.last_stable_offset = p.last_stable_offset();
                            g.any_error = true;
                        }
                    }
                }
            }
        }
        if version < 4 {
            pd.last_stable_offset = -1;
        }
        g.parts.push((t.topic_idx, pd));
        g.regions.push(region);
    }
    g
}

/// Aborted transactions as a fetch response lists them.
fn aborted_list(
    aborted: &[crate::partition::producer_state::AbortedTxn],
) -> Vec<AbortedTransaction> {
    aborted
        .iter()
        .map(|a| {
            AbortedTransaction::default()
                .with_producer_id(ProducerId(a.producer_id))
                .with_first_offset(a.first_offset)
        })
        .collect()
}

/// Kafka's byte limits on the response as a whole: only the first
/// partition with data may exceed the fetch's `max_bytes` or its own
/// `partition_max_bytes` (KIP-74, so a consumer always makes progress). A
/// later partition whose data does not fit answers none this time (local
/// or tiered alike), and the client asks again from the same offset;
/// clients refuse a response larger than they allowed.
fn enforce_byte_limits(
    parts: &mut [(usize, PartitionData)],
    regions: &mut Regions,
    targets: &[Target],
    max_bytes: i32,
) {
    let limit = usize::try_from(max_bytes)
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(usize::MAX);
    let mut total = 0usize;
    for (((_, pd), region), t) in parts.iter_mut().zip(regions.iter_mut()).zip(targets) {
        let n = match region {
            Some((r, _)) => parts_len(r) as usize,
            None => pd.records.as_ref().map_or(0, bytes::Bytes::len),
        };
        if n == 0 {
            continue;
        }
        let own = usize::try_from(t.max_bytes).unwrap_or(0);
        if total > 0 && (total.saturating_add(n) > limit || n > own) {
            *region = None;
            pd.records = Some(bytes::Bytes::new());
            continue;
        }
        total += n;
    }
}

/// The topic name of response topic `i` (requests by id carry no name).
fn topic_name(
    topics: &[(TopicName, Uuid)],
    i: usize,
    view: &crate::metadata::ClusterView,
) -> String {
    let (name, id) = &topics[i];
    if !name.0.is_empty() {
        return name.0.to_string();
    }
    view.topic_by_id(*id)
        .map(|t| t.name.clone())
        .unwrap_or_default()
}

fn build_response(
    topics: Vec<(TopicName, Uuid)>,
    parts: Vec<(usize, PartitionData)>,
    version: i16,
) -> FetchResponse {
    let mut responses: Vec<FetchableTopicResponse> = topics
        .into_iter()
        .map(|(name, id)| {
            let mut t = FetchableTopicResponse::default();
            if version >= 13 {
                t.topic_id = id;
            } else {
                t.topic = name;
            }
            t
        })
        .collect();
    for (i, pd) in parts {
        responses[i].partitions.push(pd);
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}
