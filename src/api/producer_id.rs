//! InitProducerId for idempotent producers.
//!
//! Every call without a transactional id gets a fresh producer id with epoch
//! 0, taken from a block the controller allocated to this broker, as Kafka
//! does. Transactional ids are refused with UNSUPPORTED_VERSION (the
//! feature is missing, not a permission) until transactions exist. With
//! the ACL authorizer an idempotent producer needs IDEMPOTENT_WRITE on the
//! cluster or WRITE on some topic (KIP-679).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::error::Code;
use crate::broker::Broker;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Caller;

pub async fn handle(
    broker: &Broker,
    req: InitProducerIdRequest,
    _version: i16,
    caller: &Caller,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        tracing::info!(
            "InitProducerId with a transactional id refused: transactions are not supported yet"
        );
        return resp.with_error_code(Code::UnsupportedVersion.code());
    }
    if !caller.allows_cluster(Operation::IdempotentWrite)
        && !caller.allows_any(Operation::Write, ResourceType::Topic)
    {
        return resp.with_error_code(Code::ClusterAuthorizationFailed.code());
    }
    match broker.next_producer_id().await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(error = %e, "producer id allocation failed");
            resp.with_error_code(Code::CoordinatorNotAvailable.code())
        }
    }
}
