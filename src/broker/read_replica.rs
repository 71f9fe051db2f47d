//! A read-replica cluster (`--read-replica-of <cluster id>`): every topic
//! the source cluster writes to the tier is created here as a read replica
//! of it (`strata.read.replica.of`, see `api::admin::create_read_replica`),
//! as the topics appear.
//!
//! The metadata leader alone looks, once per tier pass, at the source's
//! topic directories in the tier; any broker could create the topics, but
//! one does. A topic of that name that exists here already (a replica made
//! before, or a topic of this cluster's own) is left alone. A listing that
//! fails is retried next pass; a topic that cannot be planned (its
//! topic.json is damaged, say) is logged and retried, never half made.
//! Topics the source deletes stay here, serving what the tier still holds.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// Follows the source's topics until `cancel`.
pub async fn run(broker: Arc<Broker>, source: String, cancel: CancellationToken) {
    let interval = Duration::from_millis(broker.config.tier.interval_ms);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if !broker.metadata.is_leader() {
            continue;
        }
        let topics = match broker.tier.list_remote_topics(&source).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(source_cluster = %source, error = %tiering::error_chain(&e), "cannot list the source cluster's topics in the tier; retrying next pass");
                continue;
            }
        };
        for t in topics {
            if cancel.is_cancelled() {
                return;
            }
            if broker.view().topic(&t.topic).is_some() {
                continue;
            }
            match crate::api::admin::create_read_replica(&broker, &t.topic, &source).await {
                Ok(_) => {
                    tracing::info!(topic = %t.topic, source_cluster = %source, "new read replica of a source topic");
                }
                Err((code, message)) => {
                    tracing::warn!(topic = %t.topic, source_cluster = %source, code, %message, "cannot create the read replica of a source topic; retrying next pass");
                }
            }
        }
    }
}
