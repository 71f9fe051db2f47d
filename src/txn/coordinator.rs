//! [`Coordinator`]: the transactional ids of the `__transaction_state`
//! partitions this broker leads, each behind its own lock, changed only
//! after the record of the change is committed (module docs of `txn.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::records::{decode_key, decode_value, encode_key, encode_value};
use super::state::{self, EndOutcome, InitOutcome, TxnMeta, TxnPartition, TxnState};
use super::{CoordinatorError, KeyValue, Marker, TxnConfig, TxnError, TxnHost};
use crate::group::records::partition_for;

type Slot = Arc<AsyncMutex<Option<TxnMeta>>>;

/// How long EndTxn (and an InitProducerId that aborts an earlier
/// producer's transaction) waits for the markers after the decision is
/// durable; past it the answer goes and the markers follow.
const COMPLETION_WAIT: Duration = Duration::from_secs(5);

/// The ids of one state partition, loaded at one leader epoch.
struct Shard {
    index: i32,
    epoch: i32,
    ids: Mutex<HashMap<String, Slot>>,
}

impl Shard {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, id: &str, create: bool) -> Option<Slot> {
        let mut ids = self.ids();
        match ids.get(id) {
            Some(s) => Some(s.clone()),
            None if create => {
                let s: Slot = Arc::new(AsyncMutex::new(None));
                ids.insert(id.to_string(), s.clone());
                Some(s)
            }
            None => None,
        }
    }
}

/// The coordinator's metrics (shared with the broker's registry).
#[derive(Debug, Clone)]
pub struct TxnCounters {
    pub commits: Counter,
    pub aborts: Counter,
    pub timed_out: Counter,
    /// Seconds to load a state partition.
    pub load_seconds: Histogram,
}

/// One transaction as `strata txn` and DescribeTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnListing {
    pub meta: TxnMeta,
    pub partition: i32,
}

pub struct Coordinator {
    config: TxnConfig,
    shards: Mutex<HashMap<i32, Arc<Shard>>>,
    loading: AsyncMutex<()>,
    /// Ids whose markers a task is writing.
    completing: Mutex<HashSet<String>>,
    /// Transactions decided since the timer last looked: their markers
    /// are to be written.
    decided: Mutex<Vec<(Arc<Shard>, Slot, TxnMeta)>>,
    wake: tokio::sync::Notify,
    /// Woken whenever a transaction completed.
    completed: tokio::sync::Notify,
    closed: AtomicBool,
    pub counters: TxnCounters,
}

impl Coordinator {
    pub fn new(config: TxnConfig, counters: TxnCounters) -> Coordinator {
        Coordinator {
            config,
            shards: Mutex::new(HashMap::new()),
            loading: AsyncMutex::new(()),
            completing: Mutex::new(HashSet::new()),
            decided: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            completed: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            counters,
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    fn shards(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state partition of `id` among `partitions`.
    pub fn partition_of(id: &str, partitions: i32) -> i32 {
        partition_for(id, partitions)
    }

    /// The loaded shard that holds `id`, loading it first if needed.
    async fn shard<H: TxnHost>(&self, host: &H, id: &str) -> Result<Arc<Shard>, CoordinatorError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CoordinatorError::NotCoordinator);
        }
        if host.partitions() == 0 {
            host.ensure_topic().await?;
        }
        let index = partition_for(id, host.partitions());
        self.shard_at(host, index).await
    }

    async fn shard_at<H: TxnHost>(
        &self,
        host: &H,
        index: i32,
    ) -> Result<Arc<Shard>, CoordinatorError> {
        let epoch = host.leads(index).ok_or(CoordinatorError::NotCoordinator)?;
        if let Some(s) = self.shards().get(&index).filter(|s| s.epoch == epoch) {
            return Ok(s.clone());
        }
        let _loading = self.loading.lock().await;
        if let Some(s) = self.shards().get(&index).filter(|s| s.epoch == epoch) {
            return Ok(s.clone());
        }
        let started = std::time::Instant::now();
        let mut ids: HashMap<String, Slot> = HashMap::new();
        let mut prepared: Vec<String> = Vec::new();
        let mut offset = 0;
        let mut skipped = 0usize;
        while let Some((records, next)) = host.read(index, offset)? {
            for (key, value) in records {
                let Ok(id) = decode_key(&key) else {
                    skipped += 1;
                    continue;
                };
                match value.map(|v| decode_value(&id, &v)) {
                    Some(Ok(meta)) => {
                        ids.insert(id, Arc::new(AsyncMutex::new(Some(meta))));
                    }
                    Some(Err(_)) => skipped += 1,
                    None => {
                        ids.remove(&id);
                    }
                }
            }
            offset = next;
            tokio::task::yield_now().await;
        }
        if host.leads(index) != Some(epoch) {
            return Err(CoordinatorError::NotCoordinator);
        }
        let loaded = ids.len();
        for (id, slot) in &ids {
            if slot
                .try_lock()
                .is_ok_and(|m| m.as_ref().is_some_and(|m| m.state.is_preparing()))
            {
                prepared.push(id.clone());
            }
        }
        let shard = Arc::new(Shard {
            index,
            epoch,
            ids: Mutex::new(ids),
        });
        self.shards().insert(index, shard.clone());
        let ms = started.elapsed().as_millis() as u64;
        self.counters
            .load_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            partition = index,
            leader_epoch = epoch,
            ids = loaded,
            skipped,
            ms,
            "loaded transaction state"
        );
        // Prepared transactions of the previous coordinator: finish them.
        for id in prepared {
            if let Some(slot) = shard.slot(&id, false) {
                let meta = slot.try_lock().ok().and_then(|m| m.clone());
                if let Some(meta) = meta {
                    self.decided(&shard, slot, meta);
                }
            }
        }
        Ok(shard)
    }

    /// Queues a decided transaction for its markers.
    fn decided(&self, shard: &Arc<Shard>, slot: Slot, meta: TxnMeta) {
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((shard.clone(), slot, meta));
        self.wake.notify_one();
    }

    async fn write<H: TxnHost>(
        &self,
        host: &H,
        shard: &Shard,
        meta: &TxnMeta,
    ) -> Result<(), CoordinatorError> {
        let record = (encode_key(&meta.transactional_id), Some(encode_value(meta)));
        host.write(shard.index, shard.epoch, vec![record]).await
    }

    /// InitProducerId with a transactional id: the id's producer id and a
    /// new epoch. An open transaction of an earlier producer is aborted
    /// first (CONCURRENT_TRANSACTIONS until it is; the client retries).
    pub async fn init_producer_id<H: TxnHost>(
        &self,
        host: &H,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), CoordinatorError> {
        state::check_timeout(timeout_ms, self.config.max_timeout_ms)?;
        let shard = self.shard(host, id).await?;
        let slot = shard
            .slot(id, true)
            .ok_or(CoordinatorError::NotCoordinator)?;
        let mut current = slot.lock().await;
        // The slot was created for this call and another dropped it meanwhile.
        if shard
            .slot(id, false)
            .is_none_or(|s| !Arc::ptr_eq(&s, &slot))
        {
            return Err(TxnError::ConcurrentTransactions(id.to_string()).into());
        }
        let new_id = match current.as_ref() {
            Some(m) if m.state != TxnState::Dead && m.producer_epoch < i16::MAX - 1 => -1,
            _ => host.new_producer_id().await?,
        };
        let outcome =
            state::init_producer_id(id, current.as_ref(), timeout_ms, expected, now_ms(), || {
                new_id
            })?;
        match outcome {
            InitOutcome::Write(meta) => {
                if current.as_ref() != Some(&meta) {
                    self.write(host, &shard, &meta).await?;
                }
                let answer = (meta.producer_id, meta.producer_epoch);
                *current = Some(meta);
                Ok(answer)
            }
            InitOutcome::FenceAndAbort(meta) => {
                self.write(host, &shard, &meta).await?;
                tracing::info!(
                    transactional_id = id,
                    producer_id = meta.producer_id,
                    epoch = meta.producer_epoch,
                    "fenced the previous producer; aborting its transaction"
                );
                *current = Some(meta.clone());
                drop(current);
                self.decided(&shard, slot.clone(), meta.clone());
                // Once the abort completed, this producer's epoch is next.
                if self.wait_completed(&slot, &meta).await {
                    return Box::pin(self.init_producer_id(host, id, timeout_ms, expected)).await;
                }
                Err(TxnError::ConcurrentTransactions(id.to_string()).into())
            }
        }
    }

    /// The current metadata of `id` with its lock held.
    async fn locked<H: TxnHost>(
        &self,
        host: &H,
        id: &str,
    ) -> Result<
        (
            Arc<Shard>,
            Slot,
            tokio::sync::OwnedMutexGuard<Option<TxnMeta>>,
        ),
        CoordinatorError,
    > {
        let shard = self.shard(host, id).await?;
        let slot = shard
            .slot(id, false)
            .ok_or_else(|| CoordinatorError::UnknownId(id.to_string()))?;
        let guard = slot.clone().lock_owned().await;
        if guard.as_ref().is_none_or(|m| m.state == TxnState::Dead) {
            return Err(CoordinatorError::UnknownId(id.to_string()));
        }
        Ok((shard, slot, guard))
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the partitions join the open
    /// transaction (which begins here if none is open).
    pub async fn add_partitions<H: TxnHost>(
        &self,
        host: &H,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
    ) -> Result<(), CoordinatorError> {
        let (shard, _, mut current) = self.locked(host, id).await?;
        let Some(meta) = current.as_ref() else {
            return Err(CoordinatorError::UnknownId(id.to_string()));
        };
        if let Some(next) = state::add_partitions(meta, producer_id, epoch, partitions, now_ms())? {
            self.write(host, &shard, &next).await?;
            *current = Some(next);
        }
        Ok(())
    }

    /// KIP-890's check before a transactional produce: the partition is in
    /// the producer's open transaction.
    pub async fn verify<H: TxnHost>(
        &self,
        host: &H,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &TxnPartition,
    ) -> Result<(), CoordinatorError> {
        let (_, _, current) = self.locked(host, id).await?;
        let Some(meta) = current.as_ref() else {
            return Err(CoordinatorError::UnknownId(id.to_string()));
        };
        if meta.producer_id != producer_id || meta.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced {
                id: id.to_string(),
                current: meta.producer_epoch,
                got: epoch,
            }
            .into());
        }
        if meta.state != TxnState::Ongoing || !meta.partitions.contains(partition) {
            return Err(TxnError::InvalidTxnState {
                id: id.to_string(),
                state: meta.state.name(),
                request: "Produce to a partition not added to the transaction",
            }
            .into());
        }
        Ok(())
    }

    /// EndTxn: decides the transaction; its markers are written next.
    pub async fn end_txn<H: TxnHost>(
        &self,
        host: &H,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), CoordinatorError> {
        let (shard, slot, mut current) = self.locked(host, id).await?;
        let Some(meta) = current.as_ref() else {
            return Err(CoordinatorError::UnknownId(id.to_string()));
        };
        match state::end_txn(meta, producer_id, epoch, commit, now_ms())? {
            EndOutcome::AlreadyDone => Ok(()),
            EndOutcome::Prepare(next) => {
                self.write(host, &shard, &next).await?;
                *current = Some(next.clone());
                drop(current);
                self.decided(&shard, slot.clone(), next.clone());
                // The decision is durable: the answer waits (a while) for
                // the markers too, so the producer's next transaction does
                // not find this one still completing, and readers see it.
                self.wait_completed(&slot, &next).await;
                Ok(())
            }
        }
    }

    /// Waits until the transaction `prepared` completed (true), or
    /// [`COMPLETION_WAIT`] passed or the coordinator closed (false).
    async fn wait_completed(&self, slot: &Slot, prepared: &TxnMeta) -> bool {
        let deadline = tokio::time::Instant::now() + COMPLETION_WAIT;
        loop {
            let notified = self.completed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if slot.lock().await.as_ref() != Some(prepared) {
                return true;
            }
            if self.closed.load(Ordering::Acquire)
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                return false;
            }
        }
    }

    /// Every id this broker coordinates (loading nothing new), by state
    /// partition.
    pub fn list(&self) -> Vec<TxnListing> {
        let shards: Vec<Arc<Shard>> = self.shards().values().cloned().collect();
        let mut out = Vec::new();
        for shard in shards {
            for slot in shard.ids().values() {
                if let Ok(g) = slot.try_lock() {
                    if let Some(meta) = g.as_ref().filter(|m| m.state != TxnState::Dead) {
                        out.push(TxnListing {
                            meta: meta.clone(),
                            partition: shard.index,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.meta.transactional_id.cmp(&b.meta.transactional_id));
        out
    }

    /// The metadata of `id` (DescribeTransactions).
    pub async fn describe<H: TxnHost>(
        &self,
        host: &H,
        id: &str,
    ) -> Result<TxnMeta, CoordinatorError> {
        let (_, _, current) = self.locked(host, id).await?;
        current
            .clone()
            .ok_or_else(|| CoordinatorError::UnknownId(id.to_string()))
    }

    /// How many transactions are open (Ongoing or being completed).
    pub fn ongoing(&self) -> usize {
        self.list()
            .iter()
            .filter(|l| {
                matches!(
                    l.meta.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
            })
            .count()
    }

    /// Refuses new requests (shutdown).
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        self.completed.notify_waiters();
    }

    /// One pass of the timer: drops shards this broker no longer leads,
    /// aborts lapsed transactions, starts completing prepared ones and
    /// forgets idle ids.
    async fn tick<H: TxnHost + AsRef<Coordinator>>(host: &Arc<H>) {
        let me: &Coordinator = (**host).as_ref();
        let shards: Vec<Arc<Shard>> = me.shards().values().cloned().collect();
        for shard in shards {
            if host.leads(shard.index) != Some(shard.epoch) {
                me.shards().remove(&shard.index);
                continue;
            }
            let slots: Vec<(String, Slot)> = shard
                .ids()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (id, slot) in slots {
                let Ok(mut current) = slot.clone().try_lock_owned() else {
                    continue;
                };
                let Some(meta) = current.clone() else {
                    continue;
                };
                let now = now_ms();
                if meta.state == TxnState::Ongoing
                    && now >= meta.start_ms + i64::from(meta.timeout_ms)
                {
                    let new_id = if meta.producer_epoch >= i16::MAX - 1 {
                        match host.new_producer_id().await {
                            Ok(id) => id,
                            Err(_) => continue,
                        }
                    } else {
                        -1
                    };
                    let Some(next) = state::timed_out(&meta, now, || new_id) else {
                        continue;
                    };
                    if me.write(host.as_ref(), &shard, &next).await.is_ok() {
                        tracing::info!(transactional_id = %id, producer_id = next.producer_id, timeout_ms = meta.timeout_ms, "aborting a transaction past its timeout");
                        me.counters.timed_out.inc();
                        *current = Some(next);
                    }
                } else if state::expired(&meta, now, me.config.id_expiration_ms) {
                    let tombstone: KeyValue = (encode_key(&id), None);
                    if host
                        .write(shard.index, shard.epoch, vec![tombstone])
                        .await
                        .is_ok()
                    {
                        *current = None;
                        shard.ids().remove(&id);
                        continue;
                    }
                }
                let prepared = current.clone().filter(|m| m.state.is_preparing());
                drop(current);
                if let Some(prepared) = prepared {
                    Self::start_completion(host, shard.clone(), slot, prepared);
                }
            }
        }
    }

    /// Starts writing the markers of `prepared` unless a task already is.
    fn start_completion<H: TxnHost + AsRef<Coordinator>>(
        host: &Arc<H>,
        shard: Arc<Shard>,
        slot: Slot,
        prepared: TxnMeta,
    ) {
        let me: &Coordinator = (**host).as_ref();
        let fresh = me
            .completing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prepared.transactional_id.clone());
        if fresh {
            tokio::spawn(Self::complete(host.clone(), shard, slot, prepared));
        }
    }

    /// Writes the markers of `prepared` until every partition has its
    /// marker (or the shard is lost), then the completed state.
    async fn complete<H: TxnHost + AsRef<Coordinator>>(
        host: Arc<H>,
        shard: Arc<Shard>,
        slot: Slot,
        prepared: TxnMeta,
    ) {
        let me: &Coordinator = (*host).as_ref();
        let id = prepared.transactional_id.clone();
        let marker = Marker {
            producer_id: prepared.producer_id,
            producer_epoch: prepared.producer_epoch,
            commit: prepared.state == TxnState::PrepareCommit,
            coordinator_epoch: shard.epoch,
        };
        let mut left: Vec<TxnPartition> = prepared
            .partitions
            .iter()
            .filter(|(t, _)| host.topic_exists(t))
            .cloned()
            .collect();
        let mut backoff = Duration::from_millis(20);
        loop {
            if me.closed.load(Ordering::Acquire) || host.leads(shard.index) != Some(shard.epoch) {
                break;
            }
            left = host.write_markers(marker, left).await;
            if left.is_empty() {
                let mut current = slot.lock().await;
                if current.as_ref() == Some(&prepared) {
                    if let Some(done) = state::complete(&prepared, now_ms()) {
                        if me.write(host.as_ref(), &shard, &done).await.is_ok() {
                            let counter = if marker.commit {
                                &me.counters.commits
                            } else {
                                &me.counters.aborts
                            };
                            counter.inc();
                            *current = Some(done);
                            me.completed.notify_waiters();
                        }
                    }
                }
                break;
            }
            tracing::debug!(transactional_id = %id, left = left.len(), "markers not all written; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        // A failed completion is taken up again by the next tick.
        me.completing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Runs the coordinator's timer until `shutdown`: every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`, and
/// whenever a transaction was decided.
pub async fn run_timers<H: TxnHost + AsRef<Coordinator>>(
    host: Arc<H>,
    shutdown: CancellationToken,
) {
    let interval = Duration::from_millis((*host).as_ref().config.abort_check_interval_ms.max(10));
    let mut next_tick = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next_tick) => {
                Coordinator::tick(&host).await;
                next_tick = tokio::time::Instant::now() + interval;
            }
            _ = (*host).as_ref().wake.notified() => {
                let decided = std::mem::take(
                    &mut *(*host).as_ref().decided.lock().unwrap_or_else(|e| e.into_inner()),
                );
                for (shard, slot, meta) in decided {
                    Coordinator::start_completion(&host, shard, slot, meta);
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}
