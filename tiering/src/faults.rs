//! A fault-injecting [`ObjectStore`] wrapper for tests (after slatedb's
//! `slatedb-dst` and neon's `UnreliableWrapper`).
//!
//! Every call draws from one seeded RNG, so a seed replays the same faults
//! for the same sequence of calls: GETs fail, return truncated bodies or
//! bodies with one flipped byte; PUTs fail before writing or after writing
//! (a lost acknowledgement); deletes and lists fail; any call may be
//! delayed. Puts to paths containing a given string can be made to always
//! fail (a crash point), and all faults can be switched off and on.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Probabilities (0.0..=1.0) and switches of injected faults.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    pub seed: u64,
    pub get_error: f64,
    pub get_truncate: f64,
    pub get_corrupt: f64,
    pub put_error: f64,
    /// The object is written, then an error is returned.
    pub put_lost_ack: f64,
    pub delete_error: f64,
    pub list_error: f64,
    /// Each call sleeps a random time up to this.
    pub max_delay: Duration,
    /// Puts (and multipart completions) of paths containing this always fail.
    pub fail_puts_containing: Option<String>,
}

/// Counts of injected faults.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub errors: AtomicU64,
    pub truncated: AtomicU64,
    pub corrupted: AtomicU64,
    pub lost_acks: AtomicU64,
}

/// The wrapper.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    config: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
    enabled: AtomicBool,
    pub counts: FaultCounts,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected fault: {what}").into(),
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> FaultyStore {
        let rng = StdRng::seed_from_u64(config.seed);
        FaultyStore {
            inner,
            config: Mutex::new(config),
            rng: Mutex::new(rng),
            enabled: AtomicBool::new(true),
            counts: FaultCounts::default(),
        }
    }

    /// Turns every fault on or off (the crash point too).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// Replaces the configuration (the RNG keeps its state).
    pub fn set_config(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn cfg(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn roll(&self, p: f64) -> bool {
        if !self.enabled.load(Ordering::SeqCst) || p <= 0.0 {
            return false;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.random::<f64>() < p
    }

    fn pick(&self, n: usize) -> usize {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.random_range(0..n.max(1))
    }

    async fn delay(&self) {
        let max = self.cfg().max_delay;
        if !self.enabled.load(Ordering::SeqCst) || max.is_zero() {
            return;
        }
        let ms = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            rng.random_range(0..=max.as_millis() as u64)
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn crash_point(&self, location: &Path) -> bool {
        self.enabled.load(Ordering::SeqCst)
            && self
                .cfg()
                .fail_puts_containing
                .is_some_and(|s| location.as_ref().contains(&s))
    }

    fn error(&self, what: &str) -> object_store::Error {
        self.counts.errors.fetch_add(1, Ordering::Relaxed);
        injected(what)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.delay().await;
        let cfg = self.cfg();
        if self.crash_point(location) || self.roll(cfg.put_error) {
            return Err(self.error("put"));
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        if self.roll(cfg.put_lost_ack) {
            self.counts.lost_acks.fetch_add(1, Ordering::Relaxed);
            return Err(self.error("put acknowledgement lost"));
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.delay().await;
        if self.roll(self.cfg().put_error) {
            return Err(self.error("put_multipart"));
        }
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        let fail_complete = self.crash_point(location) || self.roll(self.cfg().put_error);
        Ok(Box::new(FaultyUpload {
            inner: upload,
            fail_complete,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.delay().await;
        let cfg = self.cfg();
        if self.roll(cfg.get_error) {
            return Err(self.error("get"));
        }
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if head {
            return Ok(result);
        }
        let truncate = self.roll(cfg.get_truncate);
        let corrupt = self.roll(cfg.get_corrupt);
        if !truncate && !corrupt {
            return Ok(result);
        }
        let GetResult {
            payload,
            meta,
            range,
            attributes,
            extensions,
        } = result;
        let body = GetResult {
            payload,
            meta: meta.clone(),
            range: range.clone(),
            attributes: attributes.clone(),
            extensions: Default::default(),
        }
        .bytes()
        .await?;
        let mut body = body.to_vec();
        if truncate && !body.is_empty() {
            let keep = self.pick(body.len());
            body.truncate(keep);
            self.counts.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if corrupt && !body.is_empty() {
            let at = self.pick(body.len());
            let bit = 1u8 << self.pick(8);
            body[at] ^= bit;
            self.counts.corrupted.fetch_add(1, Ordering::Relaxed);
        }
        let stream = futures::stream::once(async move { Ok(Bytes::from(body)) }).boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let opts = GetOptions::new().with_range(Some(r.clone()));
            out.push(self.get_opts(location, opts).await?.bytes().await?);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if self.roll(self.cfg().delete_error) {
            let e = self.error("delete");
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.roll(self.cfg().list_error) {
            let e = self.error("list");
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.delay().await;
        if self.roll(self.cfg().list_error) {
            return Err(self.error("list"));
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.delay().await;
        if self.roll(self.cfg().put_error) {
            return Err(self.error("copy"));
        }
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    fail_complete: bool,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        if self.fail_complete {
            let _ = self.inner.abort().await;
            return Err(injected("complete_multipart"));
        }
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
