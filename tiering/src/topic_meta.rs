//! `topic.json`: what a restore needs of a topic beyond its partitions'
//! logs, beside them in the tier: its name, id, partition count and the
//! topic configs set on it (`segment.bytes`, `retention.ms`, ...).
//!
//! Written by the leader of the topic's partition 0 in its tier pass
//! whenever it differs from what this handle last wrote (once after each
//! start, then on every config or partition-count change), only while
//! this cluster owns that partition's manifest. A plain overwrite: the
//! newest writer's copy is the topic as it is now. A tier without the file
//! (written before it existed) restores with the broker's defaults.
//! Deleting the topic's partition 0 from the tier deletes it.

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::error::store_err;
use crate::layout::{self, PartitionKey};
use crate::partition::RemotePartition;
use crate::{RemoteTopic, TierError, TierStore};

/// The object's name in the topic's directory.
pub const TOPIC_META_NAME: &str = "topic.json";
/// The format version this code writes and reads.
pub const TOPIC_META_VERSION: u32 = 1;

/// The contents of `topic.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub version: u32,
    pub topic: String,
    /// 32 lowercase hex digits.
    pub topic_id: String,
    pub partitions: i32,
    /// Configs set on the topic (not the broker's defaults).
    pub configs: BTreeMap<String, String>,
}

/// The topic's directory: the partition directory's parent.
fn topic_dir(tier: &TierStore, key: &PartitionKey) -> ObjectPath {
    let dir = key.dir(&tier.inner.prefix);
    let parts: Vec<_> = dir.parts().collect();
    ObjectPath::from_iter(parts[..parts.len() - 1].iter().cloned())
}

impl RemotePartition {
    /// Writes the topic's `topic.json` (see the module docs) unless it is
    /// what this handle last wrote; returns whether it wrote.
    pub async fn publish_topic_meta(
        &self,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<bool, TierError> {
        let key = &self.inner.key;
        let meta = TopicMeta {
            version: TOPIC_META_VERSION,
            topic: key.topic.clone(),
            topic_id: key.topic_id_hex(),
            partitions,
            configs,
        };
        let body = serde_json::to_vec_pretty(&meta).expect("topic meta encodes");
        let mut last = self.inner.topic_meta_written.lock().await;
        if last.as_deref() == Some(body.as_slice()) {
            return Ok(false);
        }
        let path = layout::child(&topic_dir(&self.inner.tier, key), TOPIC_META_NAME);
        self.inner
            .tier
            .inner
            .store
            .put(&path, Bytes::from(body.clone()).into())
            .await
            .map_err(store_err("put", &path))?;
        *last = Some(body);
        Ok(true)
    }
}

impl RemotePartition {
    /// Removes the topic's `topic.json` (topic deletion, by partition 0).
    pub(crate) async fn delete_topic_meta(&self) -> Result<(), TierError> {
        let path = layout::child(
            &topic_dir(&self.inner.tier, &self.inner.key),
            TOPIC_META_NAME,
        );
        *self.inner.topic_meta_written.lock().await = None;
        match self.inner.tier.inner.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err("delete", &path)(e)),
        }
    }
}

impl TierStore {
    /// The `topic.json` of `topic` as `cluster_id` wrote it; `None` when the
    /// tier has none (written before the file existed).
    pub async fn read_topic_meta(
        &self,
        cluster_id: &str,
        topic: &RemoteTopic,
    ) -> Result<Option<TopicMeta>, TierError> {
        let key = PartitionKey::new(cluster_id, &topic.topic, topic.topic_id, 0);
        let path = layout::child(&topic_dir(self, &key), TOPIC_META_NAME);
        let bytes = match self.inner.store.get(&path).await {
            Ok(got) => got.bytes().await.map_err(store_err("get", &path))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err("get", &path)(e)),
        };
        let meta: TopicMeta =
            serde_json::from_slice(&bytes).map_err(|e| TierError::ManifestFormat {
                path: path.to_string(),
                message: e.to_string(),
            })?;
        if meta.version != TOPIC_META_VERSION {
            return Err(TierError::UnsupportedManifestVersion {
                path: path.to_string(),
                version: u64::from(meta.version),
            });
        }
        Ok(Some(meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn topic_meta_round_trips_and_is_written_once_per_change() {
        let tier = TierStore::from_url("memory://").expect("tier");
        let id = [7u8; 16];
        let p = tier.partition_as(PartitionKey::new("c1", "orders", id, 0), "c1");
        let remote = RemoteTopic {
            topic: "orders".into(),
            topic_id: id,
            partitions: vec![0],
        };
        assert_eq!(tier.read_topic_meta("c1", &remote).await.unwrap(), None);
        let configs: BTreeMap<String, String> =
            [("retention.ms".to_string(), "60000".to_string())].into();
        assert!(p.publish_topic_meta(3, configs.clone()).await.unwrap());
        assert!(!p.publish_topic_meta(3, configs.clone()).await.unwrap());
        let got = tier.read_topic_meta("c1", &remote).await.unwrap().unwrap();
        assert_eq!(got.partitions, 3);
        assert_eq!(got.configs, configs);
        assert_eq!(got.topic_id, layout::hex(&id));
        assert!(p.publish_topic_meta(4, configs).await.unwrap());
        let got = tier.read_topic_meta("c1", &remote).await.unwrap().unwrap();
        assert_eq!(got.partitions, 4);
        // Deleting partition 0 (topic deletion) takes topic.json along.
        p.delete_partition().await.unwrap();
        assert_eq!(tier.read_topic_meta("c1", &remote).await.unwrap(), None);
        // Another cluster's directory is another topic.json.
        assert_eq!(tier.read_topic_meta("c2", &remote).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_damaged_or_newer_topic_meta_is_an_error_naming_it() {
        let tier = TierStore::from_url("memory://").expect("tier");
        let id = [9u8; 16];
        let key = PartitionKey::new("c1", "t", id, 0);
        let path = layout::child(&topic_dir(&tier, &key), TOPIC_META_NAME);
        let remote = RemoteTopic {
            topic: "t".into(),
            topic_id: id,
            partitions: vec![0],
        };
        let put = |body: &'static [u8]| {
            let (store, path) = (tier.inner.store.clone(), path.clone());
            async move {
                store
                    .put(&path, Bytes::from_static(body).into())
                    .await
                    .unwrap()
            }
        };
        put(b"{not json").await;
        let e = tier.read_topic_meta("c1", &remote).await.unwrap_err();
        assert!(e.to_string().contains("topic.json"), "{e}");
        put(br#"{"version":2,"topic":"t","topic_id":"x","partitions":1,"configs":{}}"#).await;
        let e = tier.read_topic_meta("c1", &remote).await.unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
    }
}
