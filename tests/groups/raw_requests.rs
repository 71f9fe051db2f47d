//! Exact error codes and every advertised version, with raw frames.

use std::time::Duration;

use crate::common::groups::requests::*;
use crate::common::groups::{start_broker, wait_until};
use crate::common::raw::RawConn;
use crate::common::{self, clients};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;

#[test]
fn group_bad_requests_get_kafka_error_codes_and_the_coordinator_keeps_serving() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-raw");
    clients::create_topic(&bs, &topic, 1, &[]);
    let mut conn = RawConn::connect(&bs);
    let group = common::topic_name("g-raw");

    // JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED.
    let r = join(&mut conn, 4, &join_req(&group, "", "range"));
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
    assert!(!r.member_id.is_empty());
    // Session timeout out of range; empty group id.
    let mut bad = join_req(&group, "", "range");
    bad.session_timeout_ms = 10;
    assert_eq!(join(&mut conn, 5, &bad).error_code, INVALID_SESSION_TIMEOUT);
    assert_eq!(
        join(&mut conn, 5, &join_req("", "", "range")).error_code,
        INVALID_GROUP_ID
    );

    let (member, generation) = join_alone(&mut conn, &group, None);
    assert_eq!(generation, 1);
    // Unknown protocols and a different protocol type are inconsistent.
    let r = join(&mut conn, 5, &join_req(&group, "", "no-such-assignor"));
    assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
    let mut other_type = join_req(&group, "", "range");
    other_type.protocol_type = s("connect");
    assert_eq!(
        join(&mut conn, 5, &other_type).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    // Unknown members.
    assert_eq!(
        join(&mut conn, 5, &join_req(&group, "ghost", "range")).error_code,
        UNKNOWN_MEMBER_ID
    );
    let hb = |member: &str, generation: i32| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_member_id(s(member))
            .with_generation_id(generation)
    };
    let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, 4, &hb(&member, generation));
    assert_eq!(r.error_code, NONE);
    let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, 4, &hb("ghost", generation));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
    // Stale generations.
    let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, 4, &hb(&member, generation - 1));
    assert_eq!(r.error_code, ILLEGAL_GENERATION);
    let stale_sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_generation_id(generation + 7)
        .with_member_id(s(&member));
    let r: SyncGroupResponse = conn.roundtrip(ApiKey::SyncGroup, 5, &stale_sync);
    assert_eq!(r.error_code, ILLEGAL_GENERATION);
    assert_eq!(
        commit_code(
            &mut conn,
            8,
            &commit_req(&group, &member, generation + 1, &topic, "")
        ),
        ILLEGAL_GENERATION
    );
    // A group with members takes commits from members only.
    assert_eq!(
        commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
        UNKNOWN_MEMBER_ID
    );
    // Oversized metadata, unknown topics.
    let big = "x".repeat(5000);
    assert_eq!(
        commit_code(
            &mut conn,
            8,
            &commit_req(&group, &member, generation, &topic, &big)
        ),
        OFFSET_METADATA_TOO_LARGE
    );
    assert_eq!(
        commit_code(
            &mut conn,
            8,
            &commit_req(&group, &member, generation, "no-such-topic", "")
        ),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        commit_code(
            &mut conn,
            8,
            &commit_req(&group, &member, generation, &topic, "ok")
        ),
        NONE
    );
    // A group that does not exist does not take generation-bound commits.
    assert_eq!(
        commit_code(
            &mut conn,
            8,
            &commit_req("never-joined", "m", 3, &topic, "")
        ),
        ILLEGAL_GENERATION
    );
    // A member with huge protocol metadata still gets an answer.
    let mut huge = join_req(&common::topic_name("g-huge"), "", "range");
    huge.protocols[0].metadata = bytes::Bytes::from(vec![7u8; 2 << 20]);
    let r = join(&mut conn, 3, &huge);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.members[0].metadata.len(), 2 << 20);

    // Delete: not while it has members; offsets of a consumed topic stay.
    let del: DeleteGroupsResponse = conn.roundtrip(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(s(&group)), GroupId(s("nope"))]),
    );
    assert_eq!(del.results[0].error_code, NON_EMPTY_GROUP);
    assert_eq!(del.results[1].error_code, GROUP_ID_NOT_FOUND);
    let od: OffsetDeleteResponse = conn.roundtrip(
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("nope")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s(&topic)))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]),
    );
    assert_eq!(od.error_code, GROUP_ID_NOT_FOUND);

    // Static members: a second instance with the same id fences the first.
    let sgroup = common::topic_name("g-raw-static");
    let (m1, g1) = join_alone(&mut conn, &sgroup, Some("inst"));
    let (m2, g2) = join_alone(&mut conn, &sgroup, Some("inst"));
    assert_ne!(m1, m2);
    assert_eq!(g1, g2, "a static rejoin does not start a new generation");
    let r: HeartbeatResponse = conn.roundtrip(
        ApiKey::Heartbeat,
        4,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s(&sgroup)))
            .with_member_id(s(&m1))
            .with_group_instance_id(Some(s("inst")))
            .with_generation_id(g1),
    );
    assert_eq!(r.error_code, FENCED_INSTANCE_ID);

    // Leave: the group empties and can be deleted.
    let lr: LeaveGroupResponse = conn.roundtrip(
        ApiKey::LeaveGroup,
        5,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&member)),
                MemberIdentity::default().with_member_id(s("ghost")),
            ]),
    );
    assert_eq!(lr.error_code, NONE);
    assert_eq!(lr.members[0].error_code, NONE);
    assert_eq!(lr.members[1].error_code, UNKNOWN_MEMBER_ID);
    let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, 4, &hb(&member, generation));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
    let fetched: OffsetFetchResponse = conn.roundtrip(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(&topic)))
                .with_partition_indexes(vec![0])])),
    );
    let p = &fetched.topics[0].partitions[0];
    assert_eq!((p.committed_offset, p.metadata.as_deref()), (5, Some("ok")));
    let del: DeleteGroupsResponse = conn.roundtrip(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]),
    );
    assert_eq!(del.results[0].error_code, NONE);

    // The coordinator still serves other groups.
    let (_, g) = join_alone(&mut conn, &common::topic_name("g-after"), None);
    assert_eq!(g, 1);
    broker.assert_no_error_logs();
}

#[test]
fn group_offsets_of_a_deleted_topic_are_removed() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-deleted");
    clients::create_topic(&bs, &topic, 1, &[]);
    let mut conn = RawConn::connect(&bs);
    let group = common::topic_name("g-deleted");
    assert_eq!(
        commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
        NONE
    );
    assert_eq!(fetch_offset(&mut conn, &group, &topic), 5);
    let admin = clients::admin(&bs);
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(clients::OP_TIMEOUT));
    for r in clients::block_on(admin.delete_topics(&[&topic], &opts)).expect("delete topics") {
        r.expect("topic deleted");
    }
    // A topic of the same name starts without the old group's offsets.
    clients::create_topic(&bs, &topic, 1, &[]);
    wait_until("the old offset to go", Duration::from_secs(10), || {
        fetch_offset(&mut conn, &group, &topic) == -1
    });
    broker.assert_no_error_logs();
}

#[test]
fn group_every_advertised_version_is_answered() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-versions");
    clients::create_topic(&bs, &topic, 1, &[]);
    let mut conn = RawConn::connect(&bs);
    let range = |conn: &mut RawConn, key: ApiKey| {
        let r = conn
            .version_range(key)
            .unwrap_or_else(|| panic!("{key:?} not advertised"));
        r.min_version..=r.max_version
    };
    for v in range(&mut conn, ApiKey::FindCoordinator) {
        let req = if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")])
        } else {
            FindCoordinatorRequest::default().with_key(s("g"))
        };
        let r: FindCoordinatorResponse = conn.roundtrip(ApiKey::FindCoordinator, v, &req);
        if v >= 4 {
            assert_eq!(r.coordinators.len(), 2);
            assert!(r
                .coordinators
                .iter()
                .all(|c| c.error_code == NONE && c.node_id.0 >= 0));
        } else {
            assert_eq!((r.error_code, r.port > 0), (NONE, true), "v{v}");
        }
    }
    for v in range(&mut conn, ApiKey::JoinGroup) {
        let group = format!("{}-v{v}", common::topic_name("g-join"));
        let mut req = join_req(&group, "", "range");
        req.group_instance_id = (v >= 5).then(|| s("static"));
        let mut r = join(&mut conn, v, &req);
        if v == 4 {
            assert_eq!(r.error_code, MEMBER_ID_REQUIRED, "JoinGroup v4");
            req.member_id = r.member_id.clone();
            r = join(&mut conn, v, &req);
        }
        assert_eq!(r.error_code, NONE, "JoinGroup v{v}");
        let member = r.member_id.to_string();
        let gen = r.generation_id;
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(gen)
            .with_member_id(s(&member))
            .with_group_instance_id(req.group_instance_id.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(bytes::Bytes::from_static(b"a"))]);
        let sv = v.min(5);
        let r: SyncGroupResponse = conn.roundtrip(ApiKey::SyncGroup, sv, &sync);
        assert_eq!(r.error_code, NONE, "SyncGroup v{sv}");
        let hv = v.min(4);
        let hb = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_member_id(s(&member))
            .with_group_instance_id(if hv >= 3 {
                req.group_instance_id.clone()
            } else {
                None
            })
            .with_generation_id(gen);
        let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, hv, &hb);
        assert_eq!(r.error_code, NONE, "Heartbeat v{hv}");
        let lv = v.min(5);
        let leave = if lv >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_members(vec![MemberIdentity::default()
                    .with_member_id(s(&member))
                    .with_group_instance_id(req.group_instance_id.clone())])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(&member))
        };
        let r: LeaveGroupResponse = conn.roundtrip(ApiKey::LeaveGroup, lv, &leave);
        assert_eq!(r.error_code, NONE, "LeaveGroup v{lv}");
        if lv >= 3 {
            assert_eq!(r.members[0].error_code, NONE);
        }
    }
    for v in range(&mut conn, ApiKey::OffsetCommit) {
        let group = format!("{}-v{v}", common::topic_name("g-commit"));
        let code = commit_code(
            &mut conn,
            v,
            &commit_req(&group, "", -1, &topic, &format!("v{v}")),
        );
        assert_eq!(code, NONE, "OffsetCommit v{v}");
        for fv in range(&mut conn, ApiKey::OffsetFetch) {
            let req = if fv >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_member_epoch(-1)
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partition_indexes(vec![0])]))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partition_indexes(vec![0])]))
            };
            let r: OffsetFetchResponse = conn.roundtrip(ApiKey::OffsetFetch, fv, &req);
            let (offset, metadata) = if fv >= 8 {
                let p = &r.groups[0].topics[0].partitions[0];
                (p.committed_offset, p.metadata.clone())
            } else {
                let p = &r.topics[0].partitions[0];
                (p.committed_offset, p.metadata.clone())
            };
            assert_eq!(offset, 5, "OffsetFetch v{fv} after OffsetCommit v{v}");
            assert_eq!(metadata.as_deref(), Some(format!("v{v}").as_str()));
        }
    }
    for v in range(&mut conn, ApiKey::DescribeGroups) {
        let r: DescribeGroupsResponse = conn.roundtrip(
            ApiKey::DescribeGroups,
            v,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("missing"))]),
        );
        let want = if v >= 6 { GROUP_ID_NOT_FOUND } else { NONE };
        assert_eq!(r.groups[0].error_code, want, "DescribeGroups v{v}");
        assert_eq!(r.groups[0].group_state.as_str(), "Dead");
    }
    for v in range(&mut conn, ApiKey::ListGroups) {
        let req = ListGroupsRequest::default().with_states_filter(if v >= 4 {
            vec![s("empty")]
        } else {
            vec![]
        });
        let r: ListGroupsResponse = conn.roundtrip(ApiKey::ListGroups, v, &req);
        assert_eq!(r.error_code, NONE);
        assert!(r.groups.len() >= 2, "ListGroups v{v}: {}", r.groups.len());
    }
    for v in range(&mut conn, ApiKey::DeleteGroups) {
        let group = format!("{}-v{v}", common::topic_name("g-del"));
        assert_eq!(
            commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
            NONE
        );
        let r: DeleteGroupsResponse = conn.roundtrip(
            ApiKey::DeleteGroups,
            v,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]),
        );
        assert_eq!(r.results[0].error_code, NONE, "DeleteGroups v{v}");
    }
    let group = common::topic_name("g-odel");
    assert_eq!(
        commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
        NONE
    );
    for v in range(&mut conn, ApiKey::OffsetDelete) {
        let r: OffsetDeleteResponse = conn.roundtrip(
            ApiKey::OffsetDelete,
            v,
            &OffsetDeleteRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s(&topic)))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ])]),
        );
        assert_eq!(r.error_code, NONE);
        assert_eq!(
            r.topics[0].partitions[0].error_code, NONE,
            "OffsetDelete v{v}"
        );
    }
    broker.assert_no_error_logs();
}
