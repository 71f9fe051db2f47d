//! The upload pipeline: [`UploadQueue`] driven by tasks, with a shared
//! bandwidth limit, retries with backoff and cancellation.
//!
//! # Overview
//!
//! [`Uploader::try_enqueue`] puts a sealed segment in the queue and returns
//! at once (the produce path never waits on object storage); a full queue is
//! [`TierError::QueueFull`] and the broker offers the segment again later.
//! [`Uploader::enqueue`] waits for room instead (bounded backpressure). A
//! dispatcher task starts uploads as the queue allows; each upload retries
//! retriable errors with exponential backoff up to `max_attempts`.
//!
//! # Consistency
//!
//! One upload per partition at a time, in queue order, so manifests grow in
//! offset order. A ticket reports the final outcome of its upload.
//!
//! # Crash safety
//!
//! The queue is memory only: after a crash the broker re-offers every local
//! segment above `last_uploaded_offset()`; duplicates resolve to
//! [`UploadOutcome::AlreadyCovered`].
//!
//! # Cancellation
//!
//! [`Uploader::shutdown`] stops accepting, lets running and queued uploads
//! finish until a deadline, then cancels the rest (their tickets get
//! [`TierError::Cancelled`] or [`TierError::ShutDown`]) and waits for every task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::TierMetrics;
use crate::partition::{RemotePartition, SegmentUpload, UploadOutcome};
use crate::throttle::{Backoff, RateLimiter};
use crate::upload_queue::{PushError, QueueLimits, Started, UploadQueue};
use crate::{PartitionKey, TierError, TierStore};

/// Settings of the upload pipeline.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// Uploads running at once (across partitions). Default 2.
    pub max_concurrent: usize,
    /// Uploads queued or running at most. Default 1024.
    pub max_pending: usize,
    /// Bytes of uploads queued or running at most. Default 64 GiB (the
    /// segments are on local disk; this bounds the backlog, not memory).
    pub max_pending_bytes: u64,
    /// Upload bandwidth in bytes per second; 0 is unlimited. Default 0.
    pub bytes_per_sec: u64,
    pub backoff: Backoff,
    /// Attempts per upload before its ticket reports the error; 0 retries
    /// until shutdown. Default 10.
    pub max_attempts: u32,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        UploaderConfig {
            max_concurrent: 2,
            max_pending: 1024,
            max_pending_bytes: 64 << 30,
            bytes_per_sec: 0,
            backoff: Backoff::default(),
            max_attempts: 10,
        }
    }
}

type Done = oneshot::Sender<Result<UploadOutcome, TierError>>;

struct Job {
    partition: RemotePartition,
    upload: SegmentUpload,
    done: Done,
}

struct Inner {
    queue: Mutex<UploadQueue<PartitionKey, Job>>,
    accepting: std::sync::atomic::AtomicBool,
    /// Wakes the dispatcher: something was queued or finished.
    work: Notify,
    /// Wakes `enqueue` waiters and `shutdown`: something finished.
    room: Notify,
    limiter: RateLimiter,
    cancel: CancellationToken,
    tracker: TaskTracker,
    config: UploaderConfig,
    metrics: Arc<TierMetrics>,
}

/// The final outcome of one queued upload.
#[derive(Debug)]
pub struct UploadTicket {
    rx: oneshot::Receiver<Result<UploadOutcome, TierError>>,
}

impl UploadTicket {
    /// Waits for the upload to finish. Dropping the ticket does not cancel it.
    pub async fn wait(self) -> Result<UploadOutcome, TierError> {
        self.rx.await.unwrap_or(Err(TierError::ShutDown))
    }
}

/// The upload pipeline shared by a broker's partitions. Clones share it.
#[derive(Clone)]
pub struct Uploader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("pending", &self.pending())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Uploader {
    /// Starts the pipeline's dispatcher on the current runtime. `cancel` is
    /// the broker's (child) token: cancelling it aborts uploads in flight.
    pub fn start(tier: &TierStore, config: UploaderConfig, cancel: CancellationToken) -> Uploader {
        let limits = QueueLimits {
            max_pending: config.max_pending.max(1),
            max_pending_bytes: config.max_pending_bytes,
            max_in_flight: config.max_concurrent.max(1),
        };
        let inner = Arc::new(Inner {
            queue: Mutex::new(UploadQueue::new(limits)),
            accepting: std::sync::atomic::AtomicBool::new(true),
            work: Notify::new(),
            room: Notify::new(),
            limiter: RateLimiter::new(config.bytes_per_sec),
            cancel,
            tracker: TaskTracker::new(),
            config,
            metrics: tier.metrics(),
        });
        let dispatcher = Arc::clone(&inner);
        inner
            .tracker
            .spawn(async move { dispatch(dispatcher).await });
        Uploader { inner }
    }

    /// The upload bandwidth limit, for other writes that share it.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// Uploads queued or running.
    pub fn pending(&self) -> usize {
        lock(&self.inner.queue).pending()
    }

    /// Queues `upload` for `partition` without waiting. Errors:
    /// [`TierError::QueueFull`] (offer it again later),
    /// [`TierError::AlreadyQueued`], [`TierError::ShutDown`].
    pub fn try_enqueue(
        &self,
        partition: &RemotePartition,
        upload: SegmentUpload,
    ) -> Result<UploadTicket, TierError> {
        if !self
            .inner
            .accepting
            .load(std::sync::atomic::Ordering::Acquire)
            || self.inner.cancel.is_cancelled()
        {
            return Err(TierError::ShutDown);
        }
        let (tx, rx) = oneshot::channel();
        let key = partition.key().clone();
        let base_offset = upload.base_offset;
        let bytes = upload.size;
        let job = Job {
            partition: partition.clone(),
            upload,
            done: tx,
        };
        let pushed = lock(&self.inner.queue).push(key, base_offset, bytes, job);
        match pushed {
            Ok(_) => {
                TierMetrics::add(&self.inner.metrics.uploads_pending, 1);
                TierMetrics::add(&self.inner.metrics.upload_bytes_pending, bytes);
                self.inner.work.notify_one();
                Ok(UploadTicket { rx })
            }
            Err(PushError::Full {
                pending,
                pending_bytes,
            }) => Err(TierError::QueueFull {
                pending,
                pending_bytes,
            }),
            Err(PushError::Duplicate) => Err(TierError::AlreadyQueued {
                partition: partition.key().display_name(),
                base_offset,
            }),
        }
    }

    /// Queues `upload`, waiting while the queue is full.
    pub async fn enqueue(
        &self,
        partition: &RemotePartition,
        upload: SegmentUpload,
    ) -> Result<UploadTicket, TierError> {
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_enqueue(partition, upload.clone()) {
                Err(TierError::QueueFull { .. }) => {
                    tokio::select! {
                        _ = room => {}
                        _ = self.inner.cancel.cancelled() => return Err(TierError::ShutDown),
                    }
                }
                other => return other,
            }
        }
    }

    /// Drops the queued (not yet running) uploads of a partition, e.g. when
    /// this broker stops leading it; their tickets get [`TierError::Cancelled`].
    pub fn cancel_partition(&self, key: &PartitionKey) -> usize {
        let jobs = lock(&self.inner.queue).remove_partition(key);
        let n = jobs.len();
        for job in jobs {
            self.unpend(job.upload.size);
            let _ = job.done.send(Err(TierError::Cancelled));
        }
        self.inner.room.notify_waiters();
        n
    }

    fn unpend(&self, bytes: u64) {
        TierMetrics::sub(&self.inner.metrics.uploads_pending, 1);
        TierMetrics::sub(&self.inner.metrics.upload_bytes_pending, bytes);
    }

    /// Stops accepting uploads, lets queued and running ones finish for up
    /// to `drain`, then cancels what is left and waits for every task.
    pub async fn shutdown(&self, drain: Duration) {
        self.inner
            .accepting
            .store(false, std::sync::atomic::Ordering::Release);
        let deadline = tokio::time::Instant::now() + drain;
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if lock(&self.inner.queue).is_idle() {
                break;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                break;
            }
        }
        self.inner.cancel.cancel();
        let left = lock(&self.inner.queue).drain_queued();
        for job in left {
            self.unpend(job.upload.size);
            let _ = job.done.send(Err(TierError::ShutDown));
        }
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

async fn dispatch(inner: Arc<Inner>) {
    loop {
        loop {
            let started = lock(&inner.queue).start_next();
            let Some(started) = started else { break };
            let worker = Arc::clone(&inner);
            inner
                .tracker
                .spawn(async move { run(worker, started).await });
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = inner.work.notified() => {}
        }
    }
}

async fn run(inner: Arc<Inner>, started: Started<PartitionKey, Job>) {
    let Started { id, key, item: job } = started;
    let Job {
        partition,
        upload,
        done,
    } = job;
    let size = upload.size;
    let task = {
        let inner = Arc::clone(&inner);
        let upload = upload.clone();
        tokio::spawn(async move { upload_with_retries(&inner, &partition, &upload).await })
    };
    let result = match task.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, partition = %key.display_name(), base_offset = upload.base_offset, "upload task panicked");
            Err(TierError::ShutDown)
        }
    };
    if let Err(e) = &result {
        if !e.is_cancelled() {
            tracing::warn!(error = %crate::error_chain(e), partition = %key.display_name(), base_offset = upload.base_offset, "segment upload failed");
        }
    }
    lock(&inner.queue).finish(&key, id);
    TierMetrics::sub(&inner.metrics.uploads_pending, 1);
    TierMetrics::sub(&inner.metrics.upload_bytes_pending, size);
    let _ = done.send(result);
    inner.work.notify_one();
    inner.room.notify_waiters();
}

async fn upload_with_retries(
    inner: &Inner,
    partition: &RemotePartition,
    upload: &SegmentUpload,
) -> Result<UploadOutcome, TierError> {
    let mut attempt = 0u32;
    loop {
        let result = partition
            .upload_segment_with(upload, &inner.cancel, &inner.limiter)
            .await;
        match result {
            Err(e) if e.is_retriable() && !inner.cancel.is_cancelled() => {
                attempt += 1;
                if inner.config.max_attempts != 0 && attempt >= inner.config.max_attempts {
                    return Err(e);
                }
                TierMetrics::add(&inner.metrics.upload_retries, 1);
                let wait = inner
                    .config
                    .backoff
                    .delay(attempt - 1, rand::random::<f64>());
                // The first retry and every tenth after it: an outage is
                // seen at once without a line per attempt.
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(error = %crate::error_chain(&e), partition = %partition.key().display_name(), base_offset = upload.base_offset, attempt, ?wait, "segment upload failed; retrying");
                } else {
                    tracing::debug!(error = %crate::error_chain(&e), attempt, ?wait, "retrying segment upload");
                }
                tokio::select! {
                    _ = inner.cancel.cancelled() => return Err(TierError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            other => return other,
        }
    }
}
