//! InitProducerId for idempotent and transactional producers.
//!
//! Without a transactional id every call gets a fresh producer id with
//! epoch 0, taken from a block the controller allocated to this broker, as
//! Kafka does. With the ACL authorizer an idempotent producer needs
//! IDEMPOTENT_WRITE on the cluster or WRITE on some topic (KIP-679). With
//! a transactional id the id's coordinator answers (`txn/`): the id's
//! producer id at a new epoch, which fences older producers of the id;
//! that needs WRITE on the transactional id.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::error::Code;
use crate::broker::Broker;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Caller;

pub async fn handle(
    broker: &Broker,
    req: InitProducerIdRequest,
    version: i16,
    caller: &Caller,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_ref().map(|i| i.0.to_string()) {
        if !caller.allows(Operation::Write, ResourceType::TransactionalId, &id) {
            return resp.with_error_code(Code::TransactionalIdAuthorizationFailed.code());
        }
        // KIP-360: a producer that had an id asks for that id's next epoch.
        let expected = (version >= 3 && req.producer_id.0 >= 0)
            .then_some((req.producer_id.0, req.producer_epoch));
        return match broker
            .txns
            .init_producer_id(broker, &id, req.transaction_timeout_ms, expected)
            .await
        {
            Ok((pid, epoch)) => resp
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(e) => {
                tracing::debug!(transactional_id = %id, error = %e, "InitProducerId refused");
                resp.with_error_code(e.code().code())
            }
        };
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
