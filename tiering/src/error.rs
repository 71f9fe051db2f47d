//! The tier's one error enum and its retry classification.

use std::sync::Arc;

/// Errors from the tier.
///
/// Messages are lowercase with values after the text. [`TierError::is_retriable`]
/// tells the retry loops (the upload pipeline, the reader's re-fetch) which
/// errors may go away on their own.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("invalid tier url: {message}. url={url}")]
    InvalidUrl { url: String, message: String },
    #[error("invalid tier option: {message}. key={key}")]
    InvalidOption { key: &'static str, message: String },
    #[error("cannot create tier directory. path={path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object store request failed. op={op}, path={path}")]
    Store {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A request made with the S3 client (what `object_store` lacks).
    #[error("s3 request failed: {message}. op={op}, path={path}")]
    S3 {
        op: &'static str,
        path: String,
        message: String,
    },
    #[error("local file i/o failed. op={op}, path={path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object read back differs from what was written. path={path}")]
    Mismatch { path: String },
    #[error("manifest was changed by another writer. path={path}")]
    ManifestConflict { path: String },
    #[error(
        "manifest is owned by a newer leader. partition={partition}, manifest_epoch={manifest_epoch}, writer_epoch={writer_epoch}"
    )]
    Fenced {
        partition: String,
        manifest_epoch: i32,
        writer_epoch: i32,
    },
    /// The manifest belongs to another cluster (it restored the topic and
    /// took the partition over, or this cluster restored it read-only):
    /// this cluster may read it but not write it.
    #[error(
        "manifest belongs to another cluster; this cluster may read but not write it. partition={partition}, owner={owner}, writer={writer}"
    )]
    NotOwner {
        partition: String,
        owner: String,
        writer: String,
    },
    /// A takeover was asked while the manifest's owner still writes it.
    #[error(
        "another cluster wrote this manifest recently and may still be writing it; take over once it has stopped. partition={partition}, owner={owner}, written_ms_ago={written_ms_ago}, quiet_ms={quiet_ms}"
    )]
    OwnerActive {
        partition: String,
        owner: String,
        written_ms_ago: i64,
        quiet_ms: i64,
    },
    #[error("manifest cannot be decoded: {message}. path={path}")]
    ManifestFormat { path: String, message: String },
    #[error("manifest version is not supported. path={path}, version={version}")]
    UnsupportedManifestVersion { path: String, version: u64 },
    /// No manifest object, but the partition has tiered data: segment
    /// objects under it, or a local copy of a manifest that existed. Never
    /// read as an empty tier; `strata tier repair` rebuilds it.
    #[error("manifest is missing but the partition has tiered data: {evidence}. path={path}")]
    ManifestMissing { path: String, evidence: String },
    /// A repair was asked for a manifest that reads fine.
    #[error("manifest is readable; nothing to repair. path={path}")]
    NothingToRepair { path: String },
    /// A sealed local segment failed its batch checks while it was read for
    /// upload: it is not uploaded, and nothing after it is.
    #[error("local segment is damaged and was not uploaded: {message}. path={path}, position={position}")]
    DamagedSegment {
        path: String,
        position: u64,
        message: String,
    },
    #[error("segment description is invalid: {message}. partition={partition}, base_offset={base_offset}")]
    InvalidSegment {
        partition: String,
        base_offset: i64,
        message: String,
    },
    #[error(
        "offset is not in the tier. offset={offset}, log_start_offset={start}, last_offset={last}"
    )]
    OffsetOutOfRange { offset: i64, start: i64, last: i64 },
    #[error("object data failed its checksum. path={path}, position={position}, expected={expected:#010x}, actual={actual:#010x}")]
    Corrupt {
        path: String,
        position: u64,
        expected: u32,
        actual: u32,
    },
    #[error("record batch in a tiered segment is malformed: {message}. path={path}, position={position}")]
    BadBatch {
        path: String,
        position: u64,
        message: String,
    },
    #[error("object store returned fewer bytes than asked. path={path}, expected={expected}, actual={actual}")]
    ShortRead {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("upload queue is full. pending={pending}, pending_bytes={pending_bytes}")]
    QueueFull { pending: usize, pending_bytes: u64 },
    #[error(
        "segment is already queued for upload. partition={partition}, base_offset={base_offset}"
    )]
    AlreadyQueued { partition: String, base_offset: i64 },
    #[error("upload pipeline is shut down")]
    ShutDown,
    #[error("operation was cancelled")]
    Cancelled,
    /// An error shared by every waiter of one cache fill (one GET serves them all).
    #[error(transparent)]
    Shared(Arc<TierError>),
}

/// An error with its causes, `outer: cause: root`, for log lines: the
/// object store's own message (refused, timed out, not found, a CRC
/// mismatch) is the part an operator needs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

impl TierError {
    /// True when the same operation may succeed if tried again later:
    /// network and server errors, a lost manifest race, a short or corrupt
    /// body (re-fetched), a full queue. False for what a retry cannot fix:
    /// fencing, missing objects, bad configuration. An undecodable manifest
    /// counts as retriable: its body may have been damaged in flight.
    pub fn is_retriable(&self) -> bool {
        match self {
            TierError::Store { source, .. } => store_error_is_retriable(source),
            TierError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            TierError::ManifestConflict { .. }
            | TierError::S3 { .. }
            | TierError::Corrupt { .. }
            | TierError::ShortRead { .. }
            | TierError::QueueFull { .. }
            | TierError::ManifestFormat { .. }
            | TierError::Mismatch { .. } => true,
            TierError::Shared(inner) => inner.is_retriable(),
            TierError::InvalidUrl { .. }
            | TierError::InvalidOption { .. }
            | TierError::CreateDir { .. }
            | TierError::Fenced { .. }
            | TierError::NotOwner { .. }
            | TierError::OwnerActive { .. }
            | TierError::UnsupportedManifestVersion { .. }
            | TierError::ManifestMissing { .. }
            | TierError::NothingToRepair { .. }
            | TierError::DamagedSegment { .. }
            | TierError::InvalidSegment { .. }
            | TierError::OffsetOutOfRange { .. }
            | TierError::BadBatch { .. }
            | TierError::AlreadyQueued { .. }
            | TierError::ShutDown
            | TierError::Cancelled => false,
        }
    }

    /// True when the partition's manifest cannot be used as it is: missing
    /// while tiered data exists, damaged, or of an unknown version. Nothing
    /// may upload, trim or collect for the partition meanwhile.
    pub fn is_manifest_unusable(&self) -> bool {
        match self {
            TierError::ManifestMissing { .. }
            | TierError::ManifestFormat { .. }
            | TierError::UnsupportedManifestVersion { .. } => true,
            TierError::Shared(inner) => inner.is_manifest_unusable(),
            _ => false,
        }
    }

    /// True for [`TierError::NotOwner`], also behind a shared error.
    pub fn is_not_owner(&self) -> bool {
        match self {
            TierError::NotOwner { .. } => true,
            TierError::Shared(inner) => inner.is_not_owner(),
            _ => false,
        }
    }

    /// True for [`TierError::Cancelled`], also behind a shared error.
    pub fn is_cancelled(&self) -> bool {
        match self {
            TierError::Cancelled => true,
            TierError::Shared(inner) => inner.is_cancelled(),
            _ => false,
        }
    }

    /// True for a checksum failure or a short body, which the reader answers
    /// by dropping the cached copy and fetching again once.
    pub(crate) fn is_integrity(&self) -> bool {
        match self {
            TierError::Corrupt { .. }
            | TierError::ShortRead { .. }
            | TierError::BadBatch { .. }
            | TierError::ManifestFormat { .. } => true,
            TierError::Shared(inner) => inner.is_integrity(),
            _ => false,
        }
    }

    /// Unwraps an error shared by a cache fill into an owned one where possible.
    pub(crate) fn from_shared(e: Arc<TierError>) -> TierError {
        match Arc::try_unwrap(e) {
            Ok(owned) => owned,
            Err(shared) => shared.clone_plain().unwrap_or(TierError::Shared(shared)),
        }
    }

    /// A copy of the variants that hold plain data (the integrity errors
    /// callers match on); `None` for those wrapping a non-cloneable source.
    fn clone_plain(&self) -> Option<TierError> {
        Some(match self {
            TierError::Corrupt {
                path,
                position,
                expected,
                actual,
            } => TierError::Corrupt {
                path: path.clone(),
                position: *position,
                expected: *expected,
                actual: *actual,
            },
            TierError::ShortRead {
                path,
                expected,
                actual,
            } => TierError::ShortRead {
                path: path.clone(),
                expected: *expected,
                actual: *actual,
            },
            TierError::BadBatch {
                path,
                position,
                message,
            } => TierError::BadBatch {
                path: path.clone(),
                position: *position,
                message: message.clone(),
            },
            TierError::ManifestFormat { path, message } => TierError::ManifestFormat {
                path: path.clone(),
                message: message.clone(),
            },
            TierError::Cancelled => TierError::Cancelled,
            TierError::Shared(inner) => return inner.clone_plain(),
            _ => return None,
        })
    }
}

fn store_error_is_retriable(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

/// Builds a [`TierError::Io`] for `op` on the local file `path`.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> TierError + 'a {
    move |source| TierError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Builds a [`TierError::Store`] for `op` on `path`.
pub(crate) fn store_err<'a>(
    op: &'static str,
    path: &'a object_store::path::Path,
) -> impl FnOnce(object_store::Error) -> TierError + 'a {
    move |source| TierError::Store {
        op,
        path: path.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification() {
        let generic = TierError::Store {
            op: "get",
            path: "x".into(),
            source: object_store::Error::Generic {
                store: "test",
                source: "boom".into(),
            },
        };
        assert!(generic.is_retriable());
        let missing = TierError::Store {
            op: "get",
            path: "x".into(),
            source: object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            },
        };
        assert!(!missing.is_retriable());
        let fenced = TierError::Fenced {
            partition: "t-0".into(),
            manifest_epoch: 3,
            writer_epoch: 2,
        };
        assert!(!fenced.is_retriable());
        assert_eq!(
            fenced.to_string(),
            "manifest is owned by a newer leader. partition=t-0, manifest_epoch=3, writer_epoch=2"
        );
        let shared = TierError::Shared(Arc::new(TierError::ShortRead {
            path: "p".into(),
            expected: 2,
            actual: 1,
        }));
        assert!(shared.is_retriable());
        assert!(shared.is_integrity());
        assert!(TierError::Shared(Arc::new(TierError::Cancelled)).is_cancelled());
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn chain_names_the_cause() {
        let e = TierError::Io {
            op: "read",
            path: "a/b".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        assert_eq!(
            error_chain(&e),
            "local file i/o failed. op=read, path=a/b: refused"
        );
    }
}
