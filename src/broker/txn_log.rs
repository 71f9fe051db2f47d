//! The transaction coordinator's host on this broker: `__transaction_state`
//! on the local partitions (created on first use, compacted, replicated
//! like `__consumer_offsets`), producer ids, and the markers: written
//! directly to the partitions this broker leads, with WriteTxnMarkers to
//! the leaders of the others. A marker on a `__consumer_offsets` partition
//! also commits or drops the transaction's offsets in the group
//! coordinator.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::{now_ms, Broker};
use crate::api::error::Code;
use crate::client::{ConnOptions, Connection};
use crate::group::records::OFFSETS_TOPIC;
use crate::log::batch::ControlType;
use crate::partition::ReadData;
use crate::txn::records::TXN_STATE_TOPIC;
use crate::txn::{Coordinator, CoordinatorError, KeyValue, Marker, TxnHost, TxnPartition};

/// How much of a state partition one load step reads.
const READ_CHUNK: usize = 1 << 20;
/// transaction.state.log.segment.bytes (Kafka's default).
const STATE_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;

impl Broker {
    /// The broker that coordinates transactional id `id`: the leader of
    /// its state partition, once the topic exists (none while fenced).
    pub fn txn_coordinator(&self, id: &str) -> Option<crate::metadata::BrokerInfo> {
        let view = self.view();
        let topic = view.topic(TXN_STATE_TOPIC)?;
        let index = Coordinator::partition_of(id, topic.partitions.len() as i32);
        let leader = topic.partitions.get(usize::try_from(index).ok()?)?.leader;
        if view.fenced.contains(&leader) {
            return None;
        }
        view.brokers.get(&leader).cloned()
    }

    /// Appends the marker to partition `index` of `topic`, which this
    /// broker leads, and waits until it is committed; on an offsets
    /// partition the group coordinator then applies the transaction's
    /// offsets. A marker fenced by a newer producer epoch is done (that
    /// epoch's own marker closed the transaction here). The error is a
    /// Kafka code. The marker is appended before the first await, so
    /// callers that join several of these share one sync round.
    pub async fn write_marker_locally(
        &self,
        topic: &str,
        index: i32,
        marker: Marker,
    ) -> Result<(), i16> {
        let view = self.view();
        let Some(info) = view.topic(topic) else {
            return Err(Code::UnknownTopicOrPartition.code());
        };
        let p = self
            .leader_partition(info, index)
            .map_err(crate::api::error::not_served_code)?;
        let kind = if marker.commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        match p.append_marker(
            marker.producer_id,
            marker.producer_epoch,
            kind,
            marker.coordinator_epoch,
            now_ms(),
        ) {
            Ok(r) => {
                p.sync_soon();
                p.wait_committed(r.last_offset + 1)
                    .await
                    .map_err(|e| crate::api::error::partition_error_code(&e))?;
            }
            Err(crate::partition::PartitionError::InvalidProducerEpoch { .. }) => {}
            Err(e) => return Err(crate::api::error::partition_error_code(&e)),
        }
        if topic == OFFSETS_TOPIC {
            self.groups
                .complete_txn_offsets(index, marker.producer_id, marker.commit);
        }
        Ok(())
    }

    /// A connection to broker `node` for coordinator traffic, opened once.
    async fn txn_link(&self, node: i32) -> Result<Arc<Connection>, String> {
        if let Some(c) = self
            .txn_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .filter(|c| !c.is_closed())
        {
            return Ok(c.clone());
        }
        let addr = self
            .view()
            .brokers
            .get(&node)
            .map(|b| format!("{}:{}", b.host, b.port))
            .ok_or_else(|| format!("broker {node} is not registered"))?;
        let opts = ConnOptions {
            client_id: format!("strata-txn-{}", self.node_id()),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            security: self.inter_broker_security.clone(),
        };
        let conn = Arc::new(
            Connection::open(&addr, &opts)
                .await
                .map_err(|e| e.to_string())?,
        );
        self.txn_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, conn.clone());
        Ok(conn)
    }

    /// Sends the marker to broker `node` for `partitions`; returns those
    /// not written.
    async fn send_markers(
        &self,
        node: i32,
        marker: Marker,
        partitions: Vec<TxnPartition>,
    ) -> Vec<TxnPartition> {
        let conn = match self.txn_link(node).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(broker = node, error = %e, "cannot reach a partition leader for markers");
                return partitions;
            }
        };
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &partitions {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        let topics = by_topic
            .into_iter()
            .map(|(t, ps)| {
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partition_indexes(ps)
            })
            .collect();
        let req =
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(marker.producer_id))
                .with_producer_epoch(marker.producer_epoch)
                .with_transaction_result(marker.commit)
                .with_coordinator_epoch(marker.coordinator_epoch)
                .with_topics(topics)]);
        let resp = match conn.send(&req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(broker = node, error = %e, "WriteTxnMarkers failed");
                return partitions;
            }
        };
        let mut done: std::collections::HashSet<TxnPartition> = std::collections::HashSet::new();
        for m in resp.markers {
            for t in m.topics {
                for p in t.partitions {
                    if p.error_code == 0 {
                        done.insert((t.name.0.to_string(), p.partition_index));
                    }
                }
            }
        }
        partitions
            .into_iter()
            .filter(|p| !done.contains(p))
            .collect()
    }

    /// KIP-890's check of a transactional produce's first write to a
    /// partition: the coordinator of `id` (here, or asked with
    /// AddPartitionsToTxn's verify-only form) confirms the partition is in
    /// the producer's open transaction. The error is (code, message).
    pub async fn verify_txn_produce(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &TxnPartition,
    ) -> Result<(), (i16, String)> {
        let Some(coordinator) = self.txn_coordinator(id) else {
            return Err((
                Code::NotEnoughReplicas.code(),
                "the transaction coordinator is not available".into(),
            ));
        };
        if coordinator.node_id == self.node_id() {
            return self
                .txns
                .verify(self, id, producer_id, epoch, partition)
                .await
                .map_err(|e| (verify_code(&e), e.to_string()));
        }
        let conn = self
            .txn_link(coordinator.node_id)
            .await
            .map_err(|e| (Code::NotEnoughReplicas.code(), e))?;
        let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_verify_only(true)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(partition.0.clone())))
                    .with_partitions(vec![partition.1])]),
        ]);
        let resp = conn
            .send(&req)
            .await
            .map_err(|e| (Code::NotEnoughReplicas.code(), e.to_string()))?;
        if resp.error_code != 0 {
            return Err((resp.error_code, "transaction verification failed".into()));
        }
        let code = resp
            .results_by_transaction
            .iter()
            .flat_map(|r| r.topic_results.iter())
            .flat_map(|t| t.results_by_partition.iter())
            .map(|p| p.partition_error_code)
            .find(|c| *c != 0)
            .unwrap_or(0);
        if code != 0 {
            return Err((
                code,
                "the partition is not in the producer's transaction".into(),
            ));
        }
        Ok(())
    }

    /// Whether this broker leads partition `index` of the state topic at
    /// the view's epoch with the partition open and leading.
    fn leads_txn_partition(&self, index: i32) -> Option<i32> {
        let view = self.view();
        let topic = view.topic(TXN_STATE_TOPIC)?;
        let info = topic.partitions.get(usize::try_from(index).ok()?)?;
        if info.leader != self.node_id() {
            return None;
        }
        let p = self.partition(topic.id, index)?;
        (p.is_leader() && p.leader_epoch() == info.leader_epoch).then_some(info.leader_epoch)
    }
}

/// The code a failed verification answers a produce with: an unknown id or
/// a partition outside the transaction is INVALID_TXN_STATE, as in Kafka.
fn verify_code(e: &CoordinatorError) -> i16 {
    match e {
        CoordinatorError::UnknownId(_) => Code::InvalidTxnState.code(),
        CoordinatorError::NotCoordinator | CoordinatorError::LoadInProgress => {
            Code::NotEnoughReplicas.code()
        }
        other => other.code().code(),
    }
}

/// The transaction coordinator whose records this broker keeps (for
/// [`crate::txn::coordinator::run_timers`]).
impl AsRef<Coordinator> for Broker {
    fn as_ref(&self) -> &Coordinator {
        &self.txns
    }
}

impl TxnHost for Broker {
    async fn ensure_topic(&self) -> Result<(), CoordinatorError> {
        if self.view().topic(TXN_STATE_TOPIC).is_some() {
            return Ok(());
        }
        self.create_internal_topic(
            TXN_STATE_TOPIC,
            self.txns.config().partitions,
            STATE_SEGMENT_BYTES,
        )
        .await
        .map_err(CoordinatorError::Unavailable)
    }

    fn partitions(&self) -> i32 {
        self.view()
            .topic(TXN_STATE_TOPIC)
            .map(|t| t.partitions.len() as i32)
            .unwrap_or(0)
    }

    fn leads(&self, index: i32) -> Option<i32> {
        self.leads_txn_partition(index)
    }

    async fn write(
        &self,
        index: i32,
        epoch: i32,
        records: Vec<KeyValue>,
    ) -> Result<(), CoordinatorError> {
        let view = self.view();
        let topic = view
            .topic(TXN_STATE_TOPIC)
            .ok_or_else(|| CoordinatorError::Unavailable("topic does not exist".into()))?;
        let p = self
            .partition(topic.id, index)
            .ok_or(CoordinatorError::NotCoordinator)?;
        if !p.is_leader() || p.leader_epoch() != epoch {
            return Err(CoordinatorError::NotCoordinator);
        }
        let batch = crate::group::records::encode_batch(&records, now_ms())
            .map_err(CoordinatorError::Unavailable)?;
        let r = p.append(&batch, now_ms()).map_err(|e| {
            tracing::warn!(partition = index, error = %e, "transaction state not written");
            match e {
                crate::partition::PartitionError::Replica { .. }
                | crate::partition::PartitionError::Closed { .. } => {
                    CoordinatorError::NotCoordinator
                }
                other => CoordinatorError::Unavailable(other.to_string()),
            }
        })?;
        p.sync_soon();
        p.wait_committed(r.last_offset + 1).await.map_err(|e| {
            tracing::warn!(partition = index, error = %e, "transaction state not committed");
            CoordinatorError::NotCoordinator
        })
    }

    fn read(
        &self,
        index: i32,
        offset: i64,
    ) -> Result<Option<(Vec<KeyValue>, i64)>, CoordinatorError> {
        let view = self.view();
        let Some(topic) = view.topic(TXN_STATE_TOPIC) else {
            return Ok(None);
        };
        let p = self
            .partition(topic.id, index)
            .ok_or(CoordinatorError::NotCoordinator)?;
        let offset = offset.max(p.local_log_start_offset());
        if offset >= p.log_end_offset() {
            return Ok(None);
        }
        let read = p
            .read_for_follower(offset, READ_CHUNK)
            .map_err(|e| CoordinatorError::Unavailable(e.to_string()))?;
        match read.data {
            ReadData::Bytes(data) => Ok(crate::group::log::decode_records(data, offset)),
            ReadData::File { .. } | ReadData::InTier => Ok(None),
        }
    }

    async fn new_producer_id(&self) -> Result<i64, CoordinatorError> {
        self.next_producer_id()
            .await
            .map_err(|e| CoordinatorError::Unavailable(e.to_string()))
    }

    async fn write_markers(
        &self,
        marker: Marker,
        partitions: Vec<TxnPartition>,
    ) -> Vec<TxnPartition> {
        let view = self.view();
        let mut by_leader: HashMap<i32, Vec<TxnPartition>> = HashMap::new();
        let mut left = Vec::new();
        for (topic, index) in partitions {
            let leader = view
                .topic(&topic)
                .and_then(|t| t.partitions.get(usize::try_from(index).ok()?))
                .map(|p| p.leader);
            match leader {
                // A deleted topic or partition: nothing to close.
                None => {}
                Some(l) if l < 0 => left.push((topic, index)),
                Some(l) => by_leader.entry(l).or_default().push((topic, index)),
            }
        }
        let me = self.node_id();
        let sends = by_leader.into_iter().map(|(leader, parts)| async move {
            if leader != me {
                return self.send_markers(leader, marker, parts).await;
            }
            // Every marker is appended on the first poll, so one sync
            // round commits them all; then each is awaited.
            let written = futures::future::join_all(
                parts
                    .iter()
                    .map(|(topic, index)| self.write_marker_locally(topic, *index, marker)),
            )
            .await;
            let mut failed = Vec::new();
            for ((topic, index), result) in parts.into_iter().zip(written) {
                if let Err(code) = result {
                    tracing::debug!(topic = %topic, partition = index, code, "marker not written");
                    failed.push((topic, index));
                }
            }
            failed
        });
        for failed in futures::future::join_all(sends).await {
            left.extend(failed);
        }
        left
    }

    fn topic_exists(&self, topic: &str) -> bool {
        self.view().topic(topic).is_some()
    }
}
