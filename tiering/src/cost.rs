//! What the tier asks of the object store, per topic: requests by billing
//! class and bytes each way, counted by a wrapper around the store
//! ([`CountingStore`]) that every tier operation goes through, so nothing
//! escapes the count. The broker exports the counts
//! (`strata_tier_requests_total`, `strata_tier_request_bytes_total`) and
//! `strata tier cost` prices them.
//!
//! Classes, as S3 bills them: `put` (PUT, COPY, and each request of a
//! multipart upload: create, every part, complete), `get` (GET and HEAD),
//! `list` (one per page of up to 1,000 keys), `delete` (one per object;
//! S3 does not charge for deletes, and batches up to 1,000 in a request).
//!
//! A request is the topic's when its path lies under one of the topic's
//! directories (`<cluster>/<topic>-<topic id>/…`, see [`crate::layout`]);
//! listings of the whole tier or of a cluster's prefix, and the start-up
//! probe's objects, count under the empty topic name.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// Keys per page of an S3 listing.
const LIST_PAGE: u64 = 1000;

/// Request counters of one topic (or of the tier as a whole, topic "").
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    /// Bytes sent to the store (PUT bodies and parts).
    pub bytes_put: AtomicU64,
    /// Bytes the store returned (GET bodies).
    pub bytes_got: AtomicU64,
}

/// A reading of [`RequestCounts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestTotals {
    pub puts: u64,
    pub gets: u64,
    pub lists: u64,
    pub deletes: u64,
    pub bytes_put: u64,
    pub bytes_got: u64,
}

impl RequestCounts {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn totals(&self) -> RequestTotals {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestTotals {
            puts: g(&self.puts),
            gets: g(&self.gets),
            lists: g(&self.lists),
            deletes: g(&self.deletes),
            bytes_put: g(&self.bytes_put),
            bytes_got: g(&self.bytes_got),
        }
    }
}

/// The counters of every topic the tier touched.
#[derive(Debug)]
pub struct StoreRequests {
    /// Path components of the tier's prefix, before the cluster's.
    prefix_parts: usize,
    by_topic: RwLock<HashMap<String, Arc<RequestCounts>>>,
}

impl StoreRequests {
    pub(crate) fn new(prefix: &Path) -> StoreRequests {
        StoreRequests {
            prefix_parts: prefix.parts().count(),
            by_topic: RwLock::new(HashMap::new()),
        }
    }

    /// Every topic's totals, by topic name ("" for the tier as a whole).
    pub fn by_topic(&self) -> Vec<(String, RequestTotals)> {
        let map = self.by_topic.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map.iter().map(|(t, c)| (t.clone(), c.totals())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The totals of `topic` (zero when it made no request).
    pub fn topic(&self, topic: &str) -> RequestTotals {
        self.by_topic
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .map(|c| c.totals())
            .unwrap_or_default()
    }

    /// The topic a path belongs to: the directory after the cluster's,
    /// without its `-<topic id>` suffix; "" above any topic directory.
    pub fn topic_of(&self, path: &Path) -> String {
        let mut parts = path.parts().skip(self.prefix_parts);
        let (Some(cluster), Some(dir)) = (parts.next(), parts.next()) else {
            return String::new();
        };
        if cluster.as_ref() == crate::PROBE_DIR {
            return String::new();
        }
        let dir = dir.as_ref();
        if cluster.as_ref() == crate::TABLES_DIR {
            // `tables/<topic>/...`: a topic's Parquet files.
            return dir.to_string();
        }
        match dir.rsplit_once('-') {
            Some((topic, id)) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                topic.to_string()
            }
            _ => String::new(),
        }
    }

    fn counts(&self, path: Option<&Path>) -> Arc<RequestCounts> {
        let topic = path.map(|p| self.topic_of(p)).unwrap_or_default();
        if let Some(c) = self
            .by_topic
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&topic)
        {
            return Arc::clone(c);
        }
        Arc::clone(
            self.by_topic
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(topic)
                .or_default(),
        )
    }
}

/// An [`ObjectStore`] that counts what goes through it (module docs).
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    requests: Arc<StoreRequests>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, requests: Arc<StoreRequests>) -> CountingStore {
        CountingStore { inner, requests }
    }
}

impl fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let c = self.requests.counts(Some(location));
        RequestCounts::add(&c.puts, 1);
        RequestCounts::add(&c.bytes_put, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let counts = self.requests.counts(Some(location));
        RequestCounts::add(&counts.puts, 1);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload { inner, counts }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let c = self.requests.counts(Some(location));
        RequestCounts::add(&c.gets, 1);
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            RequestCounts::add(&c.bytes_got, result.range.end - result.range.start);
        }
        Ok(result)
    }

    // Not delegated: the default splits the ranges into the GETs the
    // store is really asked for, each through `get_opts`.
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        object_store::coalesce_ranges(
            ranges,
            |range| {
                let opts = GetOptions::new().with_range(Some(range));
                async move { self.get_opts(location, opts).await?.bytes().await }
            },
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let requests = Arc::clone(&self.requests);
        let counted = locations
            .inspect(move |p| {
                if let Ok(p) = p {
                    RequestCounts::add(&requests.counts(Some(p)).deletes, 1);
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let c = self.requests.counts(prefix);
        RequestCounts::add(&c.lists, 1);
        let mut seen = 0u64;
        self.inner
            .list(prefix)
            .inspect(move |_| {
                seen += 1;
                if seen % LIST_PAGE == 0 {
                    RequestCounts::add(&c.lists, 1);
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let c = self.requests.counts(prefix);
        let result = self.inner.list_with_delimiter(prefix).await?;
        let keys = (result.objects.len() + result.common_prefixes.len()) as u64;
        RequestCounts::add(&c.lists, 1 + keys.saturating_sub(1) / LIST_PAGE);
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        RequestCounts::add(&self.requests.counts(Some(to)).puts, 1);
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Arc<RequestCounts>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        RequestCounts::add(&self.counts.puts, 1);
        RequestCounts::add(&self.counts.bytes_put, data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        RequestCounts::add(&self.counts.puts, 1);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        RequestCounts::add(&self.counts.deletes, 1);
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn store(prefix: &str) -> (CountingStore, Arc<StoreRequests>) {
        let requests = Arc::new(StoreRequests::new(&Path::from(prefix)));
        (
            CountingStore::new(Arc::new(InMemory::new()), Arc::clone(&requests)),
            requests,
        )
    }

    #[test]
    fn paths_belong_to_the_topic_of_their_directory() {
        let (_, r) = store("tier/prefix");
        let topic = |p: &str| r.topic_of(&Path::from(p));
        assert_eq!(
            topic(&format!("tier/prefix/c1/orders-{ID}/0/manifest.json")),
            "orders"
        );
        assert_eq!(topic(&format!("tier/prefix/c1/a-b-{ID}/3/x.log")), "a-b");
        assert_eq!(topic(&format!("tier/prefix/c1/orders-{ID}")), "orders");
        assert_eq!(topic("tier/prefix/c1"), "");
        assert_eq!(topic("tier/prefix/_probe/x"), "");
        assert_eq!(topic(&format!("tier/prefix/_probe/node-1-{ID}")), "");
        assert_eq!(topic("tier/prefix/c1/not-a-topic-dir/0"), "");
        assert_eq!(
            topic("tier/prefix/tables/orders/dt=2026-01-01/partition=0/x.parquet"),
            "orders"
        );
    }

    #[tokio::test]
    async fn every_request_is_counted_with_its_bytes() {
        let (s, r) = store("");
        let seg = Path::from(format!("c/t-{ID}/0/00000000000000000000-u.log"));
        s.put(&seg, PutPayload::from(vec![7u8; 1000]))
            .await
            .unwrap();
        s.get_range(&seg, 10..110).await.unwrap();
        s.head(&seg).await.unwrap();
        let got = s.get_ranges(&seg, &[0..10, 500..600]).await.unwrap();
        assert_eq!(got[1].len(), 100);
        let mut up = s
            .put_multipart(&Path::from(format!("c/t-{ID}/0/big.log")))
            .await
            .unwrap();
        up.put_part(PutPayload::from(vec![1u8; 300])).await.unwrap();
        up.put_part(PutPayload::from(vec![1u8; 200])).await.unwrap();
        up.complete().await.unwrap();
        let listed: Vec<_> = s.list(Some(&Path::from("c"))).collect().await;
        assert_eq!(listed.len(), 2);
        s.list_with_delimiter(Some(&Path::from(format!("c/t-{ID}/0"))))
            .await
            .unwrap();
        s.delete(&seg).await.unwrap();
        let t = r.topic("t");
        // One PUT, four for the multipart upload (create, two parts,
        // complete).
        assert_eq!(t.puts, 5);
        assert_eq!(t.bytes_put, 1500);
        // A ranged GET, a HEAD, and one GET for both ranges of get_ranges
        // (near enough to be coalesced into 0..600).
        assert_eq!(t.gets, 3);
        assert_eq!(t.bytes_got, 100 + 600);
        assert_eq!(t.lists, 1);
        assert_eq!(t.deletes, 1);
        assert_eq!(r.topic("").lists, 1);
    }

    #[tokio::test]
    async fn long_listings_count_a_request_per_page() {
        let (s, r) = store("");
        for i in 0..2500 {
            s.put(
                &Path::from(format!("c/t-{ID}/0/{i}")),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
        }
        let n = s.list(Some(&Path::from(format!("c/t-{ID}")))).count().await;
        assert_eq!(n, 2500);
        assert_eq!(r.topic("t").lists, 3);
        s.list_with_delimiter(Some(&Path::from(format!("c/t-{ID}/0"))))
            .await
            .unwrap();
        assert_eq!(r.topic("t").lists, 6);
    }
}
