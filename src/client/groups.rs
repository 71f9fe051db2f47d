//! Consumer groups, read side: FindCoordinator, ListGroups, DescribeGroups,
//! OffsetFetch. Group requests go to the group's coordinator.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};

use super::error::{self, ClientError, KafkaCode};
use super::{BrokerInfo, Client, Connection};

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// Reported by brokers speaking ListGroups v4+.
    pub state: Option<String>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignor (`range`, `roundrobin`, ...) for consumer groups.
    pub protocol: String,
    pub members: Vec<GroupMember>,
    pub coordinator: BrokerInfo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded when the group uses the consumer protocol.
    pub assignment: Vec<MemberAssignment>,
}

/// Partitions of one topic assigned to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub metadata: Option<String>,
}

/// Key type of a consumer group in FindCoordinator.
const GROUP_KEY: i8 = 0;
/// Tries for FindCoordinator while the coordinator is loading or moving.
const COORDINATOR_ATTEMPTS: usize = 10;
const COORDINATOR_BACKOFF: Duration = Duration::from_millis(200);

impl Client {
    /// The broker coordinating `group`; retried while the coordinator is
    /// loading or not yet available.
    pub async fn find_coordinator(&self, group: &str) -> Result<BrokerInfo, ClientError> {
        self.find_coordinator_of(group, GROUP_KEY).await
    }

    /// The broker coordinating `key` of `key_type` (0 a group, 1 a
    /// transactional id); retried while it is loading or not available.
    pub(super) async fn find_coordinator_of(
        &self,
        key: &str,
        key_type: i8,
    ) -> Result<BrokerInfo, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.find_coordinator_once(key, key_type).await {
                Err(e) if e.is_retriable() && attempt < COORDINATOR_ATTEMPTS => {
                    tokio::time::sleep(COORDINATOR_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    async fn find_coordinator_once(
        &self,
        group: &str,
        key_type: i8,
    ) -> Result<BrokerInfo, ClientError> {
        let conn = self.any_conn().await?;
        let version = conn.version::<FindCoordinatorRequest>()?;
        let key = StrBytes::from_string(group.to_owned());
        let mut req = FindCoordinatorRequest::default();
        if version >= 4 {
            req = req.with_coordinator_keys(vec![key]);
        } else {
            req = req.with_key(key);
        }
        if version >= 1 {
            req = req.with_key_type(key_type);
        }
        let resp = conn
            .send_version(&req, version, self.options.request_timeout)
            .await?;
        let what = if key_type == GROUP_KEY {
            "group"
        } else {
            "transactional_id"
        };
        let resource = || format!("{what}={group}");
        let (code, message, node_id, host, port) = if version >= 4 {
            let c = resp
                .coordinators
                .into_iter()
                .find(|c| c.key.as_str() == group)
                .ok_or_else(|| ClientError::Protocol {
                    what: format!("find coordinator response lacks group={group}"),
                    addr: conn.addr().to_owned(),
                })?;
            (c.error_code, c.error_message, c.node_id.0, c.host, c.port)
        } else {
            (
                resp.error_code,
                resp.error_message,
                resp.node_id.0,
                resp.host,
                resp.port,
            )
        };
        error::check(code, "find coordinator", resource, message.as_deref())?;
        let info = BrokerInfo {
            node_id,
            host: host.as_str().to_owned(),
            port,
            rack: None,
        };
        self.lock().nodes.insert(node_id, info.addr());
        Ok(info)
    }

    async fn coordinator_conn(
        &self,
        group: &str,
    ) -> Result<(BrokerInfo, Arc<Connection>), ClientError> {
        let node = self.find_coordinator(group).await?;
        let conn = self.conn_to(&node.addr()).await?;
        Ok((node, conn))
    }

    /// Every group on every broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let mut out = Vec::new();
        for node in self.broker_ids().await? {
            let conn = self.node_conn(node).await?;
            let version = conn.version::<ListGroupsRequest>()?;
            let resp = conn
                .send_version(
                    &ListGroupsRequest::default(),
                    version,
                    self.options.request_timeout,
                )
                .await?;
            error::check(
                resp.error_code,
                "list groups",
                || format!("broker={node}"),
                None,
            )?;
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.as_str().to_owned(),
                protocol_type: g.protocol_type.as_str().to_owned(),
                state: (version >= 4).then(|| g.group_state.as_str().to_owned()),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// Describe one group (state `Dead` if it does not exist, as Kafka says).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let (coordinator, conn) = self.coordinator_conn(group).await?;
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
        let resp = conn.send(&req).await?;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| ClientError::Protocol {
                what: format!("describe groups response lacks group={group}"),
                addr: conn.addr().to_owned(),
            })?;
        error::check(
            g.error_code,
            "describe group",
            || format!("group={group}"),
            g.error_message.as_deref(),
        )?;
        let consumer = g.protocol_type.as_str() == "consumer";
        let members = g
            .members
            .into_iter()
            .map(|m| GroupMember {
                member_id: m.member_id.as_str().to_owned(),
                group_instance_id: m.group_instance_id.map(|s| s.as_str().to_owned()),
                client_id: m.client_id.as_str().to_owned(),
                client_host: m.client_host.as_str().to_owned(),
                assignment: if consumer {
                    decode_assignment(m.member_assignment).unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.as_str().to_owned(),
            protocol_type: g.protocol_type.as_str().to_owned(),
            protocol: g.protocol_data.as_str().to_owned(),
            members,
            coordinator,
        })
    }

    /// Every offset `group` has committed, sorted by topic and partition.
    pub async fn offset_fetch(&self, group: &str) -> Result<Vec<CommittedOffset>, ClientError> {
        let (_, conn) = self.coordinator_conn(group).await?;
        let version = conn.version::<OffsetFetchRequest>()?;
        let group_id = GroupId(StrBytes::from_string(group.to_owned()));
        let req = if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id)
                .with_topics(None)])
        } else {
            // v2+: null topics means every committed partition.
            OffsetFetchRequest::default()
                .with_group_id(group_id)
                .with_topics(None)
        };
        let resp = conn
            .send_version(&req, version, self.options.request_timeout)
            .await?;
        let resource = || format!("group={group}");
        let mut out = Vec::new();
        let mut push =
            |topic: &str, partition: i32, offset: i64, metadata: Option<StrBytes>, code: i16| {
                if let Some(code) = KafkaCode::from_code(code) {
                    return Err(ClientError::kafka(
                        "offset fetch",
                        format!("group={group}, topic={topic}, partition={partition}"),
                        code,
                        None,
                    ));
                }
                out.push(CommittedOffset {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    metadata: metadata.map(|m| m.as_str().to_owned()),
                });
                Ok(())
            };
        if version >= 8 {
            let g = resp
                .groups
                .into_iter()
                .find(|g| g.group_id.0.as_str() == group)
                .ok_or_else(|| ClientError::Protocol {
                    what: format!("offset fetch response lacks group={group}"),
                    addr: conn.addr().to_owned(),
                })?;
            error::check(g.error_code, "offset fetch", resource, None)?;
            for t in g.topics {
                for p in t.partitions {
                    push(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.metadata,
                        p.error_code,
                    )?;
                }
            }
        } else {
            error::check(resp.error_code, "offset fetch", resource, None)?;
            for t in resp.topics {
                for p in t.partitions {
                    push(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.metadata,
                        p.error_code,
                    )?;
                }
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }
}

/// A consumer-protocol assignment: i16 version, then the body. Versions
/// newer than the codec's are read as its newest (they only add fields).
fn decode_assignment(mut data: bytes::Bytes) -> Option<Vec<MemberAssignment>> {
    if data.len() < 2 {
        return None;
    }
    let version = data.get_i16().min(ConsumerProtocolAssignment::VERSIONS.max);
    let a = ConsumerProtocolAssignment::decode(&mut data, version).ok()?;
    Some(
        a.assigned_partitions
            .into_iter()
            .map(|tp| MemberAssignment {
                topic: tp.topic.0.as_str().to_owned(),
                partitions: tp.partitions,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn consumer_assignments_decode() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![0, 2]),
        ]);
        for v in 0..=3i16 {
            let mut b = BytesMut::new();
            b.put_i16(v);
            a.encode(&mut b, v).unwrap();
            let got = decode_assignment(b.freeze()).unwrap();
            assert_eq!(
                got,
                vec![MemberAssignment {
                    topic: "orders".into(),
                    partitions: vec![0, 2]
                }]
            );
        }
        assert_eq!(decode_assignment(bytes::Bytes::new()), None);
    }
}
