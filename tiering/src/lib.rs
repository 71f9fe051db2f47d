//! Strata's object-store tier.
//!
//! Overview: this crate owns everything that touches object storage. The
//! broker never sees `object_store` types; it names a tier by URL and talks to
//! it through [`TierStore`]. Today the crate builds the store from a URL
//! (`file:///path`, the embedded default, and `memory://` for tests) and
//! checks at start that it can write, read back and delete an object. The
//! upload pipeline, manifests, remote reads and the cache build on this.
//!
//! Consistency: every object is written whole (a single PUT); readers never see
//! a partial object.
//!
//! Crash safety: the start-up probe object is written under a unique name and
//! removed after the check; a crash in between leaves one small orphan that a
//! later probe does not depend on.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Errors from the tier.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("invalid tier url: {message}. url={url}")]
    InvalidUrl { url: String, message: String },
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
    #[error("object read back differs from what was written. path={path}")]
    Mismatch { path: String },
}

/// A handle on the object store that holds the tier.
#[derive(Clone)]
pub struct TierStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

impl std::fmt::Debug for TierStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierStore").field("url", &self.url).finish()
    }
}

impl TierStore {
    /// Builds the store named by `url`: `file:///abs/path` (created if
    /// missing) or `memory://`.
    pub fn from_url(url: &str) -> Result<TierStore, TierError> {
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
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&path).map_err(
                    |source| TierError::Store {
                        op: "open",
                        path: path.display().to_string(),
                        source,
                    },
                )?;
                Ok(TierStore {
                    store: Arc::new(fs),
                    prefix: ObjectPath::default(),
                    url: url.to_string(),
                })
            }
            "memory" => Ok(TierStore {
                store: Arc::new(object_store::memory::InMemory::new()),
                prefix: ObjectPath::default(),
                url: url.to_string(),
            }),
            "s3" => Err(invalid(
                "s3 tiers are not supported by this build yet; use file:// or memory://",
            )),
            other => Err(invalid(&format!("unsupported scheme {other:?}"))),
        }
    }

    /// The URL this store was built from.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjectPath {
        let name = ObjectPath::from(name);
        ObjectPath::from_iter(self.prefix.parts().chain(name.parts()))
    }

    /// Writes one whole object.
    pub async fn put(&self, name: &str, data: Bytes) -> Result<(), TierError> {
        let path = self.path(name);
        self.store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|source| TierError::Store {
                op: "put",
                path: path.to_string(),
                source,
            })?;
        Ok(())
    }

    /// Reads one whole object.
    pub async fn get(&self, name: &str) -> Result<Bytes, TierError> {
        let path = self.path(name);
        let store_err = |source| TierError::Store {
            op: "get",
            path: path.to_string(),
            source,
        };
        let result = self.store.get(&path).await.map_err(store_err)?;
        result.bytes().await.map_err(|source| TierError::Store {
            op: "get",
            path: path.to_string(),
            source,
        })
    }

    /// Deletes one object.
    pub async fn delete(&self, name: &str) -> Result<(), TierError> {
        let path = self.path(name);
        self.store
            .delete(&path)
            .await
            .map_err(|source| TierError::Store {
                op: "delete",
                path: path.to_string(),
                source,
            })
    }

    /// Start-up check: write, read back and delete a probe object, so a
    /// misconfigured tier fails at start rather than at the first upload.
    pub async fn probe(&self, unique: &str) -> Result<(), TierError> {
        let name = format!("_probe/{unique}");
        let body = Bytes::from(format!("strata tier probe {unique}"));
        self.put(&name, body.clone()).await?;
        let back = self.get(&name).await?;
        if back != body {
            return Err(TierError::Mismatch { path: name });
        }
        self.delete(&name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_round_trip() {
        let s = TierStore::from_url("memory://").expect("memory store");
        s.put("a/b", Bytes::from_static(b"xyz")).await.expect("put");
        assert_eq!(s.get("a/b").await.expect("get"), Bytes::from_static(b"xyz"));
        s.probe("t1").await.expect("probe");
    }

    #[tokio::test]
    async fn file_store_is_created_and_probed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("tier");
        let url = format!("file://{}", root.display());
        let s = TierStore::from_url(&url).expect("file store");
        s.probe("t2").await.expect("probe");
        assert!(root.is_dir());
    }

    #[test]
    fn bad_urls_are_refused() {
        for u in ["not a url", "ftp://x/y", "file://relative"] {
            assert!(TierStore::from_url(u).is_err(), "{u}");
        }
    }
}
