//! Transactions: AddPartitionsToTxn (the clients' v0-3 and the brokers'
//! batched, verify-only v4-5), AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
//! WriteTxnMarkers (coordinator to partition leaders),
//! DescribeTransactions, ListTransactions and DescribeProducers. InitProducerId with a
//! transactional id is in `producer_id.rs`. The coordinator's rules are in
//! `txn/`; this module checks ACLs and maps its errors to Kafka codes.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTxn,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTxn;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::{Code, NONE};
use super::group_offsets::{check_commit, fail_valid, Checked, CommitAsked};
use crate::broker::Broker;
use crate::group::records::{partition_for, OFFSETS_TOPIC};
use crate::security::acl::{Operation, ResourceType};
use crate::security::Caller;
use crate::txn::{CoordinatorError, Marker, TxnPartition};

/// WRITE on the transactional id, else its refusal code.
fn txn_allowed(caller: &Caller, id: &str) -> Result<(), i16> {
    if caller.allows(Operation::Write, ResourceType::TransactionalId, id) {
        Ok(())
    } else {
        Err(Code::TransactionalIdAuthorizationFailed.code())
    }
}

fn log_refused(api: &str, id: &str, e: &CoordinatorError) {
    match e {
        CoordinatorError::Txn(_) | CoordinatorError::UnknownId(_) => {
            tracing::debug!(api, transactional_id = id, error = %e, "transaction request refused")
        }
        _ => tracing::info!(api, transactional_id = id, error = %e, "transaction request refused"),
    }
}

fn code_of(api: &str, id: &str, r: Result<(), CoordinatorError>) -> i16 {
    match r {
        Ok(()) => NONE,
        Err(e) => {
            log_refused(api, id, &e);
            e.code().code()
        }
    }
}

// ----- AddPartitionsToTxn --------------------------------------------------

/// The partitions of one transaction's request, each with the code it gets
/// before the coordinator is asked (WRITE on the topic, the partition
/// exists), or None.
fn precheck(
    broker: &Broker,
    caller: &Caller,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<(TxnPartition, Option<i16>)> {
    let view = broker.view();
    let mut out = Vec::new();
    for t in topics {
        let name = t.name.0.to_string();
        let denied = !caller.allows(Operation::Write, ResourceType::Topic, &name);
        let count = view.topic(&name).map(|i| i.partitions.len() as i32);
        for &p in &t.partitions {
            let code = if denied {
                Some(Code::TopicAuthorizationFailed.code())
            } else if name.starts_with("__") || !count.is_some_and(|c| (0..c).contains(&p)) {
                Some(Code::UnknownTopicOrPartition.code())
            } else {
                None
            };
            out.push(((name.clone(), p), code));
        }
    }
    out
}

/// One transaction's answer: a partition refused before the coordinator
/// fails them all (the others OPERATION_NOT_ATTEMPTED), as in Kafka.
async fn add_one(
    broker: &Broker,
    caller: &Caller,
    id: &str,
    producer: (i64, i16),
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let checked = precheck(broker, caller, topics);
    let refused = checked.iter().any(|(_, c)| c.is_some());
    let codes: Vec<(TxnPartition, i16)> = if let Err(code) = txn_allowed(caller, id) {
        checked.into_iter().map(|(p, _)| (p, code)).collect()
    } else if refused {
        checked
            .into_iter()
            .map(|(p, c)| (p, c.unwrap_or(Code::OperationNotAttempted.code())))
            .collect()
    } else if verify_only {
        let mut out = Vec::with_capacity(checked.len());
        for (p, _) in checked {
            let r = broker
                .txns
                .verify(broker, id, producer.0, producer.1, &p)
                .await;
            let code = match r {
                Err(CoordinatorError::UnknownId(_)) => Code::InvalidTxnState.code(),
                r => code_of("AddPartitionsToTxn(verify)", id, r),
            };
            out.push((p, code));
        }
        out
    } else {
        let parts: Vec<TxnPartition> = checked.iter().map(|(p, _)| p.clone()).collect();
        let r = broker
            .txns
            .add_partitions(broker, id, producer.0, producer.1, &parts)
            .await;
        let code = code_of("AddPartitionsToTxn", id, r);
        parts.into_iter().map(|p| (p, code)).collect()
    };
    topic_results(codes)
}

fn topic_results(codes: Vec<(TxnPartition, i16)>) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, p), code) in codes {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(code);
        match out.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.results_by_partition.push(result),
            _ => out.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    out
}

pub async fn add_partitions_to_txn(
    broker: &Broker,
    req: AddPartitionsToTxnRequest,
    version: i16,
    caller: &Caller,
) -> AddPartitionsToTxnResponse {
    if version <= 3 {
        let id = req.v3_and_below_transactional_id.0.to_string();
        let producer = (
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
        );
        let results = add_one(
            broker,
            caller,
            &id,
            producer,
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // The batched form is for brokers only.
    if !caller.allows_cluster(Operation::ClusterAction) {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(Code::ClusterAuthorizationFailed.code());
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let id = t.transactional_id.0.to_string();
        let topics = add_one(
            broker,
            caller,
            &id,
            (t.producer_id.0, t.producer_epoch),
            t.verify_only,
            &t.topics,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topics),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

// ----- AddOffsetsToTxn -----------------------------------------------------

pub async fn add_offsets_to_txn(
    broker: &Broker,
    req: AddOffsetsToTxnRequest,
    _version: i16,
    caller: &Caller,
) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let code = if let Err(code) = txn_allowed(caller, &id) {
        code
    } else if !caller.allows(Operation::Read, ResourceType::Group, &group) {
        Code::GroupAuthorizationFailed.code()
    } else if let Err(e) = broker.groups.prepare(broker).await {
        tracing::info!(group = %group, error = %e, "AddOffsetsToTxn: the offsets topic is not available");
        Code::CoordinatorNotAvailable.code()
    } else {
        let partitions = broker
            .view()
            .topic(OFFSETS_TOPIC)
            .map_or(0, |t| t.partitions.len() as i32);
        let p = (OFFSETS_TOPIC.to_string(), partition_for(&group, partitions));
        let r = broker
            .txns
            .add_partitions(broker, &id, req.producer_id.0, req.producer_epoch, &[p])
            .await;
        code_of("AddOffsetsToTxn", &id, r)
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

// ----- EndTxn --------------------------------------------------------------

pub async fn end_txn(
    broker: &Broker,
    req: EndTxnRequest,
    _version: i16,
    caller: &Caller,
) -> EndTxnResponse {
    let id = req.transactional_id.0.to_string();
    let code = match txn_allowed(caller, &id) {
        Err(code) => code,
        Ok(()) => {
            let r = broker
                .txns
                .end_txn(
                    broker,
                    &id,
                    req.producer_id.0,
                    req.producer_epoch,
                    req.committed,
                )
                .await;
            code_of("EndTxn", &id, r)
        }
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

// ----- TxnOffsetCommit -----------------------------------------------------

pub async fn txn_offset_commit(
    broker: &Broker,
    req: TxnOffsetCommitRequest,
    version: i16,
    caller: &Caller,
) -> TxnOffsetCommitResponse {
    let id = req.transactional_id.0.to_string();
    let group_id = req.group_id.0.to_string();
    let txn_denied = txn_allowed(caller, &id).err();
    let group_denied =
        txn_denied.is_some() || !caller.allows(Operation::Read, ResourceType::Group, &group_id);
    let asked = req
        .topics
        .iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| CommitAsked {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
                .collect();
            (t.name.clone(), parts)
        })
        .collect();
    let Checked {
        mut codes,
        valid,
        offsets,
    } = check_commit(broker, caller, group_denied, asked, None);
    if let Some(code) = txn_denied {
        for (_, parts) in &mut codes {
            for (_, c) in parts.iter_mut() {
                *c = code;
            }
        }
    } else if !group_denied {
        // v3 carries the member: a zombie of an old generation is fenced.
        let member = if version >= 3 {
            (
                req.member_id.as_str(),
                req.group_instance_id.as_ref().map(|i| i.as_str()),
                req.generation_id,
            )
        } else {
            ("", None, -1)
        };
        let r = broker
            .groups
            .commit_txn_offsets(
                broker,
                &group_id,
                member,
                offsets,
                (req.producer_id.0, req.producer_epoch),
            )
            .await;
        if let Err(e) = r {
            fail_valid(&mut codes, &valid, "TxnOffsetCommit", &group_id, &e);
        }
    }
    let topics = codes
        .into_iter()
        .map(|(name, parts)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, code)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

// ----- WriteTxnMarkers -----------------------------------------------------

pub async fn write_txn_markers(
    broker: &Broker,
    req: WriteTxnMarkersRequest,
    _version: i16,
    caller: &Caller,
) -> WriteTxnMarkersResponse {
    let allowed = caller.allows_cluster(Operation::ClusterAction);
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in req.markers {
        let marker = Marker {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        // All of a marker's partitions are appended before any is awaited,
        // so they share one sync round.
        let writes = m.topics.iter().flat_map(|t| {
            t.partition_indexes.iter().map(move |&p| async move {
                if !allowed {
                    return Code::ClusterAuthorizationFailed.code();
                }
                match broker
                    .write_marker_locally(t.name.0.as_str(), p, marker)
                    .await
                {
                    Ok(()) => NONE,
                    Err(code) => code,
                }
            })
        });
        let mut codes = futures::future::join_all(writes).await.into_iter();
        let topics = m
            .topics
            .into_iter()
            .map(|t| {
                let parts = t
                    .partition_indexes
                    .iter()
                    .map(|&p| {
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(
                                codes.next().unwrap_or(Code::UnknownServerError.code()),
                            )
                    })
                    .collect();
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(parts)
            })
            .collect();
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}

// ----- DescribeProducers ---------------------------------------------------

/// The producers of partitions this broker leads: id, epoch, last
/// sequence and the first offset of an open transaction. READ on the topic.
pub fn describe_producers(
    broker: &Broker,
    req: DescribeProducersRequest,
    _version: i16,
    caller: &Caller,
) -> DescribeProducersResponse {
    let view = broker.view();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let denied = !caller.allows(Operation::Read, ResourceType::Topic, &name);
            let info = view.topic(&name);
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|index| {
                    let r = PartitionResponse::default().with_partition_index(index);
                    if denied {
                        return r.with_error_code(Code::TopicAuthorizationFailed.code());
                    }
                    let served = match info {
                        Some(i) => broker.leader_partition(i, index),
                        None => Err(crate::broker::NotServed::UnknownPartition),
                    };
                    match served {
                        Err(why) => r.with_error_code(super::error::not_served_code(why)),
                        Ok(p) => r.with_active_producers(
                            p.producers()
                                .into_iter()
                                .map(|v| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(v.producer_id))
                                        .with_producer_epoch(i32::from(v.epoch))
                                        .with_last_sequence(v.last_sequence)
                                        .with_last_timestamp(v.last_timestamp)
                                        .with_coordinator_epoch(v.coordinator_epoch)
                                        .with_current_txn_start_offset(v.txn_start_offset)
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

// ----- DescribeTransactions / ListTransactions -----------------------------

pub async fn describe_transactions(
    broker: &Broker,
    req: DescribeTransactionsRequest,
    _version: i16,
    caller: &Caller,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let name = id.0.to_string();
        let mut s = DescribedTxn::default()
            .with_transactional_id(id)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        if !caller.allows(Operation::Describe, ResourceType::TransactionalId, &name) {
            states.push(s.with_error_code(Code::TransactionalIdAuthorizationFailed.code()));
            continue;
        }
        match broker.txns.describe(broker, &name).await {
            Ok(meta) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, p) in &meta.partitions {
                    match topics.last_mut() {
                        Some(t) if t.topic.0.as_str() == topic => t.partitions.push(*p),
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                                .with_partitions(vec![*p]),
                        ),
                    }
                }
                s = s
                    .with_transaction_state(StrBytes::from_static_str(meta.state.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(meta.start_ms)
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.producer_epoch)
                    .with_topics(topics);
            }
            Err(CoordinatorError::UnknownId(_)) => {
                s = s.with_error_code(Code::TransactionalIdNotFound.code())
            }
            Err(e) => s = s.with_error_code(e.code().code()),
        }
        states.push(s);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub fn list_transactions(
    broker: &Broker,
    req: ListTransactionsRequest,
    version: i16,
    caller: &Caller,
) -> ListTransactionsResponse {
    let now = crate::clock::now_ms();
    let states = broker
        .txns
        .list()
        .into_iter()
        .map(|l| l.meta)
        .filter(|m| {
            caller.allows(
                Operation::Describe,
                ResourceType::TransactionalId,
                &m.transactional_id,
            )
        })
        .filter(|m| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == m.state.name())
        })
        .filter(|m| m.state != crate::txn::TxnState::Dead)
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
        })
        .filter(|m| {
            version < 1
                || req.duration_filter < 0
                || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter)
        })
        .map(|m| {
            ListedTxn::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default().with_transaction_states(states)
}
