//! Building the object store from a URL, and the few store operations the
//! rest of the crate shares: cancellable calls and the conditional PUT.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio_util::sync::CancellationToken;

use crate::error::store_err;
use crate::TierError;

/// S3 connection settings. Unset fields fall back to the standard `AWS_*`
/// environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:4566` for LocalStack.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Permit plain HTTP. Defaults to true when `endpoint` is `http://…`.
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`). Default false
    /// (path style), which LocalStack and MinIO need.
    pub virtual_hosted_style: Option<bool>,
    /// Server-side encryption asked for on every object written; `None`
    /// leaves it to the bucket's default.
    pub sse: Option<S3Sse>,
}

/// Server-side encryption of the objects the tier writes to S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Sse {
    /// SSE-S3 (`x-amz-server-side-encryption: AES256`).
    S3,
    /// SSE-KMS (`aws:kms`) with this key (id, alias or ARN), or the
    /// account's default `aws/s3` key when `None`.
    Kms { key_id: Option<String> },
}

/// Tunables of a tier. [`TierOptions::default`] is what `from_url` uses.
#[derive(Debug, Clone)]
pub struct TierOptions {
    pub s3: S3Options,
    /// Bytes per ranged GET of a segment (default 4 MiB: a replay costs a
    /// GET per 4 MiB).
    pub chunk_size: u64,
    /// Bound of the in-memory read cache in bytes (default 256 MiB).
    pub memory_cache_bytes: u64,
    /// Optional directory of the disk read cache (emptied at start).
    pub disk_cache_dir: Option<PathBuf>,
    /// Bound of the disk read cache in bytes (default 4 GiB).
    pub disk_cache_bytes: u64,
    /// Chunks fetched ahead of a sequential reader (default 2; 0 disables).
    pub prefetch_chunks: u64,
    /// Files at least this large are uploaded in parts (default 16 MiB).
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (default 8 MiB; S3 needs >= 5 MiB).
    pub multipart_part_size: usize,
    /// Parts of one object in flight at once (default 4).
    pub multipart_concurrency: usize,
}

impl Default for TierOptions {
    fn default() -> Self {
        TierOptions {
            s3: S3Options::default(),
            chunk_size: 4 << 20,
            memory_cache_bytes: 256 << 20,
            disk_cache_dir: None,
            disk_cache_bytes: 4 << 30,
            prefetch_chunks: 2,
            multipart_threshold: 16 << 20,
            multipart_part_size: 8 << 20,
            multipart_concurrency: 4,
        }
    }
}

impl TierOptions {
    pub(crate) fn validate(&self) -> Result<(), TierError> {
        let bad = |key, message: &str| {
            Err(TierError::InvalidOption {
                key,
                message: message.to_string(),
            })
        };
        if self.chunk_size < 4096 || self.chunk_size > (1 << 30) {
            return bad("chunk_size", "must be between 4 KiB and 1 GiB");
        }
        if self.memory_cache_bytes < self.chunk_size * 2 {
            return bad("memory_cache_bytes", "must hold at least two chunks");
        }
        if self.multipart_part_size < 5 << 20 {
            return bad("multipart_part_size", "must be at least 5 MiB");
        }
        if self.multipart_concurrency == 0 {
            return bad("multipart_concurrency", "must be at least 1");
        }
        Ok(())
    }
}

/// How the store makes the manifest's compare-and-swap atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalPut {
    /// The store implements `PutMode::Create` and `PutMode::Update` (S3,
    /// memory, most S3-compatible stores).
    Native,
    /// The store implements `PutMode::Create` only (the local file system):
    /// updates compare the e-tag and overwrite under a lock held by this
    /// process. Safe while one process owns the tier, as with `file://`.
    ProcessLock,
}

/// What `from_url` built.
pub(crate) struct Built {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    pub conditional: ConditionalPut,
    /// `file://`: the directory the store maps object paths into.
    pub local_root: Option<std::path::PathBuf>,
    /// `s3://`: the bucket (for what `object_store` cannot do).
    pub s3_bucket: Option<String>,
}

/// object_store's key for the `x-amz-server-side-encryption` setting.
fn sse_key() -> object_store::aws::AmazonS3ConfigKey {
    "aws_server_side_encryption"
        .parse()
        .expect("object_store knows aws_server_side_encryption")
}

pub(crate) fn build(url: &str, options: &TierOptions) -> Result<Built, TierError> {
    let invalid = |message: &str| TierError::InvalidUrl {
        url: url.to_string(),
        message: message.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    match parsed.scheme() {
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|_| invalid("file url must hold an absolute path"))?;
            std::fs::create_dir_all(&path).map_err(|source| TierError::CreateDir {
                path: path.display().to_string(),
                source,
            })?;
            // Objects are fsynced with their directories before a write
            // returns, as S3 stores them durably before it answers: a
            // segment the tier holds may be deleted from the log.
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&path)
                .map_err(|source| TierError::Store {
                    op: "open",
                    path: path.display().to_string(),
                    source,
                })?
                .with_fsync(true);
            Ok(Built {
                store: Arc::new(fs),
                prefix: ObjectPath::default(),
                conditional: ConditionalPut::ProcessLock,
                local_root: Some(path),
                s3_bucket: None,
            })
        }
        "memory" => Ok(Built {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: ObjectPath::default(),
            conditional: ConditionalPut::Native,
            local_root: None,
            s3_bucket: None,
        }),
        "s3" => {
            let bucket = parsed
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| invalid("s3 url must name a bucket"))?;
            let prefix = ObjectPath::from(parsed.path().trim_matches('/'));
            let s3 = &options.s3;
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &s3.endpoint {
                b = b.with_endpoint(endpoint);
                if s3.allow_http.is_none() && endpoint.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
            }
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            } else if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                b = b.with_region("us-east-1");
            }
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &s3.secret_access_key {
                b = b.with_secret_access_key(v);
            }
            if let Some(v) = &s3.session_token {
                b = b.with_token(v);
            }
            if let Some(v) = s3.allow_http {
                b = b.with_allow_http(v);
            }
            if let Some(v) = s3.virtual_hosted_style {
                b = b.with_virtual_hosted_style_request(v);
            }
            match &s3.sse {
                None => {}
                Some(S3Sse::S3) => b = b.with_config(sse_key(), "AES256"),
                Some(S3Sse::Kms { key_id: Some(key) }) => {
                    b = b.with_sse_kms_encryption(key.clone());
                }
                Some(S3Sse::Kms { key_id: None }) => b = b.with_config(sse_key(), "aws:kms"),
            }
            let store = b.build().map_err(|source| TierError::Store {
                op: "open",
                path: url.to_string(),
                source,
            })?;
            Ok(Built {
                store: Arc::new(store),
                prefix,
                conditional: ConditionalPut::Native,
                local_root: None,
                s3_bucket: Some(bucket.to_string()),
            })
        }
        other => Err(invalid(&format!("unsupported scheme {other:?}"))),
    }
}

/// Runs `f` unless `cancel` fires first.
pub(crate) async fn cancellable<T>(
    cancel: Option<&CancellationToken>,
    f: impl Future<Output = Result<T, TierError>>,
) -> Result<T, TierError> {
    match cancel {
        None => f.await,
        Some(token) => tokio::select! {
            biased;
            _ = token.cancelled() => Err(TierError::Cancelled),
            r = f => r,
        },
    }
}

/// The compare-and-swap of a manifest: creates it when `expected` is `None`,
/// replaces it only if it still has version `expected` otherwise. A lost
/// race is [`TierError::ManifestConflict`].
pub(crate) async fn put_conditional(
    store: &dyn ObjectStore,
    mode: ConditionalPut,
    lock: &tokio::sync::Mutex<()>,
    path: &ObjectPath,
    body: Bytes,
    expected: Option<UpdateVersion>,
) -> Result<UpdateVersion, TierError> {
    let conflict = |e: object_store::Error| match e {
        object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. } => {
            TierError::ManifestConflict {
                path: path.to_string(),
            }
        }
        other => store_err("put", path)(other),
    };
    let payload = PutPayload::from(body);
    match (mode, expected) {
        (ConditionalPut::Native, expected) => {
            let mode = match expected {
                None => PutMode::Create,
                Some(v) => PutMode::Update(v),
            };
            let r = store
                .put_opts(path, payload, PutOptions::from(mode))
                .await
                .map_err(conflict)?;
            Ok(r.into())
        }
        (ConditionalPut::ProcessLock, None) => {
            let _held = lock.lock().await;
            let r = store
                .put_opts(path, payload, PutOptions::from(PutMode::Create))
                .await
                .map_err(conflict)?;
            Ok(r.into())
        }
        (ConditionalPut::ProcessLock, Some(v)) => {
            let _held = lock.lock().await;
            let current = match store.head(path).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(TierError::ManifestConflict {
                        path: path.to_string(),
                    })
                }
                Err(e) => return Err(store_err("head", path)(e)),
            };
            if current.e_tag != v.e_tag {
                return Err(TierError::ManifestConflict {
                    path: path.to_string(),
                });
            }
            let r = store
                .put_opts(path, payload, PutOptions::from(PutMode::Overwrite))
                .await
                .map_err(conflict)?;
            Ok(r.into())
        }
    }
}
