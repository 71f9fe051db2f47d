//! Produce: validate batches, append them to the partition leaders, wait for
//! `acks`.
//!
//! acks=0 gets no response, acks=1 is answered after the local append and
//! acks=all (-1) after the high watermark covers the batch and an fsync shared
//! with concurrent appends has made it durable (group commit). Errors are per
//! partition, with Kafka's codes.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::messages::ResponseKind;

use super::error::{partition_error_code, Code};
use super::Handled;
use crate::broker::{now_ms, Broker};
use crate::partition::Partition;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Caller;

/// Appends that fail on storage (a full disk, a failed fsync): clients
/// retry, so one line per 10 s, with the count suppressed.
static APPEND_FAILED_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();

/// Appends a produce of transactional id `id`, verified first; verified
/// again if a marker came meanwhile (the transaction may have been aborted
/// by its coordinator), so an aborted transaction is never opened again.
async fn append_in_txn(
    broker: &Broker,
    id: &str,
    topic: &str,
    partition: &Partition,
    records: &bytes::Bytes,
) -> Result<Result<crate::partition::AppendResult, crate::partition::PartitionError>, (i16, String)>
{
    let mut tries = 0;
    loop {
        let guard = partition.marker_guard();
        verify_transactional(broker, id, topic, partition, records).await?;
        match partition.append_transactional(records, now_ms(), Some(guard)) {
            Err(crate::partition::PartitionError::MarkerSinceVerified { .. }) if tries < 5 => {
                tries += 1;
            }
            r => return Ok(r),
        }
    }
}

/// A produce of transactional id `id`: its first write to a partition in
/// a transaction is checked with the coordinator (KIP-890), so a
/// partition never added to the transaction cannot open one there that
/// no marker would close. Later writes of the same open transaction pass.
async fn verify_transactional(
    broker: &Broker,
    id: &str,
    topic: &str,
    partition: &Partition,
    records: &bytes::Bytes,
) -> Result<(), (i16, String)> {
    let Ok(h) = crate::log::batch::BatchHeader::parse(records) else {
        // The append refuses it with the reason.
        return Ok(());
    };
    if !h.is_transactional() || partition.has_open_txn(h.producer_id) {
        return Ok(());
    }
    broker
        .verify_txn_produce(
            id,
            h.producer_id,
            h.producer_epoch,
            &(topic.to_string(), partition.index),
        )
        .await
}

fn failed(index: i32, code: i16, msg: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(msg.map(StrBytes::from_string))
}

/// Appends now (in request order); an `acks=all` answer waits for the
/// fsync in the returned continuation.
/// `caller`: who sent it (each topic takes WRITE) and the listener it came
/// on (leader hints name its
/// endpoints).
pub async fn handle(
    broker: &Broker,
    req: ProduceRequest,
    version: i16,
    caller: &Caller,
) -> Handled {
    let listener = caller.listener.name.as_str();
    let acks = req.acks;
    let view = broker.view();
    super::record_target(
        &view,
        version,
        req.topic_data.iter().map(|t| {
            (
                &t.name,
                t.topic_id,
                t.partition_data.iter().map(|p| p.index).collect(),
            )
        }),
    );
    let mut responses = Vec::with_capacity(req.topic_data.len());
    // Partitions that must be made durable before answering acks=all.
    let mut pending: Vec<(usize, usize, Arc<Partition>, i64)> = Vec::new();
    for td in req.topic_data {
        let topic = if version >= 13 {
            view.topic_by_id(td.topic_id)
        } else {
            view.topic(td.name.0.as_str())
        };
        let unknown = if version >= 13 {
            Code::UnknownTopicId.code()
        } else {
            Code::UnknownTopicOrPartition.code()
        };
        let mut parts = Vec::with_capacity(td.partition_data.len());
        // Unauthorized topics are refused before their existence is told.
        let name = topic.map(|t| t.name.as_str()).unwrap_or(td.name.0.as_str());
        let denied = (topic.is_some() || version < 13)
            && !caller.allows(Operation::Write, ResourceType::Topic, name);
        for pd in &td.partition_data {
            let code_msg: Option<(i16, String)> =
                if denied {
                    Some((
                        Code::TopicAuthorizationFailed.code(),
                        caller.denied_message(Operation::Write, ResourceType::Topic, name),
                    ))
                } else if let Some(id) = req.transactional_id.as_ref().filter(|id| {
                    !caller.allows(Operation::Write, ResourceType::TransactionalId, id)
                }) {
                    Some((
                        Code::TransactionalIdAuthorizationFailed.code(),
                        caller.denied_message(Operation::Write, ResourceType::TransactionalId, id),
                    ))
                } else if !(-1..=1).contains(&acks) {
                    Some((
                        Code::InvalidRequiredAcks.code(),
                        format!("acks must be 0, 1 or -1. acks={acks}"),
                    ))
                } else {
                    None
                };
            if let Some((code, msg)) = code_msg {
                parts.push(failed(pd.index, code, Some(msg)));
                continue;
            }
            let Some(topic) = topic else {
                parts.push(failed(pd.index, unknown, None));
                continue;
            };
            if topic.name.starts_with("__") {
                // Internal topics are written by the broker only, as in Kafka.
                parts.push(failed(
                    pd.index,
                    Code::InvalidTopicException.code(),
                    Some(format!(
                        "cannot append to internal topic. topic={}",
                        topic.name
                    )),
                ));
                continue;
            }
            if let Some(source) = topic.configs.get(crate::config::READ_REPLICA_CONFIG) {
                parts.push(failed(
                    pd.index,
                    Code::PolicyViolation.code(),
                    Some(format!(
                        "topic is a read replica of cluster {source}: it takes no writes. topic={}",
                        topic.name
                    )),
                ));
                continue;
            }
            let partition = match broker.leader_partition(topic, pd.index) {
                Ok(p) => p,
                Err(why) => {
                    parts.push(failed(pd.index, super::error::not_served_code(why), None));
                    continue;
                }
            };
            if acks == -1 {
                let min_isr = partition.topic_config().min_insync_replicas as usize;
                let isr = topic
                    .partitions
                    .get(pd.index as usize)
                    .map(|p| p.isr.len())
                    .unwrap_or(0);
                if isr < min_isr {
                    parts.push(failed(
                        pd.index,
                        Code::NotEnoughReplicas.code(),
                        Some(format!(
                            "in-sync replicas {isr} < min.insync.replicas {min_isr}"
                        )),
                    ));
                    continue;
                }
            }
            let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) else {
                parts.push(failed(
                    pd.index,
                    Code::CorruptMessage.code(),
                    Some("no records".into()),
                ));
                continue;
            };
            // compression.type names a codec: batches are stored in it.
            let recompressed;
            let records = match partition.recompression() {
                None => records,
                Some((codec, max)) => {
                    match crate::log::recompress::recompress(records, codec, max) {
                        Ok(None) => records,
                        Ok(Some(b)) => {
                            recompressed = b;
                            &recompressed
                        }
                        Err(e) => {
                            let code = super::error::batch_error_code(&e);
                            parts.push(failed(pd.index, code, Some(e.to_string())));
                            continue;
                        }
                    }
                }
            };
            // A compacted topic takes only keyed records.
            if let Some(max) = partition.compacted() {
                if let Err(e) = crate::log::cleaner::check_keyed(records, max) {
                    let code = super::error::batch_error_code(&e);
                    parts.push(failed(pd.index, code, Some(e.to_string())));
                    continue;
                }
            }
            let appended = match req.transactional_id.as_ref() {
                None => partition.append(records, now_ms()),
                Some(id) => {
                    match append_in_txn(broker, id, &topic.name, &partition, records).await {
                        Ok(r) => r,
                        Err((code, msg)) => {
                            parts.push(failed(pd.index, code, Some(msg)));
                            continue;
                        }
                    }
                }
            };
            match appended {
                Ok(r) => {
                    // A replicated leader's high watermark waits for its
                    // own fsync, whatever the acks.
                    partition.sync_soon();
                    broker.metrics.topic_in(
                        &topic.name,
                        records.len() as u64,
                        (r.last_offset - r.base_offset + 1).max(0) as u64,
                    );
                    if acks == -1 {
                        partition.sync_to(r.last_offset + 1);
                        pending.push((
                            responses.len(),
                            parts.len(),
                            partition.clone(),
                            r.last_offset + 1,
                        ));
                    }
                    parts.push(
                        PartitionProduceResponse::default()
                            .with_index(pd.index)
                            .with_base_offset(r.base_offset)
                            .with_log_append_time_ms(r.log_append_time)
                            .with_log_start_offset(r.log_start_offset),
                    );
                }
                Err(e) => {
                    let code = partition_error_code(&e);
                    if code == Code::KafkaStorageError.code() {
                        // Clients retry: one line per 10 s while it lasts.
                        if let Some(suppressed) = APPEND_FAILED_LOG.allow(10_000) {
                            tracing::error!(partition = %partition.name(), error = %e, suppressed, "append failed");
                        }
                    } else {
                        tracing::debug!(partition = %partition.name(), error = %e, "append refused");
                    }
                    parts.push(failed(pd.index, code, Some(e.to_string())));
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(if version >= 13 {
                    TopicName::default()
                } else {
                    td.name.clone()
                })
                .with_topic_id(if version >= 13 {
                    td.topic_id
                } else {
                    uuid::Uuid::nil()
                })
                .with_partition_responses(parts),
        );
    }
    if acks == 0 {
        // Nothing to send; durability is not waited for.
        return Handled::Now(None);
    }
    if pending.is_empty() {
        return Handled::Now(Some(ResponseKind::Produce(finish(
            responses, version, &view, listener,
        ))));
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let listener = listener.to_string();
    Handled::Later(Box::pin(async move {
        let waits = pending.iter().map(|(_, _, p, off)| {
            let p = p.clone();
            let off = *off;
            async move { tokio::time::timeout(timeout, p.wait_committed(off)).await }
        });
        let results = futures::future::join_all(waits).await;
        for ((t, i, p, _), res) in pending.iter().zip(results) {
            let code = match res {
                Ok(Ok(())) => match shrunk_below_min_isr(p) {
                    // Committed by fewer replicas than the topic asks:
                    // stored, but the client is told (Kafka's rule).
                    Some(msg) => {
                        let r = &mut responses[*t].partition_responses[*i];
                        r.error_code = Code::NotEnoughReplicasAfterAppend.code();
                        r.error_message = Some(StrBytes::from_string(msg));
                        continue;
                    }
                    None => continue,
                },
                Ok(Err(e)) => {
                    let code = partition_error_code(&e);
                    if code == Code::NotLeaderOrFollower.code() {
                        tracing::debug!(partition = %p.name(), error = %e, "leadership moved before acks=all was answered");
                    } else {
                        tracing::error!(partition = %p.name(), error = %e, "fsync for acks=all failed");
                    }
                    code
                }
                Err(_) => Code::RequestTimedOut.code(),
            };
            let r = &mut responses[*t].partition_responses[*i];
            r.error_code = code;
            // The leadership moved while the append waited: this replica
            // knows where to (the view taken before the wait does not).
            if let (true, Some(leader)) = (version >= 10, p.followed_leader()) {
                r.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(p.leader_epoch());
            }
        }
        (
            Some(ResponseKind::Produce(finish(
                responses, version, &view, &listener,
            ))),
            Vec::new(),
        )
    }))
}

/// A replicated leader whose ISR shrank below `min.insync.replicas` while
/// an `acks=all` append waited: why, for the client.
fn shrunk_below_min_isr(p: &Partition) -> Option<String> {
    if !p.is_replicated() {
        return None;
    }
    let min_isr = p.topic_config().min_insync_replicas as usize;
    let isr = p.isr()?.len();
    (isr < min_isr).then(|| {
        format!(
            "in-sync replicas {isr} < min.insync.replicas {min_isr} when the append was committed"
        )
    })
}

fn finish(
    mut responses: Vec<TopicProduceResponse>,
    version: i16,
    view: &crate::metadata::ClusterView,
    listener: &str,
) -> ProduceResponse {
    if version < 8 {
        for t in &mut responses {
            for p in &mut t.partition_responses {
                p.error_message = None;
            }
        }
    }
    let mut resp = ProduceResponse::default().with_responses(responses);
    super::leader_hint::produce(&mut resp, view, version, listener);
    resp
}
