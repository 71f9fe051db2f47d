//! Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups and DeleteGroups, plus the one
//! mapping from [`GroupError`] to Kafka error codes. Offsets are in
//! `group_offsets.rs`.
//!
//! Each handler decodes the request into the coordinator's types, checks
//! what Kafka checks at the API edge (group id, session timeout range),
//! calls the coordinator (`crate::group`) and shapes the response for the
//! request's version.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, RequestHeader, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::{Code, NONE};
use crate::broker::Broker;
use crate::group::state::{JoinRequest, LeavingMember, Protocol, SyncRequest};
use crate::group::GroupError;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::Caller;

/// The Kafka error code of a coordinator error.
pub fn group_error_code(e: &GroupError) -> i16 {
    let code = match e {
        GroupError::InvalidGroupId { .. } => Code::InvalidGroupId,
        GroupError::InvalidSessionTimeout { .. } => Code::InvalidSessionTimeout,
        GroupError::MemberIdRequired { .. } => Code::MemberIdRequired,
        GroupError::UnknownMemberId { .. } => Code::UnknownMemberId,
        GroupError::FencedInstanceId { .. } => Code::FencedInstanceId,
        GroupError::IllegalGeneration { .. } => Code::IllegalGeneration,
        GroupError::RebalanceInProgress { .. } => Code::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol { .. } => Code::InconsistentGroupProtocol,
        GroupError::CoordinatorNotAvailable { .. } => Code::CoordinatorNotAvailable,
        GroupError::NotCoordinator => Code::NotCoordinator,
        GroupError::LoadInProgress => Code::CoordinatorLoadInProgress,
        GroupError::GroupIdNotFound { .. } => Code::GroupIdNotFound,
        GroupError::NonEmptyGroup { .. } => Code::NonEmptyGroup,
        GroupError::SubscribedToTopic { .. } => Code::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge { .. } => Code::OffsetMetadataTooLarge,
        GroupError::UnknownTopicOrPartition { .. } => Code::UnknownTopicOrPartition,
        GroupError::CommitTooLarge { .. } => Code::InvalidCommitOffsetSize,
        // Kafka: a storage failure of the offsets partition means "find
        // the coordinator again"; a missing topic or a slow fsync means
        // "retry later".
        GroupError::Storage { .. } => Code::NotCoordinator,
        GroupError::OffsetsTopicUnavailable { .. } | GroupError::Timeout { .. } => {
            Code::CoordinatorNotAvailable
        }
    };
    code.code()
}

/// Logs a coordinator failure where it is handled: storage trouble at warn,
/// the protocol's normal answers (rejoin, fenced, ...) at debug.
pub(super) fn log_error(api: &str, group: &str, e: &GroupError) {
    match e {
        GroupError::Storage { .. }
        | GroupError::OffsetsTopicUnavailable { .. }
        | GroupError::Timeout { .. }
        | GroupError::CommitTooLarge { .. } => {
            tracing::warn!(api, group, error = %e, "group request failed")
        }
        _ => tracing::debug!(api, group, error = %e, "group request refused"),
    }
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn opt_s(v: Option<String>) -> Option<StrBytes> {
    v.map(StrBytes::from_string)
}

// ----- FindCoordinator -----------------------------------------------------

/// Key type 0 (group) and 1 (transaction) are answered with this node, the
/// coordinator of everything on a single node (a transactional producer then
/// gets InitProducerId's own refusal); 2 (share groups) is not supported.
pub async fn find_coordinator(
    broker: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
    caller: &Caller,
) -> FindCoordinatorResponse {
    let listener = caller.listener.name.as_str();
    let keys: Vec<String> = if version >= 4 {
        req.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![req.key.to_string()]
    };
    // A group's coordinator leads the group's partition of the offsets
    // topic, a transactional id's the id's partition of the transaction
    // state topic; the first FindCoordinator creates the topic.
    let offsets_topic = if req.key_type == 0 {
        broker
            .groups
            .prepare(broker)
            .await
            .map_err(|e| e.to_string())
    } else if req.key_type == 1 {
        <Broker as crate::txn::TxnHost>::ensure_topic(broker)
            .await
            .map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    let answer = |key: &str| -> Result<(i32, String, i32), (i16, Option<String>)> {
        if req.key_type != 0 && req.key_type != 1 {
            return Err((
                Code::InvalidRequest.code(),
                Some(format!(
                    "unsupported coordinator key type. key_type={}",
                    req.key_type
                )),
            ));
        }
        let (rt, refused) = if req.key_type == 0 {
            (ResourceType::Group, Code::GroupAuthorizationFailed)
        } else {
            (
                ResourceType::TransactionalId,
                Code::TransactionalIdAuthorizationFailed,
            )
        };
        if !caller.allows(Operation::Describe, rt, key) {
            return Err((
                refused.code(),
                Some(caller.denied_message(Operation::Describe, rt, key)),
            ));
        }
        if let Err(e) = &offsets_topic {
            return Err((Code::CoordinatorNotAvailable.code(), Some(e.clone())));
        }
        if req.key_type == 1 {
            return broker
                .txn_coordinator(key)
                .and_then(|b| {
                    b.endpoint(listener)
                        .map(|(host, port)| (b.node_id, host, port))
                })
                .ok_or((Code::CoordinatorNotAvailable.code(), None));
        }
        match broker.group_coordinator(key) {
            Some(b)
                if b.node_id == broker.node_id()
                    && matches!(
                        broker.groups.serving(key),
                        Err(crate::group::GroupError::LoadInProgress)
                    ) =>
            {
                Err((Code::CoordinatorLoadInProgress.code(), None))
            }
            Some(b) => b
                .endpoint(listener)
                .map(|(host, port)| (b.node_id, host, port))
                .ok_or((Code::CoordinatorNotAvailable.code(), None)),
            None => Err((Code::CoordinatorNotAvailable.code(), None)),
        }
    };
    let entry = |key: &str| match answer(key) {
        Ok((node, host, port)) => (NONE, None, node, host, port),
        Err((code, msg)) => (code, msg, -1, String::new(), -1),
    };
    if version >= 4 {
        let coordinators = keys
            .iter()
            .map(|key| {
                let (code, msg, node, host, port) = entry(key);
                CoordinatorEntry::default()
                    .with_key(s(key.clone()))
                    .with_node_id(BrokerId(node))
                    .with_host(s(host))
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(opt_s(msg))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, msg, node, host, port) = entry(&keys[0]);
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(if version >= 1 { opt_s(msg) } else { None })
        .with_node_id(BrokerId(node))
        .with_host(s(host))
        .with_port(port)
}

/// Joining, syncing, heartbeating and leaving take READ on the group.
fn may_read_group(caller: &Caller, group: &str) -> bool {
    caller.allows(Operation::Read, ResourceType::Group, group)
}

// ----- JoinGroup -----------------------------------------------------------

fn join_error(version: i16, member_id: String, e: &GroupError) -> JoinGroupResponse {
    let member_id = match e {
        GroupError::MemberIdRequired { member_id } => member_id.clone(),
        _ => member_id,
    };
    JoinGroupResponse::default()
        .with_error_code(group_error_code(e))
        .with_generation_id(-1)
        .with_protocol_type(None)
        .with_protocol_name(if version >= 7 { None } else { Some(s("")) })
        .with_leader(s(""))
        .with_member_id(s(member_id))
}

pub async fn join_group(
    broker: &Broker,
    header: &RequestHeader,
    req: JoinGroupRequest,
    version: i16,
    caller: &Caller,
) -> JoinGroupResponse {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    if group_id.is_empty() {
        let e = GroupError::InvalidGroupId { group: group_id };
        return join_error(version, member_id, &e);
    }
    if !may_read_group(caller, &group_id) {
        return JoinGroupResponse::default()
            .with_error_code(Code::GroupAuthorizationFailed.code())
            .with_generation_id(-1)
            .with_protocol_name(if version >= 7 { None } else { Some(s("")) })
            .with_member_id(s(member_id));
    }
    let client_id = header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let instance_id = req.group_instance_id.as_ref().map(|i| i.to_string());
    let prefix = instance_id.clone().unwrap_or_else(|| client_id.clone());
    let join = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: instance_id,
        client_id,
        client_host: format!("/{}", caller.peer),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
        new_member_id: format!("{prefix}-{}", uuid::Uuid::new_v4()),
    };
    match broker.groups.join(broker, &group_id, join).await {
        Ok(r) => {
            let members = r
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(opt_s(m.group_instance_id))
                        .with_metadata(m.metadata)
                })
                .collect();
            let protocol_name = match r.protocol_name {
                Some(p) => Some(s(p)),
                None if version < 7 => Some(s("")),
                None => None,
            };
            JoinGroupResponse::default()
                .with_generation_id(r.generation_id)
                .with_protocol_type(opt_s(r.protocol_type))
                .with_protocol_name(protocol_name)
                .with_leader(s(r.leader))
                .with_skip_assignment(r.skip_assignment)
                .with_member_id(s(r.member_id))
                .with_members(members)
        }
        Err(e) => {
            log_error("JoinGroup", &group_id, &e);
            join_error(version, member_id, &e)
        }
    }
}

// ----- SyncGroup -----------------------------------------------------------

pub async fn sync_group(
    broker: &Broker,
    req: SyncGroupRequest,
    version: i16,
    caller: &Caller,
) -> SyncGroupResponse {
    let group_id = req.group_id.0.to_string();
    if !may_read_group(caller, &group_id) {
        return SyncGroupResponse::default().with_error_code(Code::GroupAuthorizationFailed.code());
    }
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        generation_id: req.generation_id,
        protocol_type: req.protocol_type.map(|p| p.to_string()),
        protocol_name: req.protocol_name.map(|p| p.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    if group_id.is_empty() {
        let e = GroupError::InvalidGroupId { group: group_id };
        return SyncGroupResponse::default().with_error_code(group_error_code(&e));
    }
    match broker.groups.sync(broker, &group_id, sync).await {
        Ok(r) => SyncGroupResponse::default()
            .with_protocol_type(if version >= 5 {
                opt_s(r.protocol_type)
            } else {
                None
            })
            .with_protocol_name(if version >= 5 {
                opt_s(r.protocol_name)
            } else {
                None
            })
            .with_assignment(r.assignment),
        Err(e) => {
            log_error("SyncGroup", &group_id, &e);
            SyncGroupResponse::default().with_error_code(group_error_code(&e))
        }
    }
}

// ----- Heartbeat and LeaveGroup ------------------------------------------

pub fn heartbeat(
    broker: &Broker,
    req: HeartbeatRequest,
    _version: i16,
    caller: &Caller,
) -> HeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    if !may_read_group(caller, &group_id) {
        return HeartbeatResponse::default().with_error_code(Code::GroupAuthorizationFailed.code());
    }
    let result = if group_id.is_empty() {
        Err(GroupError::InvalidGroupId {
            group: group_id.clone(),
        })
    } else {
        broker.groups.heartbeat(
            &group_id,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|i| i.as_str()),
            req.generation_id,
        )
    };
    match result {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => {
            log_error("Heartbeat", &group_id, &e);
            HeartbeatResponse::default().with_error_code(group_error_code(&e))
        }
    }
}

pub fn leave_group(
    broker: &Broker,
    req: LeaveGroupRequest,
    version: i16,
    caller: &Caller,
) -> LeaveGroupResponse {
    let group_id = req.group_id.0.to_string();
    if !may_read_group(caller, &group_id) {
        return LeaveGroupResponse::default()
            .with_error_code(Code::GroupAuthorizationFailed.code());
    }
    let leaving: Vec<LeavingMember> = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let result = if group_id.is_empty() {
        Err(GroupError::InvalidGroupId {
            group: group_id.clone(),
        })
    } else {
        broker.groups.leave(broker, &group_id, &leaving)
    };
    let results = match result {
        Ok(r) => r,
        Err(e) => {
            log_error("LeaveGroup", &group_id, &e);
            return LeaveGroupResponse::default().with_error_code(group_error_code(&e));
        }
    };
    let codes: Vec<i16> = results
        .iter()
        .map(|r| match r {
            Ok(()) => NONE,
            Err(e) => {
                log_error("LeaveGroup", &group_id, e);
                group_error_code(e)
            }
        })
        .collect();
    if version < 3 {
        // One member: its error is the request's.
        return LeaveGroupResponse::default()
            .with_error_code(codes.first().copied().unwrap_or(NONE));
    }
    let members = leaving
        .into_iter()
        .zip(codes)
        .map(|(l, code)| {
            MemberResponse::default()
                .with_member_id(s(l.member_id))
                .with_group_instance_id(opt_s(l.group_instance_id))
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

// ----- DescribeGroups, ListGroups, DeleteGroups ---------------------------

pub fn describe_groups(
    broker: &Broker,
    req: DescribeGroupsRequest,
    version: i16,
    caller: &Caller,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            let id = gid.0.to_string();
            let ops = super::metadata::authorized_operations(
                caller,
                version >= 3 && req.include_authorized_operations,
                ResourceType::Group,
                &id,
                super::acls::GROUP_OPERATIONS,
            );
            let base = DescribedGroup::default()
                .with_group_id(gid)
                .with_authorized_operations(ops);
            if !caller.allows(Operation::Describe, ResourceType::Group, &id) {
                return base
                    .with_authorized_operations(i32::MIN)
                    .with_error_code(Code::GroupAuthorizationFailed.code());
            }
            match broker.groups.describe(&id) {
                Ok(Some(d)) => {
                    let members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(opt_s(m.group_instance_id))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect();
                    base.with_group_state(s(d.state.as_str()))
                        .with_protocol_type(s(d.protocol_type))
                        .with_protocol_data(s(d.protocol_data))
                        .with_members(members)
                }
                // v6 (KIP-1043) says GROUP_ID_NOT_FOUND; older versions
                // describe a missing group as Dead.
                Ok(None) if version >= 6 => {
                    let e = GroupError::GroupIdNotFound { group: id };
                    base.with_error_code(group_error_code(&e))
                        .with_error_message(Some(s(e.to_string())))
                        .with_group_state(s("Dead"))
                }
                Ok(None) => base.with_group_state(s("Dead")),
                Err(e) => base
                    .with_error_code(group_error_code(&e))
                    .with_error_message(if version >= 6 {
                        Some(s(e.to_string()))
                    } else {
                        None
                    }),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// With DESCRIBE on the cluster every group is listed; otherwise those the
/// caller may DESCRIBE.
pub fn list_groups(
    broker: &Broker,
    req: ListGroupsRequest,
    version: i16,
    caller: &Caller,
) -> ListGroupsResponse {
    let all = caller.may_see(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME);
    let listing = match broker.groups.list() {
        Ok(l) => l,
        Err(e) => return ListGroupsResponse::default().with_error_code(group_error_code(&e)),
    };
    let states: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(|s| s.to_lowercase()).collect()
    } else {
        Vec::new()
    };
    // Every group here is a classic group (KIP-848 "consumer" groups do not
    // exist in Strata).
    let classic_wanted = version < 5
        || req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let groups = listing
        .into_iter()
        .filter(|_| classic_wanted)
        .filter(|g| all || caller.may_see(Operation::Describe, ResourceType::Group, &g.group_id))
        .filter(|g| states.is_empty() || states.contains(&g.state.as_str().to_lowercase()))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(s(g.group_id)))
                .with_protocol_type(s(g.protocol_type))
                .with_group_state(s(g.state.as_str()))
                .with_group_type(s("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    broker: &Broker,
    req: DeleteGroupsRequest,
    _version: i16,
    caller: &Caller,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for gid in req.groups_names {
        let id = gid.0.to_string();
        let code = if !caller.allows(Operation::Delete, ResourceType::Group, &id) {
            Err(Code::GroupAuthorizationFailed.code())
        } else {
            broker.groups.delete_group(broker, &id).await.map_err(|e| {
                log_error("DeleteGroups", &id, &e);
                group_error_code(&e)
            })
        };
        let code = match code {
            Ok(()) => {
                tracing::info!(group = %id, "group deleted");
                NONE
            }
            Err(code) => code,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(gid)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
