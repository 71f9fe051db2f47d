//! Every version ApiVersions advertises for the single-node APIs is served:
//! each one is sent a real request and its response decodes at that
//! version with the expected result. Clients pick versions from this list
//! (recent librdkafka the newest, older clients and kafkajs older ones).

mod common;

use bytes::{Bytes, BytesMut};
use common::raw::RawConn;
use common::Broker;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as inc;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn batch(value: &str) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn range(conn: &mut RawConn, key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let r = conn
        .version_range(key)
        .unwrap_or_else(|| panic!("{key:?} is not advertised"));
    r.min_version..=r.max_version
}

#[test]
fn every_advertised_version_is_served() {
    let broker = Broker::start();
    let mut c = RawConn::connect(&broker.bootstrap());
    let topic = common::topic_name("versions");
    common::clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let topic_id = c.topic_ids(&[topic.as_str()])[&topic];

    for v in range(&mut c, ApiKey::ApiVersions) {
        let r: ApiVersionsResponse =
            c.roundtrip(ApiKey::ApiVersions, v, &ApiVersionsRequest::default());
        assert_eq!(r.error_code, 0, "ApiVersions v{v}");
    }

    for v in range(&mut c, ApiKey::Metadata) {
        let req = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(&topic))),
        ]));
        let r: MetadataResponse = c.roundtrip(ApiKey::Metadata, v, &req);
        assert_eq!(r.topics.len(), 1, "Metadata v{v}");
        assert_eq!(r.topics[0].error_code, 0, "Metadata v{v}");
        assert_eq!(r.topics[0].partitions.len(), 1, "Metadata v{v}");
        assert_eq!(r.brokers.len(), 1, "Metadata v{v}");
    }

    // Produce v0-v2 are listed (KAFKA-18659) but refused: the codec starts at 3.
    let mut produced = 0i64;
    for v in range(&mut c, ApiKey::Produce).filter(|v| *v >= 3) {
        let mut t =
            TopicProduceData::default().with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(&format!("produce-v{v}"))))]);
        if v >= 13 {
            t.topic_id = topic_id;
        } else {
            t.name = name(&topic);
        }
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![t]);
        let r: ProduceResponse = c.roundtrip(ApiKey::Produce, v, &req);
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "Produce v{v}: {r:?}");
        assert_eq!(p.base_offset, produced, "Produce v{v}");
        produced += 1;
    }

    for v in range(&mut c, ApiKey::Fetch) {
        let mut t = FetchTopic::default().with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(0)
            .with_current_leader_epoch(-1)
            .with_partition_max_bytes(1 << 20)]);
        if v >= 13 {
            t.topic_id = topic_id;
        } else {
            t.topic = name(&topic);
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![t]);
        let r: FetchResponse = c.roundtrip(ApiKey::Fetch, v, &req);
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "Fetch v{v}: {r:?}");
        assert_eq!(p.high_watermark, produced, "Fetch v{v}");
        assert!(
            p.records.as_ref().is_some_and(|b| !b.is_empty()),
            "Fetch v{v} returns data"
        );
    }

    for v in range(&mut c, ApiKey::ListOffsets) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(&topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(-1)])]);
        let r: ListOffsetsResponse = c.roundtrip(ApiKey::ListOffsets, v, &req);
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, produced), "ListOffsets v{v}");
    }

    for v in range(&mut c, ApiKey::OffsetForLeaderEpoch) {
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(name(&topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(0)])]);
        let r: OffsetForLeaderEpochResponse = c.roundtrip(ApiKey::OffsetForLeaderEpoch, v, &req);
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.end_offset),
            (0, produced),
            "OffsetForLeaderEpoch v{v}"
        );
    }

    for v in range(&mut c, ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.clone()))
                .with_configuration_keys(None),
        ]);
        let r: DescribeConfigsResponse = c.roundtrip(ApiKey::DescribeConfigs, v, &req);
        assert_eq!(r.results[0].error_code, 0, "DescribeConfigs v{v}");
        assert!(
            r.results[0]
                .configs
                .iter()
                .any(|e| e.name.as_str() == "retention.ms"),
            "DescribeConfigs v{v}"
        );
    }

    for v in range(&mut c, ApiKey::AlterConfigs) {
        let req =
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.clone()))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_string(format!(
                        "{}",
                        3_600_000 + v as i64
                    ))))])]);
        let r: AlterConfigsResponse = c.roundtrip(ApiKey::AlterConfigs, v, &req);
        assert_eq!(r.responses[0].error_code, 0, "AlterConfigs v{v}: {r:?}");
    }

    for v in range(&mut c, ApiKey::IncrementalAlterConfigs) {
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            inc::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.clone()))
                .with_configs(vec![inc::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(format!(
                        "{}",
                        1 << (20 + v)
                    ))))]),
        ]);
        let r: IncrementalAlterConfigsResponse =
            c.roundtrip(ApiKey::IncrementalAlterConfigs, v, &req);
        assert_eq!(
            r.responses[0].error_code, 0,
            "IncrementalAlterConfigs v{v}: {r:?}"
        );
    }

    for v in range(&mut c, ApiKey::DescribeCluster) {
        let req = DescribeClusterRequest::default().with_endpoint_type(1);
        let r: DescribeClusterResponse = c.roundtrip(ApiKey::DescribeCluster, v, &req);
        assert_eq!(r.error_code, 0, "DescribeCluster v{v}");
        assert_eq!(r.brokers.len(), 1, "DescribeCluster v{v}");
    }

    for v in range(&mut c, ApiKey::DescribeLogDirs) {
        let req = DescribeLogDirsRequest::default().with_topics(None);
        let r: DescribeLogDirsResponse = c.roundtrip(ApiKey::DescribeLogDirs, v, &req);
        assert!(
            r.results[0]
                .topics
                .iter()
                .any(|t| t.name.0.as_str() == topic),
            "DescribeLogDirs v{v}"
        );
    }

    // One replica: it is the preferred one and leads already.
    for v in range(&mut c, ApiKey::ElectLeaders) {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
        let req = ElectLeadersRequest::default()
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(name(&topic))
                .with_partitions(vec![0])]));
        let r: ElectLeadersResponse = c.roundtrip(ApiKey::ElectLeaders, v, &req);
        assert_eq!(r.error_code, 0, "ElectLeaders v{v}");
        let p = &r.replica_election_results[0].partition_result[0];
        assert_eq!(p.error_code, 84, "ElectLeaders v{v}: ELECTION_NOT_NEEDED");
    }

    // No broker 99: refused by name, nothing changed.
    for v in range(&mut c, ApiKey::UnregisterBroker) {
        use kafka_protocol::messages::{
            BrokerId, UnregisterBrokerRequest, UnregisterBrokerResponse,
        };
        let req = UnregisterBrokerRequest::default().with_broker_id(BrokerId(99));
        let r: UnregisterBrokerResponse = c.roundtrip(ApiKey::UnregisterBroker, v, &req);
        assert_eq!(
            r.error_code, 102,
            "UnregisterBroker v{v}: BROKER_ID_NOT_REGISTERED"
        );
    }

    // A broker running alone has no quorum to add a voter to.
    for v in range(&mut c, ApiKey::AddRaftVoter) {
        use kafka_protocol::messages::{AddRaftVoterRequest, AddRaftVoterResponse};
        let req = AddRaftVoterRequest::default()
            .with_cluster_id(None)
            .with_voter_id(2);
        let r: AddRaftVoterResponse = c.roundtrip(ApiKey::AddRaftVoter, v, &req);
        assert_eq!(r.error_code, 42, "AddRaftVoter v{v}: INVALID_REQUEST");
        let msg = r.error_message.as_deref().unwrap_or_default().to_string();
        assert!(msg.contains("runs alone"), "AddRaftVoter v{v}: {msg}");
    }

    for v in range(&mut c, ApiKey::InitProducerId) {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let r: InitProducerIdResponse = c.roundtrip(ApiKey::InitProducerId, v, &req);
        assert_eq!(r.error_code, 0, "InitProducerId v{v}");
        assert!(r.producer_id.0 >= 0, "InitProducerId v{v}");
    }

    for v in range(&mut c, ApiKey::DeleteRecords) {
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(name(&topic))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(v as i64)])]);
        let r: DeleteRecordsResponse = c.roundtrip(ApiKey::DeleteRecords, v, &req);
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.low_watermark),
            (0, v as i64),
            "DeleteRecords v{v}"
        );
    }

    // CreateTopics, CreatePartitions and DeleteTopics on a topic per version.
    let creates: Vec<i16> = range(&mut c, ApiKey::CreateTopics).collect();
    let grows: Vec<i16> = range(&mut c, ApiKey::CreatePartitions).collect();
    let deletes: Vec<i16> = range(&mut c, ApiKey::DeleteTopics).collect();
    let n = creates.len().max(grows.len()).max(deletes.len());
    for i in 0..n {
        let cv = creates[i % creates.len()];
        let gv = grows[i % grows.len()];
        let dv = deletes[i % deletes.len()];
        let t = format!("{topic}-c{i}");
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(&t))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
        let r: CreateTopicsResponse = c.roundtrip(ApiKey::CreateTopics, cv, &req);
        assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{cv}: {r:?}");

        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(&t))
                .with_count(2)
                .with_assignments(None)]);
        let r: CreatePartitionsResponse = c.roundtrip(ApiKey::CreatePartitions, gv, &req);
        assert_eq!(r.results[0].error_code, 0, "CreatePartitions v{gv}: {r:?}");

        let mut req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
        if dv >= 6 {
            req.topics = vec![DeleteTopicState::default().with_name(Some(name(&t)))];
        } else {
            req.topic_names = vec![name(&t)];
        }
        let r: DeleteTopicsResponse = c.roundtrip(ApiKey::DeleteTopics, dv, &req);
        assert_eq!(r.responses[0].error_code, 0, "DeleteTopics v{dv}: {r:?}");
    }
    broker.assert_no_error_logs();
}

/// The transaction APIs at every advertised version, each on a transaction
/// of its own: InitProducerId with a transactional id, AddPartitionsToTxn
/// (clients' v0-3, brokers' verify-only v4+), AddOffsetsToTxn,
/// TxnOffsetCommit, EndTxn, WriteTxnMarkers, DescribeTransactions and
/// ListTransactions.
#[test]
fn every_advertised_transaction_version_is_served() {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    let broker = Broker::start();
    let mut c = RawConn::connect(&broker.bootstrap());
    let topic = common::topic_name("txn-versions");
    common::clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let txn_id = |s: String| TransactionalId(StrBytes::from_string(s));
    let init = |c: &mut RawConn, id: &str, v: i16| -> (i64, i16) {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(id.to_string())))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let r: InitProducerIdResponse = c.roundtrip(ApiKey::InitProducerId, v, &req);
        assert_eq!(r.error_code, 0, "InitProducerId v{v} for {id}");
        (r.producer_id.0, r.producer_epoch)
    };
    let latest = |c: &mut RawConn, key| *range(c, key).end();
    let add = |c: &mut RawConn, id: &str, (pid, epoch): (i64, i16), v: i16| {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(id.to_string()))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(name(&topic))
                .with_partitions(vec![0])]);
        let r: AddPartitionsToTxnResponse = c.roundtrip(ApiKey::AddPartitionsToTxn, v, &req);
        let code = r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
        assert_eq!(code, 0, "AddPartitionsToTxn v{v}");
    };
    let group = "txn-versions-group";
    let add_offsets = |c: &mut RawConn, id: &str, (pid, epoch): (i64, i16), v: i16| {
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id(id.to_string()))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(StrBytes::from_static_str(group)));
        let r: AddOffsetsToTxnResponse = c.roundtrip(ApiKey::AddOffsetsToTxn, v, &req);
        assert_eq!(r.error_code, 0, "AddOffsetsToTxn v{v}");
    };

    let init_latest = latest(&mut c, ApiKey::InitProducerId);
    let add_latest = 3;
    for v in range(&mut c, ApiKey::InitProducerId) {
        let (pid, epoch) = init(&mut c, &format!("init-{v}"), v);
        assert!(pid >= 0 && epoch == 0, "InitProducerId v{v}");
    }
    for v in range(&mut c, ApiKey::AddPartitionsToTxn).filter(|v| *v <= 3) {
        let id = format!("add-{v}");
        let producer = init(&mut c, &id, init_latest);
        add(&mut c, &id, producer, v);
    }
    // The brokers' form: verify that the partition is in the transaction.
    let producer = init(&mut c, "verified", init_latest);
    add(&mut c, "verified", producer, add_latest);
    for v in range(&mut c, ApiKey::AddPartitionsToTxn).filter(|v| *v >= 4) {
        let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(txn_id("verified".into()))
                .with_producer_id(ProducerId(producer.0))
                .with_producer_epoch(producer.1)
                .with_verify_only(true)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(name(&topic))
                    .with_partitions(vec![0])]),
        ]);
        let r: AddPartitionsToTxnResponse = c.roundtrip(ApiKey::AddPartitionsToTxn, v, &req);
        assert_eq!(r.error_code, 0, "AddPartitionsToTxn v{v}");
        let code = r.results_by_transaction[0].topic_results[0].results_by_partition[0]
            .partition_error_code;
        assert_eq!(code, 0, "AddPartitionsToTxn v{v} verify");
    }
    for v in range(&mut c, ApiKey::AddOffsetsToTxn) {
        let id = format!("offsets-{v}");
        let producer = init(&mut c, &id, init_latest);
        add_offsets(&mut c, &id, producer, v);
    }
    for v in range(&mut c, ApiKey::TxnOffsetCommit) {
        let id = format!("txn-commit-{v}");
        let (pid, epoch) = init(&mut c, &id, init_latest);
        let add_offsets_latest = latest(&mut c, ApiKey::AddOffsetsToTxn);
        add_offsets(&mut c, &id, (pid, epoch), add_offsets_latest);
        let req = TxnOffsetCommitRequest::default()
            .with_transactional_id(txn_id(id.clone()))
            .with_group_id(GroupId(StrBytes::from_static_str(group)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(name(&topic))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(v as i64)])]);
        let r: TxnOffsetCommitResponse = c.roundtrip(ApiKey::TxnOffsetCommit, v, &req);
        assert_eq!(
            r.topics[0].partitions[0].error_code, 0,
            "TxnOffsetCommit v{v}"
        );
    }
    for v in range(&mut c, ApiKey::EndTxn) {
        let id = format!("end-{v}");
        let (pid, epoch) = init(&mut c, &id, init_latest);
        add(&mut c, &id, (pid, epoch), add_latest);
        let req = EndTxnRequest::default()
            .with_transactional_id(txn_id(id.clone()))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(v % 2 == 0);
        let r: EndTxnResponse = c.roundtrip(ApiKey::EndTxn, v, &req);
        assert_eq!(r.error_code, 0, "EndTxn v{v}");
    }
    let markers_from_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for v in range(&mut c, ApiKey::WriteTxnMarkers) {
        let req =
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(producer.0))
                .with_producer_epoch(producer.1)
                .with_transaction_result(false)
                .with_coordinator_epoch(5)
                .with_topics(vec![WritableTxnMarkerTopic::default()
                    .with_name(name(&topic))
                    .with_partition_indexes(vec![0])])]);
        let r: WriteTxnMarkersResponse = c.roundtrip(ApiKey::WriteTxnMarkers, v, &req);
        let code = r.markers[0].topics[0].partitions[0].error_code;
        assert_eq!(code, 0, "WriteTxnMarkers v{v}");
    }
    for v in range(&mut c, ApiKey::DescribeTransactions) {
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![txn_id("verified".into()), txn_id("unknown".into())]);
        let r: DescribeTransactionsResponse = c.roundtrip(ApiKey::DescribeTransactions, v, &req);
        let s = &r.transaction_states[0];
        assert_eq!(
            (s.error_code, s.transaction_state.as_str(), s.producer_id.0),
            (0, "Ongoing", producer.0),
            "DescribeTransactions v{v}"
        );
        assert_eq!(s.topics[0].partitions, vec![0]);
        assert_eq!(
            r.transaction_states[1].error_code, 105,
            "TRANSACTIONAL_ID_NOT_FOUND"
        );
    }
    // The transactions' offsets are undecided: a consumer asking for
    // stable offsets is told to retry (KIP-447); one that does not gets
    // the last committed offset (none).
    for require_stable in [true, false] {
        use kafka_protocol::messages::offset_fetch_request::{
            OffsetFetchRequestGroup, OffsetFetchRequestTopics,
        };
        let req = OffsetFetchRequest::default()
            .with_require_stable(require_stable)
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(name(&topic))
                    .with_partition_indexes(vec![0])]))]);
        let r: OffsetFetchResponse = c.roundtrip(ApiKey::OffsetFetch, 8, &req);
        let p = &r.groups[0].topics[0].partitions[0];
        let expected = if require_stable { 88 } else { 0 };
        assert_eq!((p.error_code, p.committed_offset), (expected, -1));
    }
    for v in range(&mut c, ApiKey::DescribeProducers) {
        use kafka_protocol::messages::describe_producers_request::TopicRequest;
        let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(name(&topic))
            .with_partition_indexes(vec![0, 7])]);
        let r: DescribeProducersResponse = c.roundtrip(ApiKey::DescribeProducers, v, &req);
        let parts = &r.topics[0].partitions;
        assert_eq!(parts[0].error_code, 0, "DescribeProducers v{v}");
        // The marker WriteTxnMarkers wrote made `producer` known there.
        let p = parts[0]
            .active_producers
            .iter()
            .find(|p| p.producer_id.0 == producer.0)
            .expect("the marker's producer");
        assert_eq!(
            (p.producer_epoch, p.current_txn_start_offset),
            (i32::from(producer.1), -1)
        );
        // Its last write is that marker: its coordinator epoch and time.
        assert_eq!(p.coordinator_epoch, 5, "DescribeProducers v{v}");
        assert!(
            p.last_timestamp >= markers_from_ms,
            "last timestamp {} before the markers ({markers_from_ms})",
            p.last_timestamp
        );
        assert_eq!(parts[1].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    }
    for v in range(&mut c, ApiKey::ListTransactions) {
        let req = ListTransactionsRequest::default()
            .with_state_filters(vec![StrBytes::from_static_str("Ongoing")])
            .with_duration_filter(-1);
        let r: ListTransactionsResponse = c.roundtrip(ApiKey::ListTransactions, v, &req);
        assert_eq!(r.error_code, 0, "ListTransactions v{v}");
        let ids: Vec<&str> = r
            .transaction_states
            .iter()
            .map(|s| s.transactional_id.0.as_str())
            .collect();
        assert!(ids.contains(&"verified"), "ListTransactions v{v}: {ids:?}");
        assert!(!ids.contains(&"init-0"), "an Empty id is filtered out");
    }
}
