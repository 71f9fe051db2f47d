//! The client's one error type, and Kafka error codes by name.

use std::fmt;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

/// Boxed cause from `kafka-protocol` (which reports with `anyhow`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A Kafka error code as the broker sent it, shown by its protocol name
/// (`UNKNOWN_TOPIC_OR_PARTITION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KafkaCode(pub i16);

impl KafkaCode {
    /// `None` for code 0 ("no error").
    pub fn from_code(code: i16) -> Option<KafkaCode> {
        (code != 0).then_some(KafkaCode(code))
    }

    pub fn code(self) -> i16 {
        self.0
    }

    /// The `kafka-protocol` variant, if the code is a known one.
    pub fn response_error(self) -> Option<ResponseError> {
        match ResponseError::try_from_code(self.0) {
            Some(ResponseError::Unknown(_)) | None => None,
            Some(e) => Some(e),
        }
    }

    /// Kafka's name for the code: `NOT_LEADER_OR_FOLLOWER`.
    pub fn name(self) -> String {
        match self.response_error() {
            Some(e) => screaming_snake(&format!("{e}")),
            None => format!("UNKNOWN_ERROR_CODE_{}", self.0),
        }
    }

    /// Whether the protocol calls this error retriable.
    pub fn is_retriable(self) -> bool {
        self.response_error().is_some_and(|e| e.is_retriable())
    }

    /// True if the error means "your view of partition leadership is stale".
    pub fn is_stale_metadata(self) -> bool {
        matches!(
            self.response_error(),
            Some(
                ResponseError::NotLeaderOrFollower
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
                    | ResponseError::ReplicaNotAvailable
            )
        )
    }
}

impl From<ResponseError> for KafkaCode {
    fn from(e: ResponseError) -> KafkaCode {
        KafkaCode(e.code())
    }
}

impl fmt::Display for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Everything the client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid bootstrap address {bootstrap:?}: expected HOST:PORT[,HOST:PORT...]")]
    InvalidBootstrap { bootstrap: String },

    #[error("invalid client security settings: {0}")]
    Config(String),

    #[error("TLS handshake with {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("SASL authentication with {addr} failed: {message}")]
    Authentication { addr: String, message: String },

    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("connection to {addr} failed")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("connection closed by the broker. broker={addr}")]
    Disconnected { addr: String },

    #[error("request timed out. api={api:?}, broker={addr}, after={after:?}")]
    Timeout {
        api: ApiKey,
        addr: String,
        after: Duration,
    },

    #[error("the broker does not support this api. api={api:?}, broker={addr}")]
    UnsupportedApi { api: ApiKey, addr: String },

    #[error("cannot encode request. api={api:?}, version={version}")]
    Encode {
        api: ApiKey,
        version: i16,
        #[source]
        source: BoxError,
    },

    #[error("cannot decode response. api={api:?}, version={version}, broker={addr}")]
    Decode {
        api: ApiKey,
        version: i16,
        addr: String,
        #[source]
        source: BoxError,
    },

    #[error("malformed response: {what}. broker={addr}")]
    Protocol { what: String, addr: String },

    #[error("cannot encode record batch")]
    EncodeRecords {
        #[source]
        source: BoxError,
    },

    #[error("corrupt record batch. topic={topic}, partition={partition}, offset={offset}")]
    DecodeRecords {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: BoxError,
    },

    /// The broker answered with a Kafka error code.
    #[error("{}", kafka_display(op, *code, message.as_deref(), resource))]
    Kafka {
        op: &'static str,
        resource: String,
        code: KafkaCode,
        message: Option<String>,
    },

    #[error("no such partition. topic={topic}, partition={partition}")]
    UnknownPartition { topic: String, partition: i32 },

    #[error("partition has no leader. topic={topic}, partition={partition}")]
    NoLeader { topic: String, partition: i32 },

    #[error("broker not in metadata. node={node_id}")]
    UnknownNode { node_id: i32 },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The Kafka error code, for errors the broker reported.
    pub fn kafka_code(&self) -> Option<KafkaCode> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Worth trying again (after refreshing metadata or reconnecting).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Kafka { code, .. } => code.is_retriable(),
            ClientError::Io { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoLeader { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn kafka(
        op: &'static str,
        resource: impl Into<String>,
        code: KafkaCode,
        message: Option<&str>,
    ) -> ClientError {
        ClientError::Kafka {
            op,
            resource: resource.into(),
            code,
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        }
    }
}

/// `create topic failed: TOPIC_ALREADY_EXISTS (message). topic=a`, without
/// repeating the resource when the broker's message already names it.
fn kafka_display(op: &str, code: KafkaCode, message: Option<&str>, resource: &str) -> String {
    let mut s = format!("{op} failed: {code}");
    if let Some(m) = message {
        s.push_str(&format!(" ({m})"));
    }
    if !resource.is_empty() && !message.is_some_and(|m| m.contains(resource)) {
        s.push_str(&format!(". {resource}"));
    }
    s
}

/// `Err` for a non-zero code.
pub(crate) fn check(
    code: i16,
    op: &'static str,
    resource: impl FnOnce() -> String,
    message: Option<&str>,
) -> Result<(), ClientError> {
    match KafkaCode::from_code(code) {
        None => Ok(()),
        Some(c) => Err(ClientError::kafka(op, resource(), c, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_kafka_names() {
        assert_eq!(KafkaCode(3).name(), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(KafkaCode(6).name(), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(KafkaCode(36).name(), "TOPIC_ALREADY_EXISTS");
        assert_eq!(KafkaCode(-1).name(), "UNKNOWN_SERVER_ERROR");
        assert_eq!(KafkaCode(9999).name(), "UNKNOWN_ERROR_CODE_9999");
        assert_eq!(KafkaCode::from_code(0), None);
        assert!(KafkaCode(6).is_stale_metadata());
        assert!(!KafkaCode(36).is_retriable());
    }

    #[test]
    fn kafka_error_display() {
        let e = ClientError::kafka("create topic", "topic=a", KafkaCode(36), Some("exists"));
        assert_eq!(
            e.to_string(),
            "create topic failed: TOPIC_ALREADY_EXISTS (exists). topic=a"
        );
        let e = ClientError::kafka(
            "create topic",
            "topic=a",
            KafkaCode(36),
            Some("exists. topic=a"),
        );
        assert_eq!(
            e.to_string(),
            "create topic failed: TOPIC_ALREADY_EXISTS (exists. topic=a)"
        );
        let e = ClientError::kafka("delete topic", "topic=b", KafkaCode(3), Some(""));
        assert_eq!(
            e.to_string(),
            "delete topic failed: UNKNOWN_TOPIC_OR_PARTITION. topic=b"
        );
    }
}
