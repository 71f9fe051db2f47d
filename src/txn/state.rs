//! The transaction coordinator's state machine, as pure data: one
//! [`TxnMeta`] per transactional id and the transitions the APIs and the
//! timers ask for. Every transition returns the metadata to write to
//! `__transaction_state` (the caller writes it, waits until it is
//! replicated, and only then makes it the current one) or the error to
//! answer with; nothing here changes on failure.
//!
//! States, as Kafka's: `Empty` (an id with a producer id and no
//! transaction), `Ongoing` (partitions added), `PrepareCommit` /
//! `PrepareAbort` (EndTxn or a timeout decided; markers are being
//! written), `CompleteCommit` / `CompleteAbort` (markers written) and
//! `Dead` (expired; its record is a tombstone).
//!
//! ```text
//!  Empty ──add──▶ Ongoing ──end(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!    ▲              │  └──end(abort), timeout, fence──▶ PrepareAbort ──markers──▶ CompleteAbort
//!    └──init────────┴─────────────(from Empty or Complete*: epoch bump)─────────────┘
//! ```

use std::collections::BTreeSet;

/// The state of a transactional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
}

impl TxnState {
    /// The name Kafka's DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
        }
    }

    /// The byte `__transaction_state` records hold (Kafka's numbering).
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            _ => return None,
        })
    }

    /// Markers are being written: the transaction is decided.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A partition of a transaction: (topic, partition).
pub type TxnPartition = (String, i32);

/// What the coordinator knows of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (-1: none), so a retried
    /// InitProducerId is answered the same.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions written in the current transaction.
    pub partitions: BTreeSet<TxnPartition>,
    /// When the current transaction began (-1: none).
    pub start_ms: i64,
    pub update_ms: i64,
}

/// Why a request is refused; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("a transaction of this id is being completed; retry. transactional_id={0}")]
    ConcurrentTransactions(String),
    #[error(
        "producer fenced by a newer epoch. transactional_id={id}, current={current}, got={got}"
    )]
    ProducerFenced { id: String, current: i16, got: i16 },
    #[error("the producer id does not belong to this transactional id. transactional_id={id}, current={current}, got={got}")]
    InvalidProducerIdMapping { id: String, current: i64, got: i64 },
    #[error("not allowed in state {state}. transactional_id={id}, request={request}")]
    InvalidTxnState {
        id: String,
        state: &'static str,
        request: &'static str,
    },
    #[error("transaction timeout out of range. timeout_ms={got}, max={max}")]
    InvalidTimeout { got: i32, max: i32 },
}

/// What InitProducerId must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Write this metadata, then answer with its producer id and epoch.
    Write(TxnMeta),
    /// A transaction of the previous producer is open: write this
    /// `PrepareAbort` (at a bumped epoch, fencing it), have its markers
    /// written, and answer CONCURRENT_TRANSACTIONS so the client retries.
    FenceAndAbort(TxnMeta),
}

/// What EndTxn must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Write this `PrepareCommit` or `PrepareAbort`, answer, and write the
    /// markers.
    Prepare(TxnMeta),
    /// A retry of an EndTxn that completed: answer success.
    AlreadyDone,
}

/// Epochs stop short of i16::MAX; past it a new producer id is taken.
const MAX_EPOCH: i16 = i16::MAX - 1;

fn check_producer(meta: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
    if producer_id != meta.producer_id {
        return Err(TxnError::InvalidProducerIdMapping {
            id: meta.transactional_id.clone(),
            current: meta.producer_id,
            got: producer_id,
        });
    }
    if epoch != meta.producer_epoch {
        return Err(TxnError::ProducerFenced {
            id: meta.transactional_id.clone(),
            current: meta.producer_epoch,
            got: epoch,
        });
    }
    Ok(())
}

fn invalid(meta: &TxnMeta, request: &'static str) -> TxnError {
    TxnError::InvalidTxnState {
        id: meta.transactional_id.clone(),
        state: meta.state.name(),
        request,
    }
}

/// Checks a requested `transaction.timeout.ms` against
/// `transaction.max.timeout.ms`.
pub fn check_timeout(timeout_ms: i32, max_ms: i32) -> Result<(), TxnError> {
    if timeout_ms <= 0 || timeout_ms > max_ms {
        return Err(TxnError::InvalidTimeout {
            got: timeout_ms,
            max: max_ms,
        });
    }
    Ok(())
}

/// InitProducerId for `id`. `current` is what the coordinator holds (None
/// or `Dead`: a new id); `expected` is the (producer id, epoch) a client
/// that already had one sends (KIP-360), None otherwise. `new_producer_id`
/// allocates an id when one is needed.
pub fn init_producer_id(
    id: &str,
    current: Option<&TxnMeta>,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    now_ms: i64,
    new_producer_id: impl FnOnce() -> i64,
) -> Result<InitOutcome, TxnError> {
    let Some(meta) = current.filter(|m| m.state != TxnState::Dead) else {
        return Ok(InitOutcome::Write(TxnMeta {
            transactional_id: id.to_string(),
            producer_id: new_producer_id(),
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            update_ms: now_ms,
        }));
    };
    if let Some((pid, epoch)) = expected {
        let retry = pid == meta.producer_id
            && epoch == meta.last_producer_epoch
            && meta.state == TxnState::Empty;
        if retry {
            // The bump was written but its answer lost: answer it again.
            return Ok(InitOutcome::Write(meta.clone()));
        }
        // A producer whose transaction the coordinator aborted at a bumped
        // epoch (a timeout) may take up the id again (KIP-588).
        let recovering = pid == meta.producer_id
            && epoch == meta.last_producer_epoch
            && meta.state == TxnState::CompleteAbort;
        if !recovering && (pid != meta.producer_id || epoch != meta.producer_epoch) {
            return Err(TxnError::ProducerFenced {
                id: id.to_string(),
                current: meta.producer_epoch,
                got: epoch,
            });
        }
    }
    match meta.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => {
            Err(TxnError::ConcurrentTransactions(id.to_string()))
        }
        TxnState::Ongoing => {
            let mut next = meta.clone();
            bump(&mut next, new_producer_id);
            next.state = TxnState::PrepareAbort;
            next.update_ms = now_ms;
            Ok(InitOutcome::FenceAndAbort(next))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Dead => {
            let mut next = meta.clone();
            bump(&mut next, new_producer_id);
            next.timeout_ms = timeout_ms;
            next.state = TxnState::Empty;
            next.partitions.clear();
            next.start_ms = -1;
            next.update_ms = now_ms;
            Ok(InitOutcome::Write(next))
        }
    }
}

/// Bumps the epoch; at the last epoch a new producer id starts at 0.
fn bump(meta: &mut TxnMeta, new_producer_id: impl FnOnce() -> i64) {
    if meta.producer_epoch >= MAX_EPOCH {
        meta.producer_id = new_producer_id();
        meta.last_producer_epoch = -1;
        meta.producer_epoch = 0;
    } else {
        meta.last_producer_epoch = meta.producer_epoch;
        meta.producer_epoch += 1;
    }
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the
/// group's offsets partition): the partitions join the transaction,
/// which begins if none was open. `None` when every partition is already
/// in it (nothing to write).
pub fn add_partitions(
    meta: &TxnMeta,
    producer_id: i64,
    epoch: i16,
    partitions: &[TxnPartition],
    now_ms: i64,
) -> Result<Option<TxnMeta>, TxnError> {
    check_producer(meta, producer_id, epoch)?;
    match meta.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => {
            return Err(TxnError::ConcurrentTransactions(
                meta.transactional_id.clone(),
            ))
        }
        TxnState::Dead => return Err(invalid(meta, "AddPartitionsToTxn")),
        TxnState::Ongoing if partitions.iter().all(|p| meta.partitions.contains(p)) => {
            return Ok(None)
        }
        TxnState::Ongoing
        | TxnState::Empty
        | TxnState::CompleteCommit
        | TxnState::CompleteAbort => {}
    }
    let mut next = meta.clone();
    if meta.state != TxnState::Ongoing {
        next.partitions.clear();
        next.start_ms = now_ms;
        next.state = TxnState::Ongoing;
    }
    next.partitions.extend(partitions.iter().cloned());
    next.update_ms = now_ms;
    Ok(Some(next))
}

/// EndTxn: commit or abort the open transaction.
pub fn end_txn(
    meta: &TxnMeta,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndOutcome, TxnError> {
    // A retry after a timeout's abort bumped the epoch is not fenced if
    // it asks for what happened (an abort).
    let retried_abort = !commit
        && meta.state == TxnState::CompleteAbort
        && producer_id == meta.producer_id
        && epoch == meta.last_producer_epoch;
    if !retried_abort {
        check_producer(meta, producer_id, epoch)?;
    }
    match (meta.state, commit) {
        (TxnState::Ongoing, _) => {
            let mut next = meta.clone();
            next.state = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            next.update_ms = now_ms;
            Ok(EndOutcome::Prepare(next))
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
            Ok(EndOutcome::AlreadyDone)
        }
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(
            TxnError::ConcurrentTransactions(meta.transactional_id.clone()),
        ),
        _ => Err(invalid(
            meta,
            if commit {
                "EndTxn(commit)"
            } else {
                "EndTxn(abort)"
            },
        )),
    }
}

/// Markers of a prepared transaction were all written: it is complete.
pub fn complete(meta: &TxnMeta, now_ms: i64) -> Option<TxnMeta> {
    let state = match meta.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort => TxnState::CompleteAbort,
        _ => return None,
    };
    let mut next = meta.clone();
    next.state = state;
    next.partitions.clear();
    next.start_ms = -1;
    next.update_ms = now_ms;
    Some(next)
}

/// A transaction open longer than its timeout is aborted, at a bumped
/// epoch so the producer that let it lapse is fenced.
pub fn timed_out(
    meta: &TxnMeta,
    now_ms: i64,
    new_producer_id: impl FnOnce() -> i64,
) -> Option<TxnMeta> {
    if meta.state != TxnState::Ongoing || now_ms < meta.start_ms + i64::from(meta.timeout_ms) {
        return None;
    }
    let mut next = meta.clone();
    bump(&mut next, new_producer_id);
    next.state = TxnState::PrepareAbort;
    next.update_ms = now_ms;
    Some(next)
}

/// An id without a transaction unused for `expiration_ms`
/// (`transactional.id.expiration.ms`) is forgotten.
pub fn expired(meta: &TxnMeta, now_ms: i64, expiration_ms: i64) -> bool {
    matches!(
        meta.state,
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
    ) && now_ms - meta.update_ms >= expiration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> TxnMeta {
        match init_producer_id("t", None, 60_000, None, 0, || 42).expect("init") {
            InitOutcome::Write(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn p(n: i32) -> TxnPartition {
        ("topic".to_string(), n)
    }

    fn ongoing() -> TxnMeta {
        add_partitions(&fresh(), 42, 0, &[p(0)], 10)
            .expect("add")
            .expect("written")
    }

    #[test]
    fn a_new_id_gets_a_producer_id_at_epoch_zero() {
        let m = fresh();
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (42, 0, TxnState::Empty)
        );
    }

    #[test]
    fn commit_and_abort_go_through_prepare_to_complete() {
        for (commit, prepared, done) in [
            (true, TxnState::PrepareCommit, TxnState::CompleteCommit),
            (false, TxnState::PrepareAbort, TxnState::CompleteAbort),
        ] {
            let m = ongoing();
            assert_eq!(m.state, TxnState::Ongoing);
            assert_eq!(m.start_ms, 10);
            let EndOutcome::Prepare(prep) = end_txn(&m, 42, 0, commit, 20).expect("end") else {
                panic!("expected a prepare");
            };
            assert_eq!(prep.state, prepared);
            assert_eq!(prep.partitions.len(), 1, "markers go to these");
            let c = complete(&prep, 30).expect("complete");
            assert_eq!(c.state, done);
            assert!(c.partitions.is_empty());
            // A retried EndTxn with the same result succeeds, the other is invalid.
            assert_eq!(end_txn(&c, 42, 0, commit, 40), Ok(EndOutcome::AlreadyDone));
            assert!(matches!(
                end_txn(&c, 42, 0, !commit, 40),
                Err(TxnError::InvalidTxnState { .. })
            ));
            // While markers are written, everything waits.
            assert!(matches!(
                end_txn(&prep, 42, 0, commit, 25),
                Err(TxnError::ConcurrentTransactions(_))
            ));
            assert!(matches!(
                add_partitions(&prep, 42, 0, &[p(1)], 25),
                Err(TxnError::ConcurrentTransactions(_))
            ));
            assert!(matches!(
                init_producer_id("t", Some(&prep), 60_000, None, 25, || 43),
                Err(TxnError::ConcurrentTransactions(_))
            ));
            // The next transaction starts from the completed one.
            let again = add_partitions(&c, 42, 0, &[p(2)], 50)
                .expect("add")
                .expect("written");
            assert_eq!(again.partitions, BTreeSet::from([p(2)]));
            assert_eq!(again.start_ms, 50);
        }
    }

    #[test]
    fn adding_partitions_already_in_the_transaction_writes_nothing() {
        let m = ongoing();
        assert_eq!(add_partitions(&m, 42, 0, &[p(0)], 11), Ok(None));
        let more = add_partitions(&m, 42, 0, &[p(0), p(1)], 11)
            .expect("add")
            .expect("written");
        assert_eq!(more.partitions.len(), 2);
        assert_eq!(more.start_ms, 10, "the transaction began at its first add");
    }

    #[test]
    fn the_other_outcome_while_one_is_being_written_and_a_dead_id_are_invalid() {
        let m = ongoing();
        let EndOutcome::Prepare(commit) = end_txn(&m, 42, 0, true, 20).expect("end") else {
            panic!("expected a prepare");
        };
        assert!(matches!(
            end_txn(&commit, 42, 0, false, 21),
            Err(TxnError::InvalidTxnState {
                state: "PrepareCommit",
                ..
            })
        ));
        let mut dead = m.clone();
        dead.state = TxnState::Dead;
        for c in [true, false] {
            assert!(matches!(
                end_txn(&dead, 42, 0, c, 21),
                Err(TxnError::InvalidTxnState { state: "Dead", .. })
            ));
        }
        assert_eq!(timed_out(&dead, i64::MAX / 2, || 43), None);
        assert!(
            !expired(&dead, i64::MAX / 2, 1),
            "a dead id is already gone"
        );
    }

    #[test]
    fn end_txn_without_a_transaction_is_invalid() {
        for commit in [true, false] {
            assert!(matches!(
                end_txn(&fresh(), 42, 0, commit, 1),
                Err(TxnError::InvalidTxnState { state: "Empty", .. })
            ));
        }
    }

    #[test]
    fn a_new_init_fences_the_old_producer_and_aborts_its_transaction() {
        let m = ongoing();
        let InitOutcome::FenceAndAbort(fenced) =
            init_producer_id("t", Some(&m), 60_000, None, 30, || 43).expect("init")
        else {
            panic!("expected a fence");
        };
        assert_eq!(
            (fenced.producer_epoch, fenced.state),
            (1, TxnState::PrepareAbort)
        );
        // The old producer's requests are fenced from now on.
        assert!(matches!(
            end_txn(&fenced, 42, 0, true, 31),
            Err(TxnError::ProducerFenced {
                current: 1,
                got: 0,
                ..
            })
        ));
        let done = complete(&fenced, 32).expect("complete");
        assert!(matches!(
            add_partitions(&done, 42, 0, &[p(0)], 33),
            Err(TxnError::ProducerFenced { .. })
        ));
        // The retried init then bumps again.
        let InitOutcome::Write(next) =
            init_producer_id("t", Some(&done), 60_000, None, 34, || 43).expect("init")
        else {
            panic!("expected a write");
        };
        assert_eq!(
            (next.producer_id, next.producer_epoch, next.state),
            (42, 2, TxnState::Empty)
        );
    }

    #[test]
    fn kip_360_inits_bump_their_own_epoch_and_retries_are_answered_the_same() {
        let m = fresh();
        let InitOutcome::Write(bumped) =
            init_producer_id("t", Some(&m), 60_000, Some((42, 0)), 1, || 43).expect("init")
        else {
            panic!("expected a write");
        };
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (1, 0));
        assert_eq!(
            init_producer_id("t", Some(&bumped), 60_000, Some((42, 0)), 2, || 43),
            Ok(InitOutcome::Write(bumped.clone()))
        );
        assert!(matches!(
            init_producer_id("t", Some(&bumped), 60_000, Some((41, 1)), 2, || 43),
            Err(TxnError::ProducerFenced { .. })
        ));
    }

    #[test]
    fn the_last_epoch_moves_to_a_new_producer_id() {
        let mut m = fresh();
        m.producer_epoch = MAX_EPOCH;
        let InitOutcome::Write(next) =
            init_producer_id("t", Some(&m), 60_000, None, 1, || 77).expect("init")
        else {
            panic!("expected a write");
        };
        assert_eq!((next.producer_id, next.producer_epoch), (77, 0));
    }

    #[test]
    fn wrong_producer_ids_and_epochs_are_refused() {
        let m = ongoing();
        assert!(matches!(
            add_partitions(&m, 41, 0, &[p(1)], 11),
            Err(TxnError::InvalidProducerIdMapping { .. })
        ));
        assert!(matches!(
            end_txn(&m, 42, 3, true, 11),
            Err(TxnError::ProducerFenced {
                current: 0,
                got: 3,
                ..
            })
        ));
        let mut dead = m.clone();
        dead.state = TxnState::Dead;
        assert!(matches!(
            add_partitions(&dead, 42, 0, &[p(1)], 11),
            Err(TxnError::InvalidTxnState { state: "Dead", .. })
        ));
        // A dead id starts over with a new producer id.
        let InitOutcome::Write(again) =
            init_producer_id("t", Some(&dead), 60_000, None, 12, || 50).expect("init")
        else {
            panic!("expected a write");
        };
        assert_eq!((again.producer_id, again.producer_epoch), (50, 0));
    }

    #[test]
    fn a_lapsed_transaction_is_aborted_at_a_bumped_epoch() {
        let m = ongoing(); // began at 10, 60 s timeout
        assert_eq!(timed_out(&m, 60_009, || 43), None);
        let aborted = timed_out(&m, 60_010, || 43).expect("timed out");
        assert_eq!(
            (aborted.state, aborted.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        let done = complete(&aborted, 60_020).expect("complete");
        // The lapsed producer's abort is answered; its commit is fenced.
        assert_eq!(
            end_txn(&done, 42, 0, false, 60_030),
            Ok(EndOutcome::AlreadyDone)
        );
        assert!(matches!(
            end_txn(&done, 42, 0, true, 60_030),
            Err(TxnError::ProducerFenced { .. })
        ));
        // It may take up the id again at a new epoch (KIP-588).
        let InitOutcome::Write(again) =
            init_producer_id("t", Some(&done), 60_000, Some((42, 0)), 60_040, || 43).expect("init")
        else {
            panic!("expected a write");
        };
        assert_eq!((again.producer_epoch, again.state), (2, TxnState::Empty));
        assert_eq!(timed_out(&fresh(), i64::MAX / 2, || 43), None);
    }

    #[test]
    fn only_idle_ids_expire() {
        let m = fresh();
        assert!(!expired(&m, 99, 100));
        assert!(expired(&m, 100, 100));
        assert!(!expired(&ongoing(), 1_000_000, 100));
        assert_eq!(complete(&m, 5), None, "nothing to complete");
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(check_timeout(60_000, 900_000).is_ok());
        assert!(check_timeout(0, 900_000).is_err());
        assert!(check_timeout(900_001, 900_000).is_err());
    }

    #[test]
    fn state_codes_round_trip() {
        for code in 0..7 {
            let s = TxnState::from_code(code).expect("known");
            assert_eq!(s.code(), code);
        }
        assert_eq!(TxnState::from_code(7), None);
    }
}
