//! Transactions, read side: ListTransactions on every broker and
//! DescribeTransactions at an id's coordinator.

use kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::error::{self, ClientError};
use super::Client;

/// Key type of a transactional id in FindCoordinator.
const TRANSACTION_KEY: i8 = 1;

/// A transactional id as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
    /// The broker coordinating it.
    pub coordinator: i32,
}

/// A transactional id as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// When the open transaction began (ms), -1 without one.
    pub start_ms: i64,
    /// Its partitions: (topic, partition).
    pub partitions: Vec<(String, i32)>,
    pub coordinator: i32,
}

impl Client {
    /// Every transactional id of every broker's coordinator, sorted.
    pub async fn list_transactions(&self) -> Result<Vec<TxnListing>, ClientError> {
        let mut out = Vec::new();
        for node in self.broker_ids().await? {
            let conn = self.node_conn(node).await?;
            let version = conn.version::<ListTransactionsRequest>()?;
            let req = ListTransactionsRequest::default().with_duration_filter(-1);
            let resp = conn
                .send_version(&req, version, self.options.request_timeout)
                .await?;
            error::check(
                resp.error_code,
                "list transactions",
                || format!("broker={node}"),
                None,
            )?;
            out.extend(resp.transaction_states.into_iter().map(|t| TxnListing {
                transactional_id: t.transactional_id.0.to_string(),
                producer_id: t.producer_id.0,
                state: t.transaction_state.to_string(),
                coordinator: node,
            }));
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// One transactional id, from its coordinator.
    pub async fn describe_transaction(&self, id: &str) -> Result<TxnDescription, ClientError> {
        let node = self.find_coordinator_of(id, TRANSACTION_KEY).await?;
        let conn = self.conn_to(&node.addr()).await?;
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_owned()))]);
        let resp = conn.send(&req).await?;
        let t =
            resp.transaction_states
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::Protocol {
                    what: format!("describe transactions response lacks transactional_id={id}"),
                    addr: conn.addr().to_owned(),
                })?;
        error::check(
            t.error_code,
            "describe transaction",
            || format!("transactional_id={id}"),
            None,
        )?;
        let partitions = t
            .topics
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p)))
            .collect();
        Ok(TxnDescription {
            transactional_id: id.to_owned(),
            state: t.transaction_state.to_string(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.transaction_timeout_ms,
            start_ms: t.transaction_start_time_ms,
            partitions,
            coordinator: node.node_id,
        })
    }
}
