//! openraft storage of the metadata log, persisted to files in one directory.
//!
//! Implements openraft's `RaftStorage` (storage v1), which openraft's
//! `Adaptor` turns into the v2 `RaftLogStorage` + `RaftStateMachine` pair.
//! The v2 traits are sealed unless openraft's `storage-v2` feature is on; the
//! methods map one to one, so moving over is mechanical.
//!
//! Files (each a sequence of CRC-32C framed JSON records, see `files.rs`,
//! each with a `version` field, currently 1):
//! - `raft.log`: header + log entries (see `log_file.rs`).
//! - `vote`: the last saved vote. Replaced atomically, fsync'd.
//! - `committed`: the last saved committed log id. Replaced atomically.
//! - `snapshot`: snapshot meta + the whole state machine (view, last applied
//!   log id, membership). Replaced atomically.
//!
//! The state machine itself is in memory and not persisted on apply: on
//! restart it is the last snapshot, and openraft re-applies the committed log
//! after it. Log entries are also cached in memory (the log is bounded by
//! snapshots and purging). File I/O is synchronous: metadata writes are rare
//! and small.

mod files;
mod log_file;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{
    LogState, RaftLogReader, RaftSnapshotBuilder, RaftStorage, Snapshot, SnapshotMeta,
};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use self::files::{check_version, io_error, read_record_file, write_record_file};
use self::log_file::{LogFile, Recovered};
use super::{ClusterView, CommandResult, MetadataError, NodeId, Publisher, TypeConfig};

const VERSION: u32 = 1;
const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
const SNAPSHOT_FILE: &str = "snapshot";

type Storage = StorageError<NodeId>;
type Entries = Arc<RwLock<BTreeMap<u64, Entry<TypeConfig>>>>;

/// Everything a snapshot holds; also the live state machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StateMachine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    view: ClusterView,
}

#[derive(Serialize, Deserialize)]
struct VoteFile {
    version: u32,
    vote: Vote<NodeId>,
}

#[derive(Serialize, Deserialize)]
struct CommittedFile {
    version: u32,
    committed: Option<LogId<NodeId>>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    meta: SnapshotMeta<NodeId, BasicNode>,
    state: StateMachine,
}

/// The current snapshot: its meta and its serialized [`StateMachine`].
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

/// State shared with the snapshot builder, which runs in its own task.
struct Shared {
    snapshot_path: PathBuf,
    sm: Mutex<StateMachine>,
    /// The current snapshot; the lock also serializes snapshot file writes.
    snapshot: Mutex<Option<StoredSnapshot>>,
    publisher: Arc<Publisher>,
}

impl Shared {
    /// The state machine; an error if a panic while applying may have left
    /// it half-applied.
    fn sm(&self) -> Result<MutexGuard<'_, StateMachine>, MetadataError> {
        self.sm.lock().map_err(|_| MetadataError::Poisoned)
    }

    fn current_snapshot(&self) -> MutexGuard<'_, Option<StoredSnapshot>> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Persists `state` as the snapshot described by `meta`, unless the
    /// current snapshot is newer; returns the current snapshot.
    fn store_snapshot(
        &self,
        meta: SnapshotMeta<NodeId, BasicNode>,
        state: StateMachine,
    ) -> Result<StoredSnapshot, MetadataError> {
        let mut current = self.current_snapshot();
        if let Some(cur) = current.as_ref() {
            if cur.meta.last_log_id > meta.last_log_id {
                return Ok(cur.clone());
            }
        }
        let data = serde_json::to_vec(&state).map_err(|source| MetadataError::Encode {
            what: "snapshot",
            source,
        })?;
        let file = SnapshotFile {
            version: VERSION,
            meta,
            state,
        };
        write_record_file("snapshot", &self.snapshot_path, &file)?;
        let stored = StoredSnapshot {
            meta: file.meta,
            data,
        };
        *current = Some(stored.clone());
        Ok(stored)
    }
}

/// The metadata raft storage: log, vote, committed id, state machine and
/// snapshots.
pub(crate) struct Store {
    dir: PathBuf,
    log: LogFile,
    entries: Entries,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    shared: Arc<Shared>,
    /// Dropped with the store, its readers and builders: lets shutdown wait.
    alive: mpsc::Sender<()>,
}

impl Store {
    /// Opens the storage in `dir` (created if missing), restores the state
    /// machine from the snapshot and publishes it.
    pub(crate) fn open(
        dir: &Path,
        publisher: Arc<Publisher>,
        alive: mpsc::Sender<()>,
    ) -> Result<Store, MetadataError> {
        std::fs::create_dir_all(dir).map_err(io_error("create dir", dir))?;

        let vote_path = dir.join(VOTE_FILE);
        let vote = match read_record_file::<VoteFile>(&vote_path)? {
            Some(file) => {
                check_version(&vote_path, file.version, VERSION)?;
                Some(file.vote)
            }
            None => None,
        };
        let committed_path = dir.join(COMMITTED_FILE);
        let committed = match read_record_file::<CommittedFile>(&committed_path)? {
            Some(file) => {
                check_version(&committed_path, file.version, VERSION)?;
                file.committed
            }
            None => None,
        };
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (sm, snapshot) = match read_record_file::<SnapshotFile>(&snapshot_path)? {
            Some(file) => {
                check_version(&snapshot_path, file.version, VERSION)?;
                let data =
                    serde_json::to_vec(&file.state).map_err(|source| MetadataError::Encode {
                        what: "snapshot",
                        source,
                    })?;
                let stored = StoredSnapshot {
                    meta: file.meta,
                    data,
                };
                (file.state, Some(stored))
            }
            None => (StateMachine::default(), None),
        };

        let log_path = dir.join(LOG_FILE);
        let Recovered { log, entries, torn } = LogFile::open(&log_path)?;
        if let Some(torn) = torn {
            tracing::warn!(
                path = %log_path.display(),
                offset = torn.offset,
                dropped_bytes = torn.bytes,
                reason = %torn.reason,
                "dropped the torn tail of the metadata log"
            );
        }
        let last_log_index = entries
            .last()
            .map(|e| e.log_id.index)
            .or(log.last_purged().map(|p| p.index));
        let snapshot_index = sm.last_applied.map(|l| l.index);
        if let Some(committed) = committed {
            if last_log_index.max(snapshot_index) < Some(committed.index) {
                return Err(MetadataError::Corrupt {
                    path: log_path,
                    offset: 0,
                    reason: format!(
                        "log ends before the committed index. committed={}, last_log={last_log_index:?}, snapshot={snapshot_index:?}",
                        committed.index
                    ),
                });
            }
        }

        publisher.publish(&sm.view, sm.last_applied.map(|l| l.index));
        Ok(Store {
            dir: dir.to_path_buf(),
            log,
            entries: Arc::new(RwLock::new(
                entries.into_iter().map(|e| (e.log_id.index, e)).collect(),
            )),
            vote,
            committed,
            shared: Arc::new(Shared {
                snapshot_path,
                sm: Mutex::new(sm),
                snapshot: Mutex::new(snapshot),
                publisher,
            }),
            alive,
        })
    }

    /// The voters of the latest membership (log first, then snapshot), or
    /// `None` on a store that was never initialized.
    pub(crate) fn last_voters(&self) -> Option<BTreeSet<NodeId>> {
        let from_log = read(&self.entries)
            .values()
            .rev()
            .find_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some(m.voter_ids().collect::<BTreeSet<_>>()),
                _ => None,
            });
        let voters = match from_log {
            Some(voters) => voters,
            None => {
                let sm = self
                    .shared
                    .sm
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                sm.membership.membership().voter_ids().collect()
            }
        };
        (!voters.is_empty()).then_some(voters)
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        read(&self.entries)
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.log.last_purged())
    }
}

fn read(entries: &Entries) -> RwLockReadGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
    entries.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(entries: &Entries) -> RwLockWriteGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
    entries.write().unwrap_or_else(PoisonError::into_inner)
}

fn read_range<RB: RangeBounds<u64>>(entries: &Entries, range: RB) -> Vec<Entry<TypeConfig>> {
    read(entries).range(range).map(|(_, e)| e.clone()).collect()
}

fn snapshot_id(last: Option<LogId<NodeId>>) -> String {
    match last {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "empty".to_string(),
    }
}

/// Reads log entries for openraft's replication; shares the store's cache.
pub(crate) struct LogReader {
    entries: Entries,
    _alive: mpsc::Sender<()>,
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Storage> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for Store {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Storage> {
        Ok(read_range(&self.entries, range))
    }
}

/// Builds snapshots in openraft's snapshot task.
pub(crate) struct SnapshotBuilder {
    shared: Arc<Shared>,
    _alive: mpsc::Sender<()>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Storage> {
        let state = self
            .shared
            .sm()
            .map_err(|e| StorageIOError::read_state_machine(&e))?
            .clone();
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: snapshot_id(state.last_applied),
        };
        let signature = meta.signature();
        let stored = self
            .shared
            .store_snapshot(meta, state)
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        tracing::info!(snapshot = %stored.meta, "metadata snapshot built");
        Ok(stored.to_snapshot())
    }
}

impl RaftStorage<TypeConfig> for Store {
    type LogReader = LogReader;
    type SnapshotBuilder = SnapshotBuilder;

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), Storage> {
        let file = VoteFile {
            version: VERSION,
            vote: *vote,
        };
        write_record_file("vote", &self.dir.join(VOTE_FILE), &file)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, Storage> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), Storage> {
        let file = CommittedFile {
            version: VERSION,
            committed,
        };
        write_record_file("committed", &self.dir.join(COMMITTED_FILE), &file)
            .map_err(|e| StorageIOError::write(&e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, Storage> {
        Ok(self.committed)
    }

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, Storage> {
        Ok(LogState {
            last_purged_log_id: self.log.last_purged(),
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            entries: Arc::clone(&self.entries),
            _alive: self.alive.clone(),
        }
    }

    async fn append_to_log<I>(&mut self, entries: I) -> Result<(), Storage>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id) else {
            return Ok(());
        };
        if let Some(pair) = entries
            .windows(2)
            .find(|w| w[0].log_id.index >= w[1].log_id.index)
        {
            let reason = format!(
                "log append out of order. index={}, next={}",
                pair[0].log_id.index, pair[1].log_id.index
            );
            return Err(StorageIOError::write_log_entry(first, AnyError::error(reason)).into());
        }
        // openraft appends right after the last log id, after truncating
        // conflicts. The storage suite also appends with holes and at purged
        // indexes; those are stored too (and purged entries are forgotten
        // on reopen).
        if self
            .log
            .last_purged()
            .is_some_and(|p| first.index <= p.index)
        {
            tracing::warn!(index = first.index, "metadata log append at a purged index");
        }
        let last_entry = read(&self.entries).keys().next_back().copied();
        match last_entry {
            // Overwrite: keep the file in index order.
            Some(last) if first.index <= last => self.delete_conflict_logs_since(first).await?,
            Some(last) if first.index > last + 1 => {
                tracing::warn!(
                    last,
                    first = first.index,
                    "metadata log append leaves a hole"
                );
            }
            _ => {}
        }
        self.log
            .append(&entries)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        write(&self.entries).extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        Ok(())
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<NodeId>) -> Result<(), Storage> {
        self.log
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        write(&self.entries).split_off(&log_id.index);
        Ok(())
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> Result<(), Storage> {
        if self.log.last_purged() >= Some(log_id) {
            return Ok(());
        }
        let mut entries = write(&self.entries);
        let first_kept = log_id.index + 1;
        self.log
            .purge(log_id, entries.range(first_kept..).map(|(_, e)| e))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        *entries = entries.split_off(&first_kept);
        Ok(())
    }

    async fn last_applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), Storage> {
        let sm = self
            .shared
            .sm()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        Ok((sm.last_applied, sm.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> Result<Vec<CommandResult>, Storage> {
        let mut sm = self
            .shared
            .sm()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            sm.last_applied = Some(entry.log_id);
            let result = match &entry.payload {
                EntryPayload::Blank => CommandResult::Ok,
                EntryPayload::Normal(cmd) => sm.view.apply(cmd),
                EntryPayload::Membership(membership) => {
                    sm.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    CommandResult::Ok
                }
            };
            results.push(result);
        }
        self.shared
            .publisher
            .publish(&sm.view, sm.last_applied.map(|l| l.index));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
            _alive: self.alive.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Storage> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Storage> {
        let signature = meta.signature();
        let mut state: StateMachine = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(signature.clone()), &e))?;
        // The meta is authoritative for what the snapshot covers.
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        self.shared
            .store_snapshot(meta.clone(), state.clone())
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        let mut sm = self
            .shared
            .sm()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        *sm = state;
        self.shared
            .publisher
            .publish(&sm.view, sm.last_applied.map(|l| l.index));
        tracing::info!(snapshot = %meta, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, Storage> {
        Ok(self
            .shared
            .current_snapshot()
            .as_ref()
            .map(StoredSnapshot::to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::Adaptor;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};
    use tempfile::TempDir;

    use super::*;
    use crate::metadata::Command;

    struct TempStoreBuilder;

    impl StoreBuilder<TypeConfig, Adaptor<TypeConfig, Store>, Adaptor<TypeConfig, Store>, TempDir>
        for TempStoreBuilder
    {
        async fn build(
            &self,
        ) -> Result<
            (
                TempDir,
                Adaptor<TypeConfig, Store>,
                Adaptor<TypeConfig, Store>,
            ),
            Storage,
        > {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let store = open(dir.path()).map_err(|e| StorageIOError::read(&e))?;
            let (log_store, state_machine) = Adaptor::new(store);
            Ok((dir, log_store, state_machine))
        }
    }

    fn open(dir: &Path) -> Result<Store, MetadataError> {
        Store::open(dir, Arc::new(Publisher::new()), mpsc::channel(1).0)
    }

    #[test]
    fn openraft_suite() {
        Suite::test_all(TempStoreBuilder).expect("openraft storage suite");
    }

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(index),
            payload,
        }
    }

    #[tokio::test]
    async fn vote_committed_log_and_snapshot_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let membership = Membership::new(vec![BTreeSet::from([1])], None);
        {
            let mut store = open(dir.path()).expect("open");
            store
                .save_vote(&Vote::new_committed(1, 1))
                .await
                .expect("vote");
            let entries = vec![
                entry(0, EntryPayload::Membership(membership.clone())),
                entry(1, EntryPayload::Blank),
                entry(
                    2,
                    EntryPayload::Normal(Command::AllocateProducerIds { count: 5 }),
                ),
                entry(
                    3,
                    EntryPayload::Normal(Command::AllocateProducerIds { count: 5 }),
                ),
            ];
            store.append_to_log(entries.clone()).await.expect("append");
            store
                .save_committed(Some(log_id(3)))
                .await
                .expect("committed");
            let results = store
                .apply_to_state_machine(&entries[..3])
                .await
                .expect("apply");
            assert_eq!(
                results[2],
                CommandResult::ProducerIdBlock { first: 0, count: 5 }
            );
            store
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("snapshot");
            store.purge_logs_upto(log_id(1)).await.expect("purge");
        }
        let mut store = open(dir.path()).expect("reopen");
        assert_eq!(
            store.read_vote().await.expect("vote"),
            Some(Vote::new_committed(1, 1))
        );
        assert_eq!(
            store.read_committed().await.expect("committed"),
            Some(log_id(3))
        );
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1)));
        assert_eq!(state.last_log_id, Some(log_id(3)));
        let (applied, stored_membership) = store.last_applied_state().await.expect("applied");
        assert_eq!(applied, Some(log_id(2)));
        assert_eq!(stored_membership.membership(), &membership);
        assert_eq!(store.shared.sm().expect("sm").view.next_producer_id, 5);
        let snapshot = store
            .get_current_snapshot()
            .await
            .expect("snapshot")
            .expect("present");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(2)));
        assert_eq!(store.last_voters(), Some(BTreeSet::from([1])));
    }

    #[tokio::test]
    async fn log_shorter_than_committed_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = open(dir.path()).expect("open");
            store
                .append_to_log(vec![
                    entry(0, EntryPayload::Blank),
                    entry(1, EntryPayload::Blank),
                ])
                .await
                .expect("append");
            store
                .save_committed(Some(log_id(1)))
                .await
                .expect("committed");
        }
        let log = dir.path().join(LOG_FILE);
        let bytes = std::fs::read(&log).expect("read");
        std::fs::write(&log, &bytes[..bytes.len() - 3]).expect("tear a committed record");
        assert!(matches!(
            open(dir.path()),
            Err(MetadataError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn older_snapshot_does_not_replace_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path()).expect("open");
        let meta = |index| SnapshotMeta {
            last_log_id: Some(log_id(index)),
            last_membership: StoredMembership::default(),
            snapshot_id: snapshot_id(Some(log_id(index))),
        };
        let newer = store
            .shared
            .store_snapshot(meta(5), StateMachine::default())
            .expect("store");
        let kept = store
            .shared
            .store_snapshot(meta(3), StateMachine::default())
            .expect("store");
        assert_eq!(kept.meta, newer.meta);
        drop(store);
        let mut store = open(dir.path()).expect("reopen");
        let current = store
            .get_current_snapshot()
            .await
            .expect("get")
            .expect("present");
        assert_eq!(current.meta.last_log_id, Some(log_id(5)));
    }
}
