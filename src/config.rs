//! Broker configuration.
//!
//! Overview: `strata serve` runs with no arguments on embedded defaults. A TOML
//! file (`--config`), `STRATA_*` environment variables and command-line flags
//! override the defaults, in that order (a flag beats its environment
//! variable, which beats the file). Every value is validated once at start; an
//! invalid one fails with a message that names the key.
//!
//! Topic configs (`retention.ms`, `segment.bytes`, …) use Kafka's names; the
//! broker-wide defaults for them live here and are resolved per topic by
//! [`TopicConfig`].

pub mod listeners;
pub mod table_schema;
pub mod topic;

pub use topic::{TableRetention, TopicConfig};

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

/// Errors found while loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file. path={path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file. path={path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}. value={value:?}")]
    Invalid {
        key: String,
        value: String,
        message: String,
    },
    #[error("unknown config key. key={key}")]
    UnknownKey { key: String },
}

impl ConfigError {
    pub fn invalid(key: &str, value: impl ToString, message: impl ToString) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            message: message.to_string(),
        }
    }
}

/// Flags of `strata serve`. Every field is optional so that the merge order
/// (defaults < file < env < flag) can be applied after parsing.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML config file; its keys are the long flag names (e.g. `data-dir = "/var/lib/strata"`).
    #[arg(long, env = "STRATA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory holding partition logs and metadata [default: ./data]
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener address [default: 127.0.0.1:9092]
    #[arg(long, env = "STRATA_LISTEN")]
    pub listen: Option<String>,
    /// Address clients are told to connect to [default: the bound Kafka listener]
    #[arg(long, env = "STRATA_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// Kafka listeners as NAME://HOST:PORT,... (Kafka's listeners); a name is its security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) unless --listener-security-protocol-map maps it [default: PLAINTEXT://--listen]
    #[arg(long, env = "STRATA_LISTENERS")]
    pub listeners: Option<String>,
    /// What clients of each listener are told to connect to, as NAME://HOST:PORT,... [default: each bound address]
    #[arg(long, env = "STRATA_ADVERTISED_LISTENERS")]
    pub advertised_listeners: Option<String>,
    /// Security protocol of each listener name, as NAME:PROTOCOL,... (listener.security.protocol.map)
    #[arg(long, env = "STRATA_LISTENER_SECURITY_PROTOCOL_MAP")]
    pub listener_security_protocol_map: Option<String>,
    /// The listener other brokers connect to [default: the first of --listeners]
    #[arg(long, env = "STRATA_INTER_BROKER_LISTENER_NAME")]
    pub inter_broker_listener_name: Option<String>,
    /// Client properties (key=value lines, as Kafka's tools take) of this broker's connections to the other brokers' inter-broker listener, needed when it is not PLAINTEXT: security.protocol, ssl.ca.location, ssl.certificate.location, ssl.key.location, sasl.mechanism, sasl.username, sasl.password
    #[arg(long, env = "STRATA_INTER_BROKER_CLIENT_CONFIG")]
    pub inter_broker_client_config: Option<PathBuf>,
    /// PEM certificate chain of the SSL and SASL_SSL listeners; reread on SIGHUP
    #[arg(long, env = "STRATA_SSL_CERTIFICATE_FILE")]
    pub ssl_certificate_file: Option<PathBuf>,
    /// PEM private key of --ssl-certificate-file; reread on SIGHUP
    #[arg(long, env = "STRATA_SSL_KEY_FILE")]
    pub ssl_key_file: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates (mTLS); reread on SIGHUP
    #[arg(long, env = "STRATA_SSL_CLIENT_CA_FILE")]
    pub ssl_client_ca_file: Option<PathBuf>,
    /// Client certificates on TLS listeners: none, requested or required (ssl.client.auth) [default: none]
    #[arg(long, env = "STRATA_SSL_CLIENT_AUTH")]
    pub ssl_client_auth: Option<String>,
    /// SASL mechanisms offered on SASL listeners (sasl.enabled.mechanisms): PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 [default: PLAIN]
    #[arg(long, env = "STRATA_SASL_ENABLED_MECHANISMS")]
    pub sasl_enabled_mechanisms: Option<String>,
    /// TOML file of the PLAIN users: a table named users of name = "password" entries; reread on SIGHUP
    #[arg(long, env = "STRATA_SASL_PLAIN_USERS_FILE")]
    pub sasl_plain_users_file: Option<PathBuf>,
    /// A failed SASL authentication is answered after this delay, then the connection closes (connection.failed.authentication.delay.ms) [default: 100]
    #[arg(long, env = "STRATA_SASL_FAILED_AUTHENTICATION_DELAY_MS")]
    pub sasl_failed_authentication_delay_ms: Option<u64>,
    /// A SASL session lasts this long; the client must authenticate again before it ends or its connection is closed, 0 for no limit (connections.max.reauth.ms) [default: 0]
    #[arg(long, env = "STRATA_CONNECTIONS_MAX_REAUTH_MS")]
    pub connections_max_reauth_ms: Option<u64>,
    /// The authorizer: none, or acl (Kafka's standard ACL authorizer: every request is checked against the ACLs in cluster metadata) [default: none]
    #[arg(long, env = "STRATA_AUTHORIZER")]
    pub authorizer: Option<String>,
    /// Principals the authorizer lets do anything, separated by ';' (super.users), e.g. User:admin;User:ANONYMOUS
    #[arg(long, env = "STRATA_SUPER_USERS")]
    pub super_users: Option<String>,
    /// With the acl authorizer, a resource no ACL names is open to everyone (allow.everyone.if.no.acl.found) [default: false]
    #[arg(long, env = "STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// Admin HTTP listener (/health, /ready) [default: 127.0.0.1:9644]
    #[arg(long, env = "STRATA_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Serve the admin listener over TLS (HTTPS) with --ssl-certificate-file and --ssl-key-file, asking for client certificates as --ssl-client-auth says [default: false]
    #[arg(long, env = "STRATA_ADMIN_SSL")]
    pub admin_ssl: Option<bool>,
    /// This broker's node id [default: 1]
    #[arg(long, env = "STRATA_NODE_ID")]
    pub node_id: Option<i32>,
    /// Controller listener: where the metadata voters reach this node (needs --controller-quorum-voters)
    #[arg(long, env = "STRATA_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// Security of the controller listener: PLAINTEXT, or SSL, where every voter presents its --ssl-certificate-file and requires the others' certificates signed by --ssl-client-ca-file [default: PLAINTEXT]
    #[arg(long, env = "STRATA_CONTROLLER_SECURITY_PROTOCOL")]
    pub controller_security_protocol: Option<String>,
    /// The metadata voters as ID@HOST:PORT,... (Kafka's controller.quorum.voters); a node outside them follows the metadata log as a learner. Once started, the stored membership wins: the list must name voters of it (`strata cluster add-voter` adds more) [default: this node alone]
    #[arg(long, env = "STRATA_CONTROLLER_QUORUM_VOTERS")]
    pub controller_quorum_voters: Option<String>,
    /// A broker the quorum's leader has not heard from this long is fenced: no new partitions, left out of Metadata (broker.session.timeout.ms) [default: 9000]
    #[arg(long, env = "STRATA_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// The metadata leader moves leaderships back to their preferred replicas (the first of each partition's replicas) once a broker's share of them that another replica leads passes --leader-imbalance-per-broker-percentage (auto.leader.rebalance.enable) [default: true]
    #[arg(long, env = "STRATA_AUTO_LEADER_REBALANCE_ENABLE")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// How often the metadata leader checks the leader balance (leader.imbalance.check.interval.seconds, in ms) [default: 300000]
    #[arg(long, env = "STRATA_LEADER_IMBALANCE_CHECK_INTERVAL_MS")]
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// Percentage of a broker's preferred leaderships held by other replicas above which they are moved back (leader.imbalance.per.broker.percentage) [default: 10]
    #[arg(long, env = "STRATA_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE")]
    pub leader_imbalance_per_broker_percentage: Option<u32>,
    /// Create topics on first use by Metadata/Produce (auto.create.topics.enable) [default: true]
    #[arg(long, env = "STRATA_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic (num.partitions) [default: 1]
    #[arg(long, env = "STRATA_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// Replicas of a topic created without a replication factor, auto-created topics included (default.replication.factor) [default: min(3, running brokers)]
    #[arg(long, env = "STRATA_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<i16>,
    /// Replicas of __consumer_offsets, capped at the cluster's brokers (the voters or the registered brokers, whichever are more); it is created once that many run (offsets.topic.replication.factor) [default: 3]
    #[arg(long, env = "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR")]
    pub offsets_topic_replication_factor: Option<i16>,
    /// Longest transaction timeout a transactional producer may ask for (transaction.max.timeout.ms) [default: 900000]
    #[arg(long, env = "STRATA_TRANSACTION_MAX_TIMEOUT_MS")]
    pub transaction_max_timeout_ms: Option<i32>,
    /// How often the transaction coordinator aborts transactions past their timeout (transaction.abort.timed.out.transaction.cleanup.interval.ms) [default: 10000]
    #[arg(long, env = "STRATA_TRANSACTION_ABORT_CHECK_INTERVAL_MS")]
    pub transaction_abort_check_interval_ms: Option<u64>,
    /// How long a transactional id without a transaction is kept (transactional.id.expiration.ms) [default: 604800000]
    #[arg(long, env = "STRATA_TRANSACTIONAL_ID_EXPIRATION_MS")]
    pub transactional_id_expiration_ms: Option<i64>,
    /// Largest request frame accepted (socket.request.max.bytes) [default: 104857600]
    #[arg(long, env = "STRATA_SOCKET_REQUEST_MAX_BYTES")]
    pub socket_request_max_bytes: Option<u32>,
    /// Send fetched local data from the page cache with sendfile(2) instead
    /// of copying it [default: true]
    #[arg(long, env = "STRATA_ZERO_COPY")]
    pub zero_copy: Option<bool>,
    /// acks=all sync rounds covering several partitions make each data
    /// filesystem durable with one syncfs(2) instead of one fdatasync per
    /// partition (up to 16 at once), on ext4, XFS, Btrfs and F2FS (where
    /// syncfs is durable); turn off when the data dir shares its
    /// filesystem with other busy writers [default: true]
    #[arg(long, env = "STRATA_SYNC_ROUNDS_SYNCFS")]
    pub sync_rounds_syncfs: Option<bool>,
    /// Start writing appended log data to disk every this many bytes per
    /// segment (sync_file_range, without waiting), so the dirty data an
    /// acks=all sync must wait for stays small; 0 leaves write-back to the
    /// kernel [default: 1048576]
    #[arg(long, env = "STRATA_LOG_WRITEBACK_BYTES")]
    pub log_writeback_bytes: Option<u64>,
    /// Segment files held open at once, over all partitions: a segment's
    /// file opens at its first read or write, and the least recently used
    /// close beyond this many (reads in flight keep theirs) [default: half
    /// the open files limit]
    #[arg(long, env = "STRATA_MAX_OPEN_SEGMENT_FILES")]
    pub max_open_segment_files: Option<u64>,
    /// TCP congestion control of client connections, e.g. cubic (set on
    /// the Kafka listener, whose connections inherit it; one of
    /// /proc/sys/net/ipv4/tcp_available_congestion_control) [default: the
    /// system's, net.ipv4.tcp_congestion_control]
    #[arg(long, env = "STRATA_TCP_CONGESTION_CONTROL")]
    pub tcp_congestion_control: Option<String>,
    /// Request bytes in flight on the whole broker (queued.max.request.bytes);
    /// reading stops while it is reached [default: 268435456]
    #[arg(long, env = "STRATA_QUEUED_MAX_REQUEST_BYTES")]
    pub queued_max_request_bytes: Option<u64>,
    /// Request bytes in flight on one connection; reading it stops while it
    /// is reached [default: 67108864]
    #[arg(long, env = "STRATA_CONNECTION_MAX_REQUEST_BYTES")]
    pub connection_max_request_bytes: Option<u64>,
    /// Milliseconds a request body may take to arrive after its length
    /// prefix; a slower one closes the connection [default: 30000]
    #[arg(long, env = "STRATA_REQUEST_BODY_TIMEOUT_MS")]
    pub request_body_timeout_ms: Option<u64>,
    /// Close a connection that sent no request for this many ms and has none
    /// in flight (connections.max.idle.ms) [default: 600000]
    #[arg(long, env = "STRATA_CONNECTIONS_MAX_IDLE_MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// Kafka connections open at once; more are closed on accept
    /// (max.connections) [default: 2147483647]
    #[arg(long, env = "STRATA_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Kafka connections open at once from one IP address
    /// (max.connections.per.ip) [default: 2147483647]
    #[arg(long, env = "STRATA_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,
    /// Partitions one CreateTopics or CreatePartitions request may add
    /// [default: 10000]
    #[arg(long, env = "STRATA_MAX_PARTITIONS_PER_REQUEST")]
    pub max_partitions_per_request: Option<u32>,
    /// Partitions the cluster may hold in all [default: 100000]
    #[arg(long, env = "STRATA_MAX_PARTITIONS")]
    pub max_partitions: Option<u32>,
    /// Default largest record batch (message.max.bytes) [default: 1048588]
    #[arg(long, env = "STRATA_MESSAGE_MAX_BYTES")]
    pub message_max_bytes: Option<u32>,
    /// Default segment size (log.segment.bytes) [default: 1073741824]
    #[arg(long, env = "STRATA_LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// Default time retention in ms, -1 for none (log.retention.ms) [default: 604800000]
    #[arg(long, env = "STRATA_LOG_RETENTION_MS")]
    pub log_retention_ms: Option<i64>,
    /// How often retention and segment.ms are checked (log.retention.check.interval.ms) [default: 300000]
    #[arg(long, env = "STRATA_LOG_RETENTION_CHECK_INTERVAL_MS")]
    pub log_retention_check_interval_ms: Option<u64>,
    /// Threads compacting logs of cleanup.policy=compact topics (log.cleaner.threads) [default: 1]
    #[arg(long, env = "STRATA_LOG_CLEANER_THREADS")]
    pub log_cleaner_threads: Option<u32>,
    /// Memory for one cleaner pass's map of keys, in bytes, shared by the threads (log.cleaner.dedupe.buffer.size) [default: 134217728]
    #[arg(long, env = "STRATA_LOG_CLEANER_DEDUPE_BUFFER_SIZE")]
    pub log_cleaner_dedupe_buffer_size: Option<u64>,
    /// Bytes per second the cleaner threads read and write together, 0 for no limit (log.cleaner.io.max.bytes.per.second) [default: 0]
    #[arg(long, env = "STRATA_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND")]
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// How long the cleaner sleeps when no log is due for a pass (log.cleaner.backoff.ms) [default: 15000]
    #[arg(long, env = "STRATA_LOG_CLEANER_BACKOFF_MS")]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Object-store URL of the tier: file:///path, s3://bucket/prefix or memory:// [default: file://DATA_DIR/tier, DATA_DIR being --data-dir]
    #[arg(long, env = "STRATA_TIER_URL")]
    pub tier_url: Option<String>,
    /// Object-store URL under which topics as tables (strata.table.enable)
    /// keep their Parquet files, in `tables/<topic>/`: file:///path,
    /// s3://bucket/prefix (the tier's S3 settings) or memory:// [default:
    /// the tier's URL]
    #[arg(long, env = "STRATA_TABLE_URL")]
    pub table_url: Option<String>,
    /// S3 endpoint of an s3:// tier, e.g. http://127.0.0.1:4566 [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, env = "STRATA_TIER_S3_ENDPOINT")]
    pub tier_s3_endpoint: Option<String>,
    /// S3 region of an s3:// tier [default: AWS_REGION, else us-east-1]
    #[arg(long, env = "STRATA_TIER_S3_REGION")]
    pub tier_s3_region: Option<String>,
    /// Server-side encryption of tier objects on S3: AES256 (SSE-S3) or
    /// aws:kms (SSE-KMS) [default: the bucket's default encryption]
    #[arg(long, env = "STRATA_TIER_S3_SSE")]
    pub tier_s3_sse: Option<String>,
    /// KMS key (id, alias or ARN) for --tier-s3-sse aws:kms [default: the
    /// account's aws/s3 key]
    #[arg(long, env = "STRATA_TIER_S3_KMS_KEY_ID")]
    pub tier_s3_kms_key_id: Option<String>,
    /// Bytes of the tier's in-memory read cache [default: 268435456]
    #[arg(long, env = "STRATA_TIER_CACHE_MEMORY_BYTES")]
    pub tier_cache_memory_bytes: Option<u64>,
    /// Directory of the tier's disk read cache (off when unset)
    #[arg(long, env = "STRATA_TIER_CACHE_DIR")]
    pub tier_cache_dir: Option<PathBuf>,
    /// Bytes of the tier's disk read cache [default: 4294967296]
    #[arg(long, env = "STRATA_TIER_CACHE_DISK_BYTES")]
    pub tier_cache_disk_bytes: Option<u64>,
    /// Bytes per ranged GET from the tier (each segment object is read in
    /// ranges of the size it was uploaded with) [default: 4194304]
    #[arg(long, env = "STRATA_TIER_CHUNK_BYTES")]
    pub tier_chunk_bytes: Option<u64>,
    /// Chunks read ahead of a sequential tier reader, per partition (0: off)
    /// [default: 2]
    #[arg(long, env = "STRATA_TIER_PREFETCH_CHUNKS")]
    pub tier_prefetch_chunks: Option<u64>,
    /// Segment uploads running at once [default: 2]
    #[arg(long, env = "STRATA_TIER_UPLOAD_CONCURRENCY")]
    pub tier_upload_concurrency: Option<usize>,
    /// Upload bandwidth in bytes/s, 0 for unlimited [default: 0]
    #[arg(long, env = "STRATA_TIER_UPLOAD_BYTES_PER_SEC")]
    pub tier_upload_bytes_per_sec: Option<u64>,
    /// Bytes/s that fetches may request from the tier, 0 for unlimited [default: 0]
    #[arg(long, env = "STRATA_TIER_FETCH_BYTES_PER_SEC")]
    pub tier_fetch_bytes_per_sec: Option<u64>,
    /// How often sealed segments are offered for upload and tier retention runs, in ms [default: 5000]
    #[arg(long, env = "STRATA_TIER_INTERVAL_MS")]
    pub tier_interval_ms: Option<u64>,
    /// Age after which a tier object no manifest names is deleted, in ms [default: 900000]
    #[arg(long, env = "STRATA_TIER_ORPHAN_GRACE_MS")]
    pub tier_orphan_grace_ms: Option<u64>,
    /// A restore that takes over a topic another cluster wrote is refused
    /// while that cluster wrote its manifests within this many ms (it may
    /// still run); `strata tier restore --take-over` skips the wait [default: 300000]
    #[arg(long, env = "STRATA_TIER_TAKEOVER_QUIET_MS")]
    pub tier_takeover_quiet_ms: Option<u64>,
    /// On a clean shutdown (SIGTERM), seal the active segment of each
    /// partition this broker leads and upload what the tier lacks, for up
    /// to this many ms, so that a cluster stopped cleanly restores whole;
    /// 0 leaves the active segments local (uploads in flight still get 5 s)
    /// [default: 30000]
    #[arg(long, env = "STRATA_TIER_SHUTDOWN_UPLOAD_TIMEOUT_MS")]
    pub tier_shutdown_upload_timeout_ms: Option<u64>,
    /// Make this cluster a read replica of the cluster of this id: every
    /// topic it writes to the tier is created here as a read-only replica
    /// (`strata.read.replica.of`), as it appears [default: none]
    #[arg(long, env = "STRATA_READ_REPLICA_OF")]
    pub read_replica_of: Option<String>,
    /// How often the leader of each tiered partition reads back every tier
    /// object of it and checks its CRC-32C and size against the manifest
    /// (a scrub), re-uploading a damaged segment its local log still
    /// holds; 0 turns the background scrub off (`strata tier scrub` runs
    /// one on demand) [default: 86400000, a day]
    #[arg(long, env = "STRATA_TIER_SCRUB_INTERVAL_MS")]
    pub tier_scrub_interval_ms: Option<u64>,
    /// Bytes per second the background scrub may read, 0 for unlimited
    /// [default: 8388608]
    #[arg(long, env = "STRATA_TIER_SCRUB_BYTES_PER_SEC")]
    pub tier_scrub_bytes_per_sec: Option<u64>,
    /// A partition whose tier reads have had no answer for this many ms
    /// answers fetches of tiered offsets with REQUEST_TIMED_OUT (an object
    /// store outage), instead of empty data [default: 30000]
    #[arg(long, env = "STRATA_TIER_READ_TIMEOUT_MS")]
    pub tier_read_timeout_ms: Option<u64>,
    /// Log filter, e.g. `info` or `strata=debug` [default: info]
    #[arg(long, env = "STRATA_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "STRATA_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Shortest session timeout a group member may ask for (group.min.session.timeout.ms) [default: 6000]
    #[arg(long, env = "STRATA_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Longest session timeout a group member may ask for (group.max.session.timeout.ms) [default: 1800000]
    #[arg(long, env = "STRATA_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// How long the first rebalance of an empty group waits for more members (group.initial.rebalance.delay.ms) [default: 3000]
    #[arg(long, env = "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// How long committed offsets of an empty group are kept (offsets.retention.minutes) [default: 10080]
    #[arg(long, env = "STRATA_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// How often expired offsets are removed (offsets.retention.check.interval.ms) [default: 600000]
    #[arg(long, env = "STRATA_OFFSETS_RETENTION_CHECK_INTERVAL_MS")]
    pub offsets_retention_check_interval_ms: Option<u64>,
    /// OTLP/HTTP endpoint for trace export, e.g. http://127.0.0.1:4318 [default: OTEL_EXPORTER_OTLP_ENDPOINT, else off]
    #[arg(long, env = "STRATA_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Broker settings of the tier.
#[derive(Debug, Clone)]
pub struct TierSettings {
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_sse: Option<tiering::S3Sse>,
    pub cache_memory_bytes: u64,
    pub cache_dir: Option<PathBuf>,
    pub cache_disk_bytes: u64,
    pub chunk_bytes: u64,
    pub prefetch_chunks: u64,
    pub upload_concurrency: usize,
    pub upload_bytes_per_sec: u64,
    pub fetch_bytes_per_sec: u64,
    pub interval_ms: u64,
    pub orphan_grace_ms: u64,
    pub takeover_quiet_ms: u64,
    pub read_timeout_ms: u64,
    /// 0: no upload of the active segments at shutdown.
    pub shutdown_upload_timeout_ms: u64,
    /// 0: no background scrub.
    pub scrub_interval_ms: u64,
    /// `--read-replica-of`: the cluster whose topics this one replicates.
    pub read_replica_of: Option<String>,
    pub scrub_bytes_per_sec: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// The inter-broker listener's address (one of `security.listeners`).
    pub listen: SocketAddr,
    pub advertised_listener: Option<(String, u16)>,
    /// The Kafka listeners, their security, TLS files and SASL settings.
    pub security: listeners::Security,
    /// The ACL authorizer's settings; `None`: no authorizer, every
    /// authenticated client may do everything.
    pub authorizer: Option<std::sync::Arc<crate::security::acl::Authorizer>>,
    pub admin_listen: SocketAddr,
    /// The admin listener speaks HTTPS with the Kafka listeners' TLS files.
    pub admin_ssl: bool,
    pub node_id: i32,
    /// The controller listener and the voters by node id and address, when
    /// the metadata quorum has several voters (`None`: this node alone).
    pub controller: Option<ControllerQuorum>,
    pub broker_session_timeout_ms: u64,
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_ms: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    /// None: min(3, running brokers).
    pub default_replication_factor: Option<i16>,
    pub offsets_topic_replication_factor: i16,
    pub transaction_max_timeout_ms: i32,
    pub transaction_abort_check_interval_ms: u64,
    pub transactional_id_expiration_ms: i64,
    pub socket_request_max_bytes: u32,
    pub zero_copy: bool,
    pub sync_rounds_syncfs: bool,
    pub log_writeback_bytes: u64,
    /// None: half the open files limit (`serve` sets it so before the
    /// broker starts; a broker given None keeps every file open).
    pub max_open_segment_files: Option<u64>,
    pub tcp_congestion_control: Option<String>,
    pub queued_max_request_bytes: u64,
    pub connection_max_request_bytes: u64,
    pub request_body_timeout_ms: u64,
    pub connections_max_idle_ms: u64,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub max_partitions_per_request: u32,
    pub max_partitions: u32,
    pub message_max_bytes: u32,
    pub log_segment_bytes: u64,
    pub log_retention_ms: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_cleaner: CleanerSettings,
    pub tier_url: String,
    /// `--table-url` (None: tables go beside the tier).
    pub table_url: Option<String>,
    pub tier: TierSettings,
    pub log_level: String,
    pub log_format: LogFormat,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_initial_rebalance_delay_ms: u64,
    pub offsets_retention_minutes: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub otlp_endpoint: Option<String>,
}

impl BrokerConfig {
    /// The options of the tier store these settings name.
    pub fn tier_options(&self) -> tiering::TierOptions {
        let t = &self.tier;
        tiering::TierOptions {
            s3: tiering::S3Options {
                endpoint: t.s3_endpoint.clone(),
                region: t.s3_region.clone(),
                sse: t.s3_sse.clone(),
                ..Default::default()
            },
            chunk_size: t.chunk_bytes,
            prefetch_chunks: t.prefetch_chunks,
            memory_cache_bytes: t.cache_memory_bytes,
            disk_cache_dir: t.cache_dir.clone(),
            disk_cache_bytes: t.cache_disk_bytes,
            ..Default::default()
        }
    }

    /// The store that holds topics as tables: `tier` itself, or the store of
    /// `--table-url` (the tier's S3 settings, no read cache of its own
    /// worth the name: tables are written, not read, by the broker).
    pub fn table_store(
        &self,
        tier: &tiering::TierStore,
    ) -> Result<tiering::TierStore, tiering::TierError> {
        match &self.table_url {
            None => Ok(tier.clone()),
            Some(url) => {
                let base = self.tier_options();
                let options = tiering::TierOptions {
                    disk_cache_dir: None,
                    memory_cache_bytes: base.chunk_size * 2,
                    ..base
                };
                tiering::TierStore::from_url_with(url, options)
            }
        }
    }

    /// Merges the file named by `--config` (if any) under the flags and
    /// environment already parsed into `args`, applies defaults and validates.
    pub fn load(args: ServeArgs) -> Result<BrokerConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str::<ServeArgs>(&text).map_err(|e| ConfigError::ParseFile {
                    path: path.clone(),
                    message: e.message().to_string(),
                })?
            }
            None => ServeArgs::default(),
        };
        let merged = args.merge_over(file);
        BrokerConfig::from_args(merged)
    }

    fn from_args(a: ServeArgs) -> Result<BrokerConfig, ConfigError> {
        let data_dir = a.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data-dir", "", "must not be empty"));
        }
        let security = listeners::parse(listeners::SecurityArgs {
            listen: a.listen.as_deref(),
            advertised_listener: a.advertised_listener.as_deref(),
            listeners: a.listeners.as_deref(),
            advertised_listeners: a.advertised_listeners.as_deref(),
            protocol_map: a.listener_security_protocol_map.as_deref(),
            inter_broker_listener_name: a.inter_broker_listener_name.as_deref(),
            ssl_certificate_file: a.ssl_certificate_file.clone(),
            ssl_key_file: a.ssl_key_file.clone(),
            ssl_client_ca_file: a.ssl_client_ca_file.clone(),
            ssl_client_auth: a.ssl_client_auth.as_deref(),
            sasl_enabled_mechanisms: a.sasl_enabled_mechanisms.as_deref(),
            sasl_plain_users_file: a.sasl_plain_users_file.clone(),
            sasl_failed_authentication_delay_ms: a.sasl_failed_authentication_delay_ms,
            connections_max_reauth_ms: a.connections_max_reauth_ms,
            inter_broker_client_config: a.inter_broker_client_config.clone(),
        })?;
        let listen = security.inter_broker().addr;
        let authorizer = authorizer(
            a.authorizer.as_deref(),
            a.super_users.as_deref(),
            a.allow_everyone_if_no_acl_found,
        )?;
        let advertised_listener = security.inter_broker().advertised.clone();
        let admin_listen = resolve_addr(
            "admin-listen",
            a.admin_listen.as_deref().unwrap_or("127.0.0.1:9644"),
        )?;
        let admin_ssl = a.admin_ssl.unwrap_or(false);
        if admin_ssl && security.tls.is_none() {
            return Err(ConfigError::invalid(
                "admin-ssl",
                "true",
                "needs --ssl-certificate-file and --ssl-key-file",
            ));
        }
        let node_id = a.node_id.unwrap_or(1);
        if node_id < 0 {
            return Err(ConfigError::invalid("node-id", node_id, "must be >= 0"));
        }
        let mut controller = controller_quorum(
            node_id,
            a.controller_listen.as_deref(),
            a.controller_quorum_voters.as_deref(),
        )?;
        match a.controller_security_protocol.as_deref() {
            None | Some("PLAINTEXT") => {}
            Some("SSL") => {
                let Some(quorum) = controller.as_mut() else {
                    return Err(ConfigError::invalid(
                        "controller-security-protocol",
                        "SSL",
                        "applies to a quorum of several voters (--controller-listen, --controller-quorum-voters)",
                    ));
                };
                if security.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                    return Err(ConfigError::invalid(
                        "controller-security-protocol",
                        "SSL",
                        "needs --ssl-certificate-file, --ssl-key-file and --ssl-client-ca-file (the CA that signs every voter's certificate)",
                    ));
                }
                quorum.tls = true;
            }
            Some(other) => {
                return Err(ConfigError::invalid(
                    "controller-security-protocol",
                    other,
                    "expected PLAINTEXT or SSL",
                ))
            }
        }
        let num_partitions = at_least("num-partitions", a.num_partitions.unwrap_or(1), 1)?;
        let default_replication_factor = a
            .default_replication_factor
            .map(|rf| at_least("default-replication-factor", rf, 1))
            .transpose()?;
        let offsets_topic_replication_factor = at_least(
            "offsets-topic-replication-factor",
            a.offsets_topic_replication_factor.unwrap_or(3),
            1,
        )?;
        let transaction_max_timeout_ms = at_least(
            "transaction-max-timeout-ms",
            a.transaction_max_timeout_ms.unwrap_or(900_000),
            1,
        )?;
        let transaction_abort_check_interval_ms = at_least(
            "transaction-abort-check-interval-ms",
            a.transaction_abort_check_interval_ms.unwrap_or(10_000),
            10,
        )?;
        let transactional_id_expiration_ms = at_least(
            "transactional-id-expiration-ms",
            a.transactional_id_expiration_ms
                .unwrap_or(7 * 24 * 3_600_000),
            1,
        )?;
        let socket_request_max_bytes = at_least(
            "socket-request-max-bytes",
            a.socket_request_max_bytes.unwrap_or(100 * 1024 * 1024),
            1024,
        )?;
        let queued_max_request_bytes = at_least(
            "queued-max-request-bytes",
            a.queued_max_request_bytes.unwrap_or(256 << 20),
            1024,
        )?;
        let connection_max_request_bytes = at_least(
            "connection-max-request-bytes",
            a.connection_max_request_bytes.unwrap_or(64 << 20),
            1024,
        )?;
        let request_body_timeout_ms = at_least(
            "request-body-timeout-ms",
            a.request_body_timeout_ms.unwrap_or(30_000),
            1,
        )?;
        let connections_max_idle_ms = at_least(
            "connections-max-idle-ms",
            a.connections_max_idle_ms.unwrap_or(600_000),
            1,
        )?;
        let max_open_segment_files = a
            .max_open_segment_files
            .map(|n| at_least("max-open-segment-files", n, 1))
            .transpose()?;
        let max_connections = at_least(
            "max-connections",
            a.max_connections.unwrap_or(i32::MAX as u32),
            1,
        )?;
        let max_connections_per_ip = at_least(
            "max-connections-per-ip",
            a.max_connections_per_ip.unwrap_or(i32::MAX as u32),
            1,
        )?;
        let max_partitions_per_request = at_least(
            "max-partitions-per-request",
            a.max_partitions_per_request.unwrap_or(10_000),
            1,
        )?;
        let max_partitions = at_least("max-partitions", a.max_partitions.unwrap_or(100_000), 1)?;
        let message_max_bytes = at_least(
            "message-max-bytes",
            a.message_max_bytes.unwrap_or(1_048_588),
            64,
        )?;
        let log_segment_bytes = at_least(
            "log-segment-bytes",
            a.log_segment_bytes.unwrap_or(1 << 30),
            1024,
        )?;
        let log_retention_ms = at_least(
            "log-retention-ms",
            a.log_retention_ms.unwrap_or(7 * 24 * 3600 * 1000),
            -1,
        )?;
        let log_cleaner = CleanerSettings {
            threads: at_least("log-cleaner-threads", a.log_cleaner_threads.unwrap_or(1), 1)?,
            dedupe_buffer_size: at_least(
                "log-cleaner-dedupe-buffer-size",
                a.log_cleaner_dedupe_buffer_size.unwrap_or(128 << 20),
                1 << 10,
            )?,
            io_max_bytes_per_second: a.log_cleaner_io_max_bytes_per_second.unwrap_or(0),
            backoff_ms: at_least(
                "log-cleaner-backoff-ms",
                a.log_cleaner_backoff_ms.unwrap_or(15_000),
                1,
            )?,
        };
        let log_retention_check_interval_ms = a.log_retention_check_interval_ms.unwrap_or(300_000);
        if log_retention_check_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "log-retention-check-interval-ms",
                0,
                "must be > 0",
            ));
        }
        let group_min_session_timeout_ms = a.group_min_session_timeout_ms.unwrap_or(6_000);
        let group_max_session_timeout_ms = a.group_max_session_timeout_ms.unwrap_or(1_800_000);
        if group_min_session_timeout_ms < 1
            || group_min_session_timeout_ms > group_max_session_timeout_ms
        {
            return Err(ConfigError::invalid(
                "group-min-session-timeout-ms",
                group_min_session_timeout_ms,
                format!("must be between 1 and group-max-session-timeout-ms ({group_max_session_timeout_ms})"),
            ));
        }
        let offsets_retention_minutes = at_least(
            "offsets-retention-minutes",
            a.offsets_retention_minutes.unwrap_or(7 * 24 * 60),
            1,
        )?;
        let offsets_retention_check_interval_ms =
            a.offsets_retention_check_interval_ms.unwrap_or(600_000);
        if offsets_retention_check_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "offsets-retention-check-interval-ms",
                0,
                "must be > 0",
            ));
        }
        let tier_url = match a.tier_url {
            Some(u) => u,
            None => {
                let abs = absolute(&data_dir).join("tier");
                format!("file://{}", abs.display())
            }
        };
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::invalid(key, v, "must be > 0"))
            } else {
                Ok(v)
            }
        };
        let s3_sse = match (a.tier_s3_sse.as_deref(), a.tier_s3_kms_key_id) {
            (None, None) => None,
            (Some("AES256"), None) => Some(tiering::S3Sse::S3),
            (Some("aws:kms"), key_id) => Some(tiering::S3Sse::Kms { key_id }),
            (Some(v), _) if v != "AES256" => {
                return Err(ConfigError::invalid(
                    "tier-s3-sse",
                    v,
                    "expected AES256 or aws:kms",
                ))
            }
            (_, key) => {
                return Err(ConfigError::invalid(
                    "tier-s3-kms-key-id",
                    key.unwrap_or_default(),
                    "applies only with --tier-s3-sse aws:kms",
                ))
            }
        };
        let tier = TierSettings {
            s3_endpoint: a.tier_s3_endpoint,
            s3_region: a.tier_s3_region,
            s3_sse,
            cache_memory_bytes: positive(
                "tier-cache-memory-bytes",
                a.tier_cache_memory_bytes.unwrap_or(256 << 20),
            )?,
            cache_dir: a.tier_cache_dir,
            cache_disk_bytes: positive(
                "tier-cache-disk-bytes",
                a.tier_cache_disk_bytes.unwrap_or(4 << 30),
            )?,
            chunk_bytes: positive("tier-chunk-bytes", a.tier_chunk_bytes.unwrap_or(4 << 20))?,
            prefetch_chunks: match a.tier_prefetch_chunks.unwrap_or(2) {
                n @ 0..=256 => n,
                n => {
                    return Err(ConfigError::invalid(
                        "tier-prefetch-chunks",
                        n,
                        "must be between 0 and 256",
                    ))
                }
            },
            upload_concurrency: positive(
                "tier-upload-concurrency",
                a.tier_upload_concurrency.unwrap_or(2) as u64,
            )? as usize,
            upload_bytes_per_sec: a.tier_upload_bytes_per_sec.unwrap_or(0),
            fetch_bytes_per_sec: a.tier_fetch_bytes_per_sec.unwrap_or(0),
            interval_ms: positive("tier-interval-ms", a.tier_interval_ms.unwrap_or(5000))?,
            orphan_grace_ms: a.tier_orphan_grace_ms.unwrap_or(15 * 60 * 1000),
            takeover_quiet_ms: a.tier_takeover_quiet_ms.unwrap_or(5 * 60 * 1000),
            shutdown_upload_timeout_ms: a.tier_shutdown_upload_timeout_ms.unwrap_or(30_000),
            scrub_interval_ms: a.tier_scrub_interval_ms.unwrap_or(24 * 60 * 60 * 1000),
            read_replica_of: match a.read_replica_of.as_deref() {
                None => None,
                Some(c) if c.is_empty() || c.contains('/') => {
                    return Err(ConfigError::invalid(
                        "read-replica-of",
                        c,
                        "expected a cluster id",
                    ))
                }
                Some(c) => Some(c.to_string()),
            },
            scrub_bytes_per_sec: a.tier_scrub_bytes_per_sec.unwrap_or(8 << 20),
            read_timeout_ms: positive(
                "tier-read-timeout-ms",
                a.tier_read_timeout_ms.unwrap_or(30_000),
            )?,
        };
        let tcp_congestion_control = match a.tcp_congestion_control {
            Some(name) if name.is_empty() => None,
            Some(name) => {
                // The kernel's names are at most 15 bytes (TCP_CA_NAME_MAX).
                let plain = name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !plain || name.len() > 15 {
                    return Err(ConfigError::invalid(
                        "tcp-congestion-control",
                        name,
                        "expected an algorithm name such as cubic or bbr (at most 15 letters, digits, _ or -)",
                    ));
                }
                Some(name)
            }
            None => None,
        };
        let log_format = match a.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log-format",
                    other,
                    "expected text or json",
                ))
            }
        };
        Ok(BrokerConfig {
            data_dir,
            listen,
            advertised_listener,
            security,
            authorizer,
            admin_listen,
            admin_ssl,
            node_id,
            controller,
            broker_session_timeout_ms: at_least(
                "broker-session-timeout-ms",
                a.broker_session_timeout_ms.unwrap_or(9000),
                100,
            )?,
            auto_leader_rebalance_enable: a.auto_leader_rebalance_enable.unwrap_or(true),
            leader_imbalance_check_interval_ms: at_least(
                "leader-imbalance-check-interval-ms",
                a.leader_imbalance_check_interval_ms.unwrap_or(300_000),
                100,
            )?,
            leader_imbalance_per_broker_percentage: match a
                .leader_imbalance_per_broker_percentage
                .unwrap_or(10)
            {
                p @ 0..=100 => p,
                p => {
                    return Err(ConfigError::invalid(
                        "leader-imbalance-per-broker-percentage",
                        p,
                        "must be between 0 and 100",
                    ))
                }
            },
            auto_create_topics: a.auto_create_topics.unwrap_or(true),
            num_partitions,
            default_replication_factor,
            offsets_topic_replication_factor,
            transaction_max_timeout_ms,
            transaction_abort_check_interval_ms,
            transactional_id_expiration_ms,
            socket_request_max_bytes,
            zero_copy: a.zero_copy.unwrap_or(true),
            sync_rounds_syncfs: a.sync_rounds_syncfs.unwrap_or(true),
            log_writeback_bytes: a.log_writeback_bytes.unwrap_or(1 << 20),
            max_open_segment_files,
            tcp_congestion_control,
            queued_max_request_bytes,
            connection_max_request_bytes,
            request_body_timeout_ms,
            connections_max_idle_ms,
            max_connections,
            max_connections_per_ip,
            max_partitions_per_request,
            max_partitions,
            message_max_bytes,
            log_segment_bytes,
            log_retention_ms,
            log_retention_check_interval_ms,
            log_cleaner,
            tier_url,
            table_url: a.table_url,
            tier,
            log_level: a.log_level.unwrap_or_else(|| "info".to_string()),
            log_format,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms: a.group_initial_rebalance_delay_ms.unwrap_or(3_000),
            offsets_retention_minutes,
            offsets_retention_check_interval_ms,
            otlp_endpoint: match a
                .otlp_endpoint
                .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            {
                Some(e) if e.is_empty() => None,
                Some(e) => {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(ConfigError::invalid(
                            "otlp-endpoint",
                            e,
                            "expected an http:// or https:// URL",
                        ));
                    }
                    Some(e)
                }
                None => None,
            },
        })
    }

    /// Broker-level defaults for topic configs, as (name, value) pairs.
    pub fn topic_defaults(&self) -> BTreeMap<&'static str, String> {
        topic::SPECS
            .iter()
            .map(|s| {
                let v = match s.default {
                    topic::Default::Fixed(v) => v.to_string(),
                    topic::Default::Broker(f) => f(self),
                };
                (s.name, v)
            })
            .collect()
    }
}

impl ServeArgs {
    /// Values set in `self` (flags/env) win over `file`.
    fn merge_over(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            data_dir: self.data_dir.or(file.data_dir),
            listen: self.listen.or(file.listen),
            advertised_listener: self.advertised_listener.or(file.advertised_listener),
            listeners: self.listeners.or(file.listeners),
            advertised_listeners: self.advertised_listeners.or(file.advertised_listeners),
            listener_security_protocol_map: self
                .listener_security_protocol_map
                .or(file.listener_security_protocol_map),
            inter_broker_listener_name: self
                .inter_broker_listener_name
                .or(file.inter_broker_listener_name),
            inter_broker_client_config: self
                .inter_broker_client_config
                .or(file.inter_broker_client_config),
            ssl_certificate_file: self.ssl_certificate_file.or(file.ssl_certificate_file),
            ssl_key_file: self.ssl_key_file.or(file.ssl_key_file),
            ssl_client_ca_file: self.ssl_client_ca_file.or(file.ssl_client_ca_file),
            ssl_client_auth: self.ssl_client_auth.or(file.ssl_client_auth),
            sasl_enabled_mechanisms: self
                .sasl_enabled_mechanisms
                .or(file.sasl_enabled_mechanisms),
            sasl_plain_users_file: self.sasl_plain_users_file.or(file.sasl_plain_users_file),
            sasl_failed_authentication_delay_ms: self
                .sasl_failed_authentication_delay_ms
                .or(file.sasl_failed_authentication_delay_ms),
            connections_max_reauth_ms: self
                .connections_max_reauth_ms
                .or(file.connections_max_reauth_ms),
            authorizer: self.authorizer.or(file.authorizer),
            super_users: self.super_users.or(file.super_users),
            allow_everyone_if_no_acl_found: self
                .allow_everyone_if_no_acl_found
                .or(file.allow_everyone_if_no_acl_found),
            admin_listen: self.admin_listen.or(file.admin_listen),
            admin_ssl: self.admin_ssl.or(file.admin_ssl),
            node_id: self.node_id.or(file.node_id),
            controller_listen: self.controller_listen.or(file.controller_listen),
            controller_security_protocol: self
                .controller_security_protocol
                .or(file.controller_security_protocol),
            controller_quorum_voters: self
                .controller_quorum_voters
                .or(file.controller_quorum_voters),
            broker_session_timeout_ms: self
                .broker_session_timeout_ms
                .or(file.broker_session_timeout_ms),
            auto_leader_rebalance_enable: self
                .auto_leader_rebalance_enable
                .or(file.auto_leader_rebalance_enable),
            leader_imbalance_check_interval_ms: self
                .leader_imbalance_check_interval_ms
                .or(file.leader_imbalance_check_interval_ms),
            leader_imbalance_per_broker_percentage: self
                .leader_imbalance_per_broker_percentage
                .or(file.leader_imbalance_per_broker_percentage),
            auto_create_topics: self.auto_create_topics.or(file.auto_create_topics),
            num_partitions: self.num_partitions.or(file.num_partitions),
            default_replication_factor: self
                .default_replication_factor
                .or(file.default_replication_factor),
            offsets_topic_replication_factor: self
                .offsets_topic_replication_factor
                .or(file.offsets_topic_replication_factor),
            transaction_max_timeout_ms: self
                .transaction_max_timeout_ms
                .or(file.transaction_max_timeout_ms),
            transaction_abort_check_interval_ms: self
                .transaction_abort_check_interval_ms
                .or(file.transaction_abort_check_interval_ms),
            transactional_id_expiration_ms: self
                .transactional_id_expiration_ms
                .or(file.transactional_id_expiration_ms),
            socket_request_max_bytes: self
                .socket_request_max_bytes
                .or(file.socket_request_max_bytes),
            zero_copy: self.zero_copy.or(file.zero_copy),
            sync_rounds_syncfs: self.sync_rounds_syncfs.or(file.sync_rounds_syncfs),
            log_writeback_bytes: self.log_writeback_bytes.or(file.log_writeback_bytes),
            max_open_segment_files: self.max_open_segment_files.or(file.max_open_segment_files),
            tcp_congestion_control: self.tcp_congestion_control.or(file.tcp_congestion_control),
            queued_max_request_bytes: self
                .queued_max_request_bytes
                .or(file.queued_max_request_bytes),
            connection_max_request_bytes: self
                .connection_max_request_bytes
                .or(file.connection_max_request_bytes),
            request_body_timeout_ms: self
                .request_body_timeout_ms
                .or(file.request_body_timeout_ms),
            connections_max_idle_ms: self
                .connections_max_idle_ms
                .or(file.connections_max_idle_ms),
            max_connections: self.max_connections.or(file.max_connections),
            max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip),
            max_partitions_per_request: self
                .max_partitions_per_request
                .or(file.max_partitions_per_request),
            max_partitions: self.max_partitions.or(file.max_partitions),
            message_max_bytes: self.message_max_bytes.or(file.message_max_bytes),
            log_segment_bytes: self.log_segment_bytes.or(file.log_segment_bytes),
            log_retention_ms: self.log_retention_ms.or(file.log_retention_ms),
            log_retention_check_interval_ms: self
                .log_retention_check_interval_ms
                .or(file.log_retention_check_interval_ms),
            log_cleaner_threads: self.log_cleaner_threads.or(file.log_cleaner_threads),
            log_cleaner_dedupe_buffer_size: self
                .log_cleaner_dedupe_buffer_size
                .or(file.log_cleaner_dedupe_buffer_size),
            log_cleaner_io_max_bytes_per_second: self
                .log_cleaner_io_max_bytes_per_second
                .or(file.log_cleaner_io_max_bytes_per_second),
            log_cleaner_backoff_ms: self.log_cleaner_backoff_ms.or(file.log_cleaner_backoff_ms),
            tier_url: self.tier_url.or(file.tier_url),
            table_url: self.table_url.or(file.table_url),
            tier_s3_endpoint: self.tier_s3_endpoint.or(file.tier_s3_endpoint),
            tier_s3_region: self.tier_s3_region.or(file.tier_s3_region),
            tier_s3_sse: self.tier_s3_sse.or(file.tier_s3_sse),
            tier_s3_kms_key_id: self.tier_s3_kms_key_id.or(file.tier_s3_kms_key_id),
            tier_cache_memory_bytes: self
                .tier_cache_memory_bytes
                .or(file.tier_cache_memory_bytes),
            tier_cache_dir: self.tier_cache_dir.or(file.tier_cache_dir),
            tier_cache_disk_bytes: self.tier_cache_disk_bytes.or(file.tier_cache_disk_bytes),
            tier_chunk_bytes: self.tier_chunk_bytes.or(file.tier_chunk_bytes),
            tier_prefetch_chunks: self.tier_prefetch_chunks.or(file.tier_prefetch_chunks),
            tier_upload_concurrency: self
                .tier_upload_concurrency
                .or(file.tier_upload_concurrency),
            tier_upload_bytes_per_sec: self
                .tier_upload_bytes_per_sec
                .or(file.tier_upload_bytes_per_sec),
            tier_interval_ms: self.tier_interval_ms.or(file.tier_interval_ms),
            tier_fetch_bytes_per_sec: self
                .tier_fetch_bytes_per_sec
                .or(file.tier_fetch_bytes_per_sec),
            tier_orphan_grace_ms: self.tier_orphan_grace_ms.or(file.tier_orphan_grace_ms),
            tier_read_timeout_ms: self.tier_read_timeout_ms.or(file.tier_read_timeout_ms),
            tier_takeover_quiet_ms: self.tier_takeover_quiet_ms.or(file.tier_takeover_quiet_ms),
            tier_shutdown_upload_timeout_ms: self
                .tier_shutdown_upload_timeout_ms
                .or(file.tier_shutdown_upload_timeout_ms),
            tier_scrub_interval_ms: self.tier_scrub_interval_ms.or(file.tier_scrub_interval_ms),
            read_replica_of: self.read_replica_of.or(file.read_replica_of),
            tier_scrub_bytes_per_sec: self
                .tier_scrub_bytes_per_sec
                .or(file.tier_scrub_bytes_per_sec),
            log_level: self.log_level.or(file.log_level),
            log_format: self.log_format.or(file.log_format),
            group_min_session_timeout_ms: self
                .group_min_session_timeout_ms
                .or(file.group_min_session_timeout_ms),
            group_max_session_timeout_ms: self
                .group_max_session_timeout_ms
                .or(file.group_max_session_timeout_ms),
            group_initial_rebalance_delay_ms: self
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms),
            offsets_retention_minutes: self
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes),
            offsets_retention_check_interval_ms: self
                .offsets_retention_check_interval_ms
                .or(file.offsets_retention_check_interval_ms),
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
        }
    }
}

/// A metadata quorum of several voters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerQuorum {
    /// Where this node serves the controller transport.
    pub listen: SocketAddr,
    /// Every voter's node id and controller address (this node's included).
    pub voters: BTreeMap<i32, String>,
    /// The transport is TLS with client certificates both ways
    /// (`--controller-security-protocol SSL`).
    pub tls: bool,
}

/// The quorum `--controller-listen` and `--controller-quorum-voters` name:
/// none when neither is set; both or neither; voters as `ID@HOST:PORT`
/// with distinct ids. A node outside them joins as a learner.
/// The authorizer flags: `--authorizer none|acl`, `--super-users` (only
/// with acl), `--allow-everyone-if-no-acl-found`.
fn authorizer(
    kind: Option<&str>,
    super_users: Option<&str>,
    allow_everyone: Option<bool>,
) -> Result<Option<std::sync::Arc<crate::security::acl::Authorizer>>, ConfigError> {
    match kind.unwrap_or("none") {
        "none" => {
            if let Some(users) = super_users {
                return Err(ConfigError::invalid(
                    "super-users",
                    users,
                    "applies only with --authorizer acl",
                ));
            }
            Ok(None)
        }
        "acl" => {
            let mut set = std::collections::BTreeSet::new();
            for p in super_users.unwrap_or("").split(';').map(str::trim) {
                if p.is_empty() {
                    continue;
                }
                match p.split_once(':') {
                    Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                        set.insert(p.to_string());
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            "super-users",
                            p,
                            "each principal must be TYPE:NAME, such as User:admin",
                        ))
                    }
                }
            }
            Ok(Some(std::sync::Arc::new(
                crate::security::acl::Authorizer {
                    super_users: set,
                    allow_everyone_if_no_acl_found: allow_everyone.unwrap_or(false),
                },
            )))
        }
        other => Err(ConfigError::invalid(
            "authorizer",
            other,
            "must be none or acl",
        )),
    }
}

fn controller_quorum(
    node_id: i32,
    listen: Option<&str>,
    voters: Option<&str>,
) -> Result<Option<ControllerQuorum>, ConfigError> {
    const VOTERS: &str = "controller-quorum-voters";
    let (listen, voters) = match (listen, voters) {
        (None, None) => return Ok(None),
        (Some(l), None) => {
            return Err(ConfigError::invalid(
                "controller-listen",
                l,
                "needs --controller-quorum-voters",
            ))
        }
        (None, Some(v)) => {
            return Err(ConfigError::invalid(
                VOTERS,
                v,
                "needs --controller-listen (where the other voters reach this node)",
            ))
        }
        (Some(l), Some(v)) => (resolve_addr("controller-listen", l)?, v),
    };
    let mut parsed = BTreeMap::new();
    for item in voters.split(',').map(str::trim) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| ConfigError::invalid(VOTERS, voters, "expected ID@HOST:PORT,..."))?;
        let id: i32 =
            id.parse().ok().filter(|id| *id >= 0).ok_or_else(|| {
                ConfigError::invalid(VOTERS, voters, format!("bad node id {id:?}"))
            })?;
        let (host, port) = parse_host_port(VOTERS, addr)?;
        if parsed.insert(id, format!("{host}:{port}")).is_some() {
            return Err(ConfigError::invalid(
                VOTERS,
                voters,
                format!("node id {id} appears twice"),
            ));
        }
    }
    // A broker outside the voters follows the metadata log as a learner;
    // the others reach it at its controller listener, which must be an
    // address they can connect to.
    if !parsed.contains_key(&node_id) && listen.ip().is_unspecified() {
        return Err(ConfigError::invalid(
            "controller-listen",
            listen,
            format!("node-id {node_id} is not a voter, so the voters reach it at this address: it must not be unspecified"),
        ));
    }
    Ok(Some(ControllerQuorum {
        listen,
        voters: parsed,
        tls: false,
    }))
}

/// `value` if it is at least `min`, else an error naming `key`.
fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<T, ConfigError> {
    if value < min {
        return Err(ConfigError::invalid(
            key,
            &value,
            format!("must be >= {min}"),
        ));
    }
    Ok(value)
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn parse_host_port(key: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::invalid(key, value, "expected HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ConfigError::invalid(key, value, "host must not be empty"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| ConfigError::invalid(key, value, "port must be a number 0-65535"))?;
    Ok((host.to_string(), port))
}

fn resolve_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = parse_host_port(key, value)?;
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| ConfigError::invalid(key, value, e))?
        .next()
        .ok_or_else(|| ConfigError::invalid(key, value, "host does not resolve"))
}

/// Topic config naming the cluster whose tier prefix holds a restored
/// topic's history (absent: this cluster).
pub const TIER_CLUSTER_ID_CONFIG: &str = "strata.tier.cluster.id";
/// Create-time only: restore the topic of this name from the tier.
pub const RESTORE_CONFIG: &str = "strata.restore";
/// Set at creation, never changed: the topic is a read-only replica of the
/// topic of the same name that the cluster of this id writes to the tier.
pub const READ_REPLICA_CONFIG: &str = "strata.read.replica.of";
/// Create-time only, with [`RESTORE_CONFIG`]: take the topic over from the
/// cluster that wrote it without waiting for its manifests to be quiet
/// (the operator vouches that it stopped).
pub const TAKEOVER_CONFIG: &str = "strata.tier.takeover";

/// Checks one topic config entry; returns a message for INVALID_CONFIG.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    check_topic_config(key, value).map_err(clip_message)
}

/// The log cleaner's settings (Kafka's `log.cleaner.*`); the dynamic
/// broker configs of the same names override them at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerSettings {
    pub threads: u32,
    /// Bytes of keys one pass may map (divided among the threads).
    pub dedupe_buffer_size: u64,
    /// 0: no limit.
    pub io_max_bytes_per_second: u64,
    pub backoff_ms: u64,
}

/// Longest message Strata puts in a response: messages quote keys and
/// values clients sent, and a response string has at most 32,767 bytes.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// `m` cut to [`MAX_MESSAGE_CHARS`] characters (marked with `...`).
pub fn clip_message(m: String) -> String {
    match m.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}...", &m[..at]),
        None => m,
    }
}

fn check_topic_config(key: &str, value: &str) -> Result<(), String> {
    match key {
        "cleanup.policy" => match value.replace(' ', "").as_str() {
            "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
            _ => Err(format!(
                "invalid value for cleanup.policy: expected delete, compact or compact,delete. value={value:?}"
            )),
        },
        // Set by a restore: the cluster whose tier prefix holds the topic.
        TIER_CLUSTER_ID_CONFIG | READ_REPLICA_CONFIG => {
            if value.is_empty() || value.contains('/') {
                Err(format!("invalid value for {key}: expected a cluster id. value={value:?}"))
            } else {
                Ok(())
            }
        }
        _ => match topic::spec(key) {
            Some(spec) => topic::check(spec, value),
            None => Err(format!("unknown topic config. key={key}")),
        },
    }
}

/// Whether `key` is a topic config (Kafka's, or Strata's own).
pub fn is_topic_config(key: &str) -> bool {
    key == TIER_CLUSTER_ID_CONFIG || key == READ_REPLICA_CONFIG || topic::spec(key).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded() {
        let c = BrokerConfig::from_args(ServeArgs::default()).expect("defaults are valid");
        assert_eq!(c.listen.port(), 9092);
        assert_eq!(c.admin_listen.port(), 9644);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.tier_url.starts_with("file://") && c.tier_url.ends_with("/tier"));
        assert!(c.auto_create_topics);
    }

    #[test]
    fn tier_s3_encryption_is_checked() {
        let sse = |sse: Option<&str>, key: Option<&str>| {
            BrokerConfig::from_args(ServeArgs {
                tier_s3_sse: sse.map(str::to_string),
                tier_s3_kms_key_id: key.map(str::to_string),
                ..Default::default()
            })
            .map(|c| c.tier.s3_sse)
            .map_err(|e| e.to_string())
        };
        assert_eq!(sse(None, None), Ok(None));
        assert_eq!(sse(Some("AES256"), None), Ok(Some(tiering::S3Sse::S3)));
        assert_eq!(
            sse(Some("aws:kms"), None),
            Ok(Some(tiering::S3Sse::Kms { key_id: None }))
        );
        assert_eq!(
            sse(Some("aws:kms"), Some("alias/strata")),
            Ok(Some(tiering::S3Sse::Kms {
                key_id: Some("alias/strata".into())
            }))
        );
        let e = sse(Some("aes256"), None).unwrap_err();
        assert!(e.contains("tier-s3-sse") && e.contains("aws:kms"), "{e}");
        let e = sse(Some("AES256"), Some("k")).unwrap_err();
        assert!(e.contains("tier-s3-kms-key-id"), "{e}");
        let e = sse(None, Some("k")).unwrap_err();
        assert!(e.contains("tier-s3-kms-key-id"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let a = ServeArgs {
            listen: Some("nonsense".into()),
            ..Default::default()
        };
        let e = BrokerConfig::from_args(a).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let a = ServeArgs {
            num_partitions: Some(0),
            ..Default::default()
        };
        let e = BrokerConfig::from_args(a).unwrap_err().to_string();
        assert!(e.contains("num-partitions"), "{e}");
        let a = ServeArgs {
            log_format: Some("xml".into()),
            ..Default::default()
        };
        let e = BrokerConfig::from_args(a).unwrap_err().to_string();
        assert!(e.contains("log-format"), "{e}");
        let a = ServeArgs {
            tier_prefetch_chunks: Some(100_000),
            ..Default::default()
        };
        let e = BrokerConfig::from_args(a).unwrap_err().to_string();
        assert!(e.contains("tier-prefetch-chunks"), "{e}");
        for (a, key) in [
            (
                ServeArgs {
                    queued_max_request_bytes: Some(10),
                    ..Default::default()
                },
                "queued-max-request-bytes",
            ),
            (
                ServeArgs {
                    connection_max_request_bytes: Some(0),
                    ..Default::default()
                },
                "connection-max-request-bytes",
            ),
            (
                ServeArgs {
                    tcp_congestion_control: Some("cubic; rm".into()),
                    ..Default::default()
                },
                "tcp-congestion-control",
            ),
            (
                ServeArgs {
                    tcp_congestion_control: Some("x".repeat(16)),
                    ..Default::default()
                },
                "tcp-congestion-control",
            ),
        ] {
            let e = BrokerConfig::from_args(a).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn flags_override_file() {
        let flags = ServeArgs {
            node_id: Some(7),
            ..Default::default()
        };
        let file: ServeArgs =
            toml::from_str("node-id = 3\nnum-partitions = 4\n").expect("valid toml");
        let merged = BrokerConfig::from_args(flags.merge_over(file)).expect("valid");
        assert_eq!(merged.node_id, 7);
        assert_eq!(merged.num_partitions, 4);
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let r = toml::from_str::<ServeArgs>("no-such-key = 1\n");
        assert!(r.is_err());
    }

    #[test]
    fn topic_config_validation() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("nope", "1").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact, delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
    }
}
