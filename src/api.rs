//! Kafka API handlers, one module per API family.
//!
//! Overview: [`handle_frame`] turns one request frame into at most one
//! response frame: parse the header, check the version against what
//! [`versions::SUPPORTED`] advertises, decode the body with the
//! `kafka-protocol` crate, dispatch, encode. Each family module follows the
//! same rhythm: decode -> check -> apply -> respond.
//!
//! Errors: malformed frames, unknown API keys and versions outside the
//! advertised range close the connection (as Kafka does), except ApiVersions,
//! which answers an unknown version with UNSUPPORTED_VERSION in the v0 layout
//! (KIP-511). Per-partition failures are Kafka error codes in the response.

pub mod acls;
pub mod admin;
pub mod cluster;
pub mod configs;
mod elect;
pub mod error;
pub mod fetch;
pub mod group;
pub mod group_offsets;
mod leader_hint;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
mod reassign;
pub mod replica_fetch;
pub mod sasl;
pub mod txn;
pub mod users;
pub mod versions;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use tracing::Instrument;

use crate::broker::Broker;
use crate::security::{Caller, Session};
use error::Code;

/// What the connection does after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response frame body.
    Reply(Bytes),
    /// Send a frame body made of these parts in order (bytes and file
    /// ranges sent with sendfile; see `zerocopy`).
    Spliced(Vec<crate::zerocopy::Part>),
    /// Send nothing (acks=0 produce).
    NoReply,
    /// Send this response frame body, then close the connection (a failed
    /// authentication).
    ReplyThenClose(Bytes),
    /// Close the connection (malformed or unsupported request).
    Close,
}

/// A response still being worked on: it resolves to what the connection
/// does next. Connections keep these in request order.
pub type Pending = futures::future::BoxFuture<'static, Outcome>;

/// What a handler returns: the response now, or a future that completes it
/// (an `acks=all` produce waiting for durability, a long-polling fetch).
/// One lives per request, briefly: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    Now(Option<ResponseKind>),
    /// The response and the file ranges its placeholders stand for (a
    /// fetch's; empty for others).
    Later(futures::future::BoxFuture<'static, (Option<ResponseKind>, FileRanges)>),
}

/// The parts of a response by placeholder index (`zerocopy`): each holds
/// at least one file range.
pub type FileRanges = Vec<(usize, Vec<crate::zerocopy::Part>)>;

fn ready(o: Outcome) -> Pending {
    Box::pin(std::future::ready(o))
}

/// Decodes and handles one request. Everything that must happen in request
/// order (appends, metadata changes) happens before this returns; the
/// returned future only waits (for durability or for data) and encodes.
/// The connection calls this for one frame at a time, so two produce
/// requests pipelined on a connection are appended in the order they came.
/// Malformed or unsupported requests, logged once per 10 s at most (any
/// client can send them at will).
static MALFORMED_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();
/// Responses that could not be encoded, logged once per 10 s at most.
static ENCODE_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();
const CLIENT_LOG_EVERY_MS: u64 = 10_000;

/// Requests refused by the session's state (before authentication, after
/// its end), logged once per 10 s at most.
static SESSION_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();
static SESSION_END_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();

/// Logs a malformed-request line at WARN when the rate limit allows.
macro_rules! malformed {
    ($($field:tt)*) => {
        if let Some(suppressed) = MALFORMED_LOG.allow(CLIENT_LOG_EVERY_MS) {
            tracing::warn!(suppressed, $($field)*);
        }
    };
}

/// `session` is the connection's: its listener, and what SASL has
/// established so far (SaslHandshake and SaslAuthenticate change it).
pub async fn handle_frame(
    broker: &Arc<Broker>,
    session: &mut Session,
    mut frame: Bytes,
) -> Pending {
    if session.raw_tokens {
        return ready(sasl::raw_token(broker, session, frame).await);
    }
    if frame.len() < 8 {
        malformed!(
            len = frame.len(),
            "request frame too short for a header; closing connection"
        );
        return ready(Outcome::Close);
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        malformed!(api_key = raw_key, "unknown api key; closing connection");
        return ready(Outcome::Close);
    };
    let Some(range) = versions::supported(api_key) else {
        malformed!(api = ?api_key, version, "api not supported; closing connection");
        return ready(Outcome::Close);
    };
    if api_key == ApiKey::ApiVersions && version > range.1 {
        return ready(versions::unsupported_version_response(correlation_id));
    }
    if !versions::accepted(api_key, version) {
        malformed!(api = ?api_key, version, "unsupported api version; closing connection");
        return ready(Outcome::Close);
    }
    if !matches!(
        api_key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    ) {
        let refused = if !session.authenticated() {
            Some((
                &SESSION_LOG,
                "request before SASL authentication; closing connection",
            ))
        } else if session.expired(std::time::Instant::now()) {
            Some((&SESSION_END_LOG, "SASL session ended without re-authentication (connections-max-reauth-ms); closing connection"))
        } else {
            None
        };
        if let Some((limiter, why)) = refused {
            if let Some(suppressed) = limiter.allow(CLIENT_LOG_EVERY_MS) {
                tracing::warn!(peer = %session.peer, listener = %session.listener.name, api = ?api_key, suppressed, "{why}");
            }
            return ready(Outcome::Close);
        }
    }
    let (header, request) = match decode_request(api_key, version, &mut frame) {
        Ok(decoded) => decoded,
        Err(part) => {
            malformed!(api = ?api_key, version, correlation_id, "malformed request {part}; closing connection");
            return ready(Outcome::Close);
        }
    };
    let caller = Caller::new(
        session,
        broker.config.authorizer.as_ref(),
        || broker.view(),
        &broker.metrics.authorization_failures,
    );
    let client_id = header.client_id.as_ref().map(|s| s.as_str()).unwrap_or("");
    let span = tracing::info_span!(
        "request",
        api = ?api_key,
        version,
        correlation_id,
        client_id,
        topic = tracing::field::Empty,
        partition = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut close_after = false;
    let handled = match request {
        RequestKind::Produce(r) => {
            produce::handle(broker, r, version, &caller)
                .instrument(span.clone())
                .await
        }
        RequestKind::SaslHandshake(r) => Handled::Now(Some(ResponseKind::SaslHandshake(
            sasl::handshake(session, r, version),
        ))),
        RequestKind::SaslAuthenticate(r) => {
            let (resp, keep) = sasl::authenticate(broker, session, r)
                .instrument(span.clone())
                .await;
            close_after = !keep;
            Handled::Now(Some(ResponseKind::SaslAuthenticate(resp)))
        }
        RequestKind::Fetch(r) => {
            let b = broker.clone();
            Handled::Later(Box::pin(
                async move {
                    let replica = replica_fetch::replica_of(&r, version);
                    if replica >= 0 {
                        let resp = replica_fetch::handle(&b, r, version, replica, &caller).await;
                        return (Some(ResponseKind::Fetch(resp)), Vec::new());
                    }
                    let (mut resp, files) = fetch::handle(&b, r, version, &caller).await;
                    leader_hint::fetch(&mut resp, &b.view(), version, &caller.listener.name);
                    (Some(ResponseKind::Fetch(resp)), files)
                }
                .instrument(span.clone()),
            ))
        }
        other => Handled::Now(
            dispatch(broker, &header, other, &caller)
                .instrument(span.clone())
                .await,
        ),
    };
    let finish = {
        let broker = broker.clone();
        move |response: Option<ResponseKind>, files: FileRanges| {
            let api = format!("{api_key:?}");
            broker
                .metrics
                .observe_request(&api, version, started.elapsed().as_secs_f64());
            match response {
                Some(r) => {
                    for code in error_codes(&r) {
                        if let Some(e) = Code::try_from_code(code) {
                            broker.metrics.observe_error(&api, &format!("{e:?}"));
                        }
                    }
                    encode_response(api_key, version, correlation_id, &r, files)
                }
                None => Outcome::NoReply,
            }
        }
    };
    match handled {
        Handled::Now(r) => ready(match finish(r, Vec::new()) {
            Outcome::Reply(b) if close_after => Outcome::ReplyThenClose(b),
            o => o,
        }),
        Handled::Later(f) => {
            // Run it now, concurrently with later requests of the connection.
            let task = tokio::spawn(async move {
                let (r, files) = f.await;
                finish(r, files)
            });
            Box::pin(async move {
                task.await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "request completion failed; closing connection");
                    Outcome::Close
                })
            })
        }
    }
}

/// Decodes a request frame's header and body for `api_key` at `version`
/// (both already checked against [`versions::SUPPORTED`]); `Err` names the
/// part that is malformed. Never panics, whatever the bytes.
pub fn decode_request(
    api_key: ApiKey,
    version: i16,
    frame: &mut Bytes,
) -> Result<(RequestHeader, RequestKind), &'static str> {
    let header_version = api_key.request_header_version(version);
    let header = decode_guarded(|| RequestHeader::decode(frame, header_version)).ok_or("header")?;
    let request = decode_guarded(|| RequestKind::decode(api_key, frame, version)).ok_or("body")?;
    Ok((header, request))
}

/// Records the topic (and partition) on the current request span when a
/// request touches exactly one. Topics are named, or from v13 of Produce and
/// Fetch identified by id.
pub fn record_target<'a>(
    view: &crate::metadata::ClusterView,
    version: i16,
    topics: impl Iterator<
        Item = (
            &'a kafka_protocol::messages::TopicName,
            uuid::Uuid,
            Vec<i32>,
        ),
    >,
) {
    let topics: Vec<_> = topics.collect();
    if let [(name, id, partitions)] = topics.as_slice() {
        let topic = if version >= 13 {
            view.topic_by_id(*id)
                .map(|t| t.name.clone())
                .unwrap_or_default()
        } else {
            name.0.to_string()
        };
        let span = tracing::Span::current();
        span.record("topic", topic.as_str());
        if let [p] = partitions.as_slice() {
            span.record("partition", *p);
        }
    }
}

/// The non-zero error codes in a response, for the error counters.
fn error_codes(r: &ResponseKind) -> Vec<i16> {
    let codes: Vec<i16> = match r {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::Fetch(r) => std::iter::once(r.error_code)
            .chain(
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            )
            .collect(),
        ResponseKind::Metadata(r) => r.topics.iter().map(|t| t.error_code).collect(),
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::CreateTopics(r) => r.topics.iter().map(|t| t.error_code).collect(),
        ResponseKind::DeleteTopics(r) => r.responses.iter().map(|t| t.error_code).collect(),
        ResponseKind::CreatePartitions(r) => r.results.iter().map(|t| t.error_code).collect(),
        ResponseKind::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::DescribeConfigs(r) => r.results.iter().map(|t| t.error_code).collect(),
        ResponseKind::AlterConfigs(r) => r.responses.iter().map(|t| t.error_code).collect(),
        ResponseKind::IncrementalAlterConfigs(r) => {
            r.responses.iter().map(|t| t.error_code).collect()
        }
        ResponseKind::InitProducerId(r) => vec![r.error_code],
        ResponseKind::AddOffsetsToTxn(r) => vec![r.error_code],
        ResponseKind::EndTxn(r) => vec![r.error_code],
        ResponseKind::AddPartitionsToTxn(r) => std::iter::once(r.error_code)
            .chain(
                r.results_by_topic_v3_and_below
                    .iter()
                    .chain(
                        r.results_by_transaction
                            .iter()
                            .flat_map(|t| t.topic_results.iter()),
                    )
                    .flat_map(|t| {
                        t.results_by_partition
                            .iter()
                            .map(|p| p.partition_error_code)
                    }),
            )
            .collect(),
        ResponseKind::TxnOffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::WriteTxnMarkers(r) => r
            .markers
            .iter()
            .flat_map(|m| m.topics.iter())
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::AlterPartitionReassignments(r) => std::iter::once(r.error_code)
            .chain(
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            )
            .collect(),
        ResponseKind::ElectLeaders(r) => std::iter::once(r.error_code)
            .chain(
                r.replica_election_results
                    .iter()
                    .flat_map(|t| t.partition_result.iter().map(|p| p.error_code)),
            )
            .collect(),
        ResponseKind::ApiVersions(r) => vec![r.error_code],
        ResponseKind::UnregisterBroker(r) => vec![r.error_code],
        ResponseKind::AddRaftVoter(r) => vec![r.error_code],
        ResponseKind::SaslHandshake(r) => vec![r.error_code],
        ResponseKind::SaslAuthenticate(r) => vec![r.error_code],
        ResponseKind::DescribeUserScramCredentials(r) => std::iter::once(r.error_code)
            .chain(r.results.iter().map(|u| u.error_code))
            .collect(),
        ResponseKind::AlterUserScramCredentials(r) => {
            r.results.iter().map(|u| u.error_code).collect()
        }
        ResponseKind::DescribeCluster(r) => vec![r.error_code],
        ResponseKind::CreateAcls(r) => r.results.iter().map(|a| a.error_code).collect(),
        ResponseKind::DescribeAcls(r) => vec![r.error_code],
        ResponseKind::DeleteAcls(r) => r
            .filter_results
            .iter()
            .map(|f| f.error_code)
            .chain(
                r.filter_results
                    .iter()
                    .flat_map(|f| f.matching_acls.iter().map(|a| a.error_code)),
            )
            .collect(),

        ResponseKind::DescribeQuorum(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .chain([r.error_code])
            .collect(),
        _ => vec![],
    };
    codes.into_iter().filter(|c| *c != 0).collect()
}

/// Runs a decoder, turning both errors and panics inside the decoder into
/// `None`: network input must never take the process down.
fn decode_guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "decode failed");
            None
        }
        Err(_) => None,
    }
}

fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    r: &ResponseKind,
    files: FileRanges,
) -> Outcome {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let hv = api_key.response_header_version(version);
    let encoded = match (r, files.is_empty()) {
        (ResponseKind::Fetch(f), false) => {
            let mut buf = crate::zerocopy::SpliceBuf::new(files);
            header
                .encode(&mut buf, hv)
                .and_then(|()| f.encode(&mut buf, version))
                .map(|()| Outcome::Spliced(buf.finish()))
        }
        _ => {
            let mut buf = BytesMut::with_capacity(256);
            header
                .encode(&mut buf, hv)
                .and_then(|()| r.encode(&mut buf, version))
                .map(|()| Outcome::Reply(buf.freeze()))
        }
    };
    encoded.unwrap_or_else(|e| {
        if let Some(suppressed) = ENCODE_LOG.allow(CLIENT_LOG_EVERY_MS) {
            tracing::error!(api = ?api_key, version, error = %e, suppressed, "cannot encode response");
        }
        Outcome::Close
    })
}

async fn dispatch(
    broker: &Broker,
    header: &RequestHeader,
    request: RequestKind,
    caller: &Caller,
) -> Option<ResponseKind> {
    let v = header.request_api_version;
    Some(match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(versions::handle(r, v)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(broker, r, v, caller).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(broker, r, v, caller).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            offsets::offset_for_leader_epoch(broker, r, v, caller),
        ),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, r, v, caller).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(broker, r, v, caller).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(broker, r, v, caller).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(admin::delete_records(broker, r, v, caller).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe(broker, r, v, caller))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(configs::alter(broker, r, v, caller).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            configs::incremental_alter(broker, r, v, caller).await,
        ),
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(cluster::describe_cluster(broker, r, v, caller))
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(cluster::describe_quorum(broker, r, v, caller).await)
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect::elect_leaders(broker, r, v, caller).await)
        }
        RequestKind::AddRaftVoter(r) => {
            ResponseKind::AddRaftVoter(cluster::add_raft_voter(broker, r, v, caller).await)
        }
        RequestKind::UnregisterBroker(r) => {
            ResponseKind::UnregisterBroker(cluster::unregister_broker(broker, r, v, caller).await)
        }
        RequestKind::AlterPartitionReassignments(r) => {
            ResponseKind::AlterPartitionReassignments(reassign::alter(broker, r, v, caller).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(reassign::list(broker, r, v, caller))
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(cluster::describe_log_dirs(broker, r, v, caller).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(producer_id::handle(broker, r, v, caller).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(group::find_coordinator(broker, r, v, caller).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(group::join_group(broker, header, r, v, caller).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(group::sync_group(broker, r, v, caller).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(group::heartbeat(broker, r, v, caller))
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(group::leave_group(broker, r, v, caller))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(group::describe_groups(broker, r, v, caller))
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(group::list_groups(broker, r, v, caller))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(group::delete_groups(broker, r, v, caller).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(group_offsets::offset_commit(broker, r, v, caller).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(group_offsets::offset_fetch(broker, r, v, caller))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions_to_txn(broker, r, v, caller).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn::add_offsets_to_txn(broker, r, v, caller).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::end_txn(broker, r, v, caller).await),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(broker, r, v, caller).await)
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(txn::write_txn_markers(broker, r, v, caller).await)
        }
        RequestKind::DescribeTransactions(r) => ResponseKind::DescribeTransactions(
            txn::describe_transactions(broker, r, v, caller).await,
        ),
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(txn::describe_producers(broker, r, v, caller))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(txn::list_transactions(broker, r, v, caller))
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(group_offsets::offset_delete(broker, r, v, caller).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(users::describe(broker, r, caller))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(users::alter(broker, r, caller).await)
        }
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(acls::create(broker, r, caller).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(acls::describe(broker, r, caller))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(acls::delete(broker, r, caller).await)
        }
        other => {
            // versions::supported() keeps us from getting here; Produce and
            // Fetch are handled in handle_frame.
            tracing::warn!(request = ?std::mem::discriminant(&other), "request with no handler");
            return None;
        }
    })
}
