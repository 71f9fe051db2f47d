//! A replica's role and its arithmetic, as plain data: no I/O, no clock
//! (times are handed in as milliseconds), every rule unit-tested.
//!
//! A replica is the leader of its partition at a leader epoch, with the
//! in-sync replicas (ISR) it computes the high watermark over, or a
//! follower of a named leader at an epoch. The high watermark is the
//! smallest log end offset over the ISR (the leader's included): a record
//! below it is on every in-sync replica. It never moves back, and a
//! follower never exposes more than its leader's high watermark allows.
//! A follower is in sync while it has caught up to the leader's log end
//! within `replica.lag.time.max.ms`; one that falls behind longer leaves
//! the ISR, and one that catches up again rejoins.
//!
//! What a caller does with the answers (write the ISR through the metadata
//! quorum, wake fetches when the high watermark moves, answer Kafka error
//! codes) is outside: this module only decides.

use std::collections::{BTreeMap, BTreeSet};

/// A broker id.
pub type BrokerId = i32;

/// Why a replica refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// A produce, or a follower fetch, reached a replica that does not lead
    /// (NOT_LEADER_OR_FOLLOWER).
    #[error("this replica is not the leader. leader={leader:?}")]
    NotLeader { leader: Option<BrokerId> },
    /// Batches copied from a leader reached a replica that leads itself.
    #[error("this replica leads; it does not copy another replica's log")]
    NotFollower,
    /// An answer from a leader this replica no longer follows at that
    /// epoch (the role changed while the request was out).
    #[error("answer from a leader no longer followed. from={from}@{epoch}, now={now:?}")]
    NotFollowing {
        from: BrokerId,
        epoch: i32,
        now: Option<(BrokerId, i32)>,
    },
    /// The request names an epoch older than this replica's
    /// (FENCED_LEADER_EPOCH).
    #[error("leader epoch is fenced. requested={requested}, current={current}")]
    FencedEpoch { requested: i32, current: i32 },
    /// The request names an epoch newer than this replica knows
    /// (UNKNOWN_LEADER_EPOCH): its metadata is behind.
    #[error("leader epoch is not known yet. requested={requested}, current={current}")]
    UnknownEpoch { requested: i32, current: i32 },
}

/// What the leader knows of a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset (the offset it fetched from last).
    pub log_end: i64,
    /// When it last reached the leader's log end (ms).
    pub caught_up_ms: i64,
}

/// A replica's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader {
        epoch: i32,
        isr: BTreeSet<BrokerId>,
        followers: BTreeMap<BrokerId, FollowerState>,
    },
    Follower {
        epoch: i32,
        leader: BrokerId,
    },
}

/// A change of the ISR the leader asks the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: BTreeSet<BrokerId>,
}

/// One replica of one partition.
#[derive(Debug, Clone)]
pub struct Replica {
    id: BrokerId,
    role: Role,
    log_end: i64,
    high_watermark: i64,
    /// `replica.lag.time.max.ms`.
    lag_max_ms: i64,
}

impl Replica {
    /// A replica of broker `id` whose log ends at `log_end`, leading at
    /// `epoch` with itself as the only in-sync replica (a single broker).
    pub fn leader_alone(id: BrokerId, epoch: i32, log_end: i64, lag_max_ms: i64) -> Replica {
        let mut r = Replica {
            id,
            role: Role::Follower { epoch, leader: id },
            log_end,
            high_watermark: log_end,
            lag_max_ms,
        };
        r.become_leader(epoch, BTreeSet::from([id]), 0);
        r
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn epoch(&self) -> i32 {
        match &self.role {
            Role::Leader { epoch, .. } | Role::Follower { epoch, .. } => *epoch,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    /// The ISR, when leading.
    pub fn isr(&self) -> Option<&BTreeSet<BrokerId>> {
        match &self.role {
            Role::Leader { isr, .. } => Some(isr),
            Role::Follower { .. } => None,
        }
    }

    /// Takes the lead at `epoch` with `isr` (which must hold this replica).
    /// Followers start as caught up at `now_ms`, at an unknown position.
    pub fn become_leader(&mut self, epoch: i32, isr: BTreeSet<BrokerId>, now_ms: i64) {
        let mut isr = isr;
        isr.insert(self.id);
        let followers = isr
            .iter()
            .filter(|b| **b != self.id)
            .map(|b| {
                (
                    *b,
                    FollowerState {
                        log_end: -1,
                        caught_up_ms: now_ms,
                    },
                )
            })
            .collect();
        self.role = Role::Leader {
            epoch,
            isr,
            followers,
        };
        self.recompute();
    }

    /// Follows `leader` at `epoch`. The high watermark stays where it was
    /// (it never moves back) until the leader says more.
    pub fn become_follower(&mut self, epoch: i32, leader: BrokerId) {
        self.role = Role::Follower { epoch, leader };
    }

    /// Checks a request's leader epoch against this replica's (-1: the
    /// client did not say).
    pub fn check_epoch(&self, requested: i32) -> Result<(), ReplicaError> {
        let current = self.epoch();
        if requested < 0 || requested == current {
            Ok(())
        } else if requested < current {
            Err(ReplicaError::FencedEpoch { requested, current })
        } else {
            Err(ReplicaError::UnknownEpoch { requested, current })
        }
    }

    /// Whether a produce may append here: only the leader takes them.
    pub fn check_produce(&self) -> Result<(), ReplicaError> {
        match &self.role {
            Role::Leader { .. } => Ok(()),
            Role::Follower { leader, .. } => Err(ReplicaError::NotLeader {
                leader: Some(*leader),
            }),
        }
    }

    /// The log now ends at `log_end` (an append, or a follower's fetch
    /// written). Returns the new high watermark when it moved.
    pub fn on_log_end(&mut self, log_end: i64) -> Option<i64> {
        self.log_end = log_end;
        self.recompute()
    }

    /// A follower's fetch at `fetch_offset` (its log end) at `now_ms`: the
    /// leader records its position and when it last caught up. Returns the
    /// new high watermark when it moved.
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<Option<i64>, ReplicaError> {
        let leader_end = self.log_end;
        let Role::Leader { followers, .. } = &mut self.role else {
            return Err(self.check_produce().expect_err("a follower refuses"));
        };
        let f = followers.entry(follower).or_insert(FollowerState {
            log_end: -1,
            caught_up_ms: i64::MIN,
        });
        // Not cut to `log_end`: on a replicated leader that is its durable
        // offset, which a follower may pass (the caller cuts it to the
        // leader's log end). The high watermark never passes `log_end`.
        f.log_end = fetch_offset;
        if f.log_end >= leader_end {
            f.caught_up_ms = now_ms;
        }
        Ok(self.recompute())
    }

    /// The leader's high watermark as a follower learns it from a fetch
    /// response: a follower never exposes more than that, nor more than
    /// its own log holds. Returns the new high watermark when it moved.
    pub fn on_leader_high_watermark(&mut self, leader_hwm: i64) -> Option<i64> {
        if self.is_leader() {
            return None;
        }
        let next = leader_hwm.min(self.log_end);
        self.advance(next)
    }

    /// The log was truncated to `log_end` (a follower dropping what
    /// diverged from its leader): the one case where the high watermark
    /// may move back, to the log end at most.
    pub fn on_truncate(&mut self, log_end: i64) {
        self.log_end = log_end;
        self.high_watermark = self.high_watermark.min(log_end);
    }

    /// Forgets the high watermark, down to `floor`: a replicated partition
    /// opened after a restart cannot tell which of its records were
    /// committed until its leader (or its followers) say so.
    pub fn forget_high_watermark(&mut self, floor: i64) {
        self.high_watermark = floor.min(self.high_watermark);
    }

    /// The ISR the leader should have at `now_ms`: followers that have not
    /// caught up for longer than the lag limit leave it, followers at or
    /// past the high watermark that are caught up join it. `None` when it
    /// stays as it is.
    pub fn isr_change(&self, now_ms: i64) -> Option<IsrChange> {
        let Role::Leader { isr, followers, .. } = &self.role else {
            return None;
        };
        let mut next: BTreeSet<BrokerId> = BTreeSet::from([self.id]);
        for (b, f) in followers {
            let lagging = now_ms.saturating_sub(f.caught_up_ms) > self.lag_max_ms;
            let in_sync = if isr.contains(b) {
                !lagging
            } else {
                !lagging && f.log_end >= self.high_watermark
            };
            if in_sync {
                next.insert(*b);
            }
        }
        (next != *isr).then_some(IsrChange { isr: next })
    }

    /// Applies an ISR the controller committed.
    pub fn set_isr(&mut self, isr: BTreeSet<BrokerId>) -> Option<i64> {
        let id = self.id;
        if let Role::Leader { isr: current, .. } = &mut self.role {
            *current = isr;
            current.insert(id);
        }
        self.recompute()
    }

    /// The leader's high watermark: the smallest log end over the ISR
    /// (followers of unknown position hold it where it is), never back.
    fn recompute(&mut self) -> Option<i64> {
        let Role::Leader { isr, followers, .. } = &self.role else {
            return None;
        };
        let mut min = self.log_end;
        for b in isr.iter().filter(|b| **b != self.id) {
            match followers.get(b) {
                Some(f) if f.log_end >= 0 => min = min.min(f.log_end),
                _ => min = min.min(self.high_watermark),
            }
        }
        self.advance(min)
    }

    fn advance(&mut self, next: i64) -> Option<i64> {
        if next > self.high_watermark {
            self.high_watermark = next;
            Some(next)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAG: i64 = 30_000;

    fn three() -> Replica {
        let mut r = Replica::leader_alone(1, 5, 100, LAG);
        r.become_leader(6, BTreeSet::from([1, 2, 3]), 0);
        r
    }

    #[test]
    fn a_broker_alone_moves_the_high_watermark_with_its_log() {
        let mut r = Replica::leader_alone(1, 0, 0, LAG);
        assert_eq!(r.high_watermark(), 0);
        assert_eq!(r.on_log_end(10), Some(10));
        assert_eq!(r.on_log_end(10), None);
        assert!(r.check_produce().is_ok());
        assert_eq!(r.isr_change(1_000_000), None, "alone stays alone");
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_replica() {
        let mut r = three();
        assert_eq!(r.on_log_end(150), None, "followers' positions unknown");
        assert_eq!(r.on_follower_fetch(2, 150, 10), Ok(None));
        assert_eq!(r.on_follower_fetch(3, 120, 10), Ok(Some(120)));
        assert_eq!(r.on_follower_fetch(3, 150, 20), Ok(Some(150)));
        // A fetch past the leader's end counts as the end.
        assert_eq!(r.on_follower_fetch(2, 999, 30), Ok(None));
    }

    #[test]
    fn a_lagging_follower_leaves_the_isr_and_rejoins_when_caught_up() {
        let mut r = three();
        r.on_log_end(200);
        r.on_follower_fetch(2, 200, 1_000).expect("leader");
        r.on_follower_fetch(3, 150, 1_000).expect("leader");
        assert_eq!(r.high_watermark(), 150);
        // 3 has not reached the leader's end since it took the lead (at 0).
        assert_eq!(r.isr_change(LAG), None, "within the lag limit");
        let shrink = r.isr_change(LAG + 1).expect("3 lags");
        assert_eq!(shrink.isr, BTreeSet::from([1, 2]));
        assert_eq!(r.set_isr(shrink.isr), Some(200));
        // Caught up again: back in (2 keeps fetching too).
        r.on_follower_fetch(2, 200, 40_000).expect("leader");
        r.on_follower_fetch(3, 200, 40_000).expect("leader");
        let grow = r.isr_change(40_000).expect("3 rejoins");
        assert_eq!(grow.isr, BTreeSet::from([1, 2, 3]));
    }

    #[test]
    fn a_follower_refuses_produce_and_stale_epochs_are_fenced() {
        let mut r = three();
        assert_eq!(r.check_epoch(6), Ok(()));
        assert_eq!(r.check_epoch(-1), Ok(()));
        assert_eq!(
            r.check_epoch(5),
            Err(ReplicaError::FencedEpoch {
                requested: 5,
                current: 6
            })
        );
        assert!(matches!(
            r.check_epoch(7),
            Err(ReplicaError::UnknownEpoch { .. })
        ));
        r.become_follower(7, 2);
        assert_eq!(
            r.check_produce(),
            Err(ReplicaError::NotLeader { leader: Some(2) })
        );
        assert!(r.on_follower_fetch(3, 10, 0).is_err());
        assert!(r.isr_change(0).is_none());
    }

    #[test]
    fn a_follower_exposes_no_more_than_the_leader_allows() {
        let mut r = Replica::leader_alone(2, 3, 50, LAG);
        r.become_follower(4, 1);
        r.on_log_end(80);
        assert_eq!(r.high_watermark(), 50, "its own log end is not enough");
        assert_eq!(r.on_leader_high_watermark(70), Some(70));
        assert_eq!(
            r.on_leader_high_watermark(120),
            Some(80),
            "not past its log"
        );
        assert_eq!(r.on_leader_high_watermark(60), None, "never back");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(i64),
        Fetch(BrokerId, i64),
        Tick(i64),
        ApplyIsr,
        LeaderHwm(i64),
        Demote,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..50).prop_map(Op::Append),
            ((2i32..5), (0i64..400)).prop_map(|(b, o)| Op::Fetch(b, o)),
            (0i64..20_000).prop_map(Op::Tick),
            Just(Op::ApplyIsr),
            (0i64..400).prop_map(Op::LeaderHwm),
            Just(Op::Demote),
        ]
    }

    proptest! {
        /// Whatever happens: the high watermark never moves back, never
        /// passes the log end of any in-sync replica (the leader's own
        /// included), and a follower never exposes more than its own log.
        #[test]
        fn high_watermark_invariants(ops in proptest::collection::vec(op(), 1..200)) {
            let mut r = Replica::leader_alone(1, 0, 0, 1_000);
            r.become_leader(1, BTreeSet::from([1, 2, 3, 4]), 0);
            let mut now = 0i64;
            let mut positions: BTreeMap<BrokerId, i64> = BTreeMap::new();
            let mut last_hwm = r.high_watermark();
            for op in ops {
                match op {
                    Op::Append(n) => { r.on_log_end(r.log_end() + n); }
                    Op::Fetch(b, o) => {
                        if r.on_follower_fetch(b, o, now).is_ok() {
                            positions.insert(b, o);
                        }
                    }
                    Op::Tick(ms) => now += ms,
                    Op::ApplyIsr => {
                        if let Some(c) = r.isr_change(now) { r.set_isr(c.isr); }
                    }
                    Op::LeaderHwm(h) => { r.on_leader_high_watermark(h); }
                    Op::Demote => r.become_follower(r.epoch() + 1, 2),
                }
                let hwm = r.high_watermark();
                prop_assert!(hwm >= last_hwm, "moved back: {last_hwm} -> {hwm}");
                prop_assert!(hwm <= r.log_end(), "past its own log: {hwm} > {}", r.log_end());
                if let Some(isr) = r.isr() {
                    for b in isr.iter().filter(|b| **b != 1) {
                        if let Some(p) = positions.get(b) {
                            // Only moves made while it was in the ISR count;
                            // a member's position bounds a watermark raised
                            // since it joined.
                            if hwm > last_hwm {
                                prop_assert!(hwm <= *p, "past member {b}: {hwm} > {p}");
                            }
                        }
                    }
                }
                last_hwm = hwm;
            }
        }
    }
}
