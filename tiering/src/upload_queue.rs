//! The upload queue as plain data: which upload runs next, with no I/O,
//! clocks or tasks (after neon's `upload_queue.rs`).
//!
//! Rules: uploads of one partition run one at a time in the order they were
//! queued (the manifest must grow in offset order); uploads of different
//! partitions run concurrently up to `max_in_flight`; the queue holds at most
//! `max_pending` uploads and `max_pending_bytes` bytes (queued plus running)
//! and refuses more, so memory and disk held for uploads stay bounded; a
//! segment already queued or running is refused as a duplicate.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Bounds of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_pending: usize,
    pub max_pending_bytes: u64,
    pub max_in_flight: usize,
}

/// Why an upload was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    Full { pending: usize, pending_bytes: u64 },
    Duplicate,
}

#[derive(Debug)]
struct Entry<K, T> {
    id: u64,
    key: K,
    base_offset: i64,
    bytes: u64,
    item: T,
}

/// An upload taken from the queue to run.
#[derive(Debug)]
pub struct Started<K, T> {
    pub id: u64,
    pub key: K,
    pub item: T,
}

/// The queue. `K` names a partition, `T` is the caller's job.
#[derive(Debug)]
pub struct UploadQueue<K, T> {
    limits: QueueLimits,
    queued: VecDeque<Entry<K, T>>,
    /// Running uploads by partition: (id, base offset, bytes).
    running: HashMap<K, (u64, i64, u64)>,
    pending_bytes: u64,
    next_id: u64,
}

impl<K: Eq + Hash + Clone, T> UploadQueue<K, T> {
    pub fn new(limits: QueueLimits) -> Self {
        UploadQueue {
            limits,
            queued: VecDeque::new(),
            running: HashMap::new(),
            pending_bytes: 0,
            next_id: 0,
        }
    }

    /// Uploads queued or running.
    pub fn pending(&self) -> usize {
        self.queued.len() + self.running.len()
    }

    /// Bytes of uploads queued or running.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.pending() == 0
    }

    /// Queues an upload of `bytes` bytes for segment `base_offset` of `key`.
    /// A single upload larger than the byte bound is accepted into an empty
    /// queue, so a huge segment cannot be refused forever.
    pub fn push(
        &mut self,
        key: K,
        base_offset: i64,
        bytes: u64,
        item: T,
    ) -> Result<u64, PushError> {
        let dup_running = self
            .running
            .get(&key)
            .is_some_and(|&(_, b, _)| b == base_offset);
        let dup_queued = self
            .queued
            .iter()
            .any(|e| e.key == key && e.base_offset == base_offset);
        if dup_running || dup_queued {
            return Err(PushError::Duplicate);
        }
        let full_count = self.pending() >= self.limits.max_pending;
        let full_bytes =
            self.pending() > 0 && self.pending_bytes + bytes > self.limits.max_pending_bytes;
        if full_count || full_bytes {
            return Err(PushError::Full {
                pending: self.pending(),
                pending_bytes: self.pending_bytes,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending_bytes += bytes;
        self.queued.push_back(Entry {
            id,
            key,
            base_offset,
            bytes,
            item,
        });
        Ok(id)
    }

    /// The oldest queued upload whose partition has none running, if a
    /// concurrency slot is free.
    pub fn start_next(&mut self) -> Option<Started<K, T>> {
        if self.running.len() >= self.limits.max_in_flight {
            return None;
        }
        let i = self
            .queued
            .iter()
            .position(|e| !self.running.contains_key(&e.key))?;
        let e = self.queued.remove(i)?;
        self.running
            .insert(e.key.clone(), (e.id, e.base_offset, e.bytes));
        Some(Started {
            id: e.id,
            key: e.key,
            item: e.item,
        })
    }

    /// Marks the running upload `id` of `key` finished (done or failed).
    pub fn finish(&mut self, key: &K, id: u64) -> bool {
        match self.running.get(key) {
            Some(&(running_id, _, bytes)) if running_id == id => {
                self.running.remove(key);
                self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
                true
            }
            _ => false,
        }
    }

    /// Removes the queued (not running) uploads of `key`, e.g. when this
    /// broker stops leading it, and returns their jobs.
    pub fn remove_partition(&mut self, key: &K) -> Vec<T> {
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.queued.len());
        for e in self.queued.drain(..) {
            if &e.key == key {
                self.pending_bytes = self.pending_bytes.saturating_sub(e.bytes);
                out.push(e.item);
            } else {
                keep.push_back(e);
            }
        }
        self.queued = keep;
        out
    }

    /// Removes every queued upload (shutdown) and returns their jobs.
    pub fn drain_queued(&mut self) -> Vec<T> {
        let out: Vec<T> = self.queued.drain(..).map(|e| e.item).collect();
        self.pending_bytes = self.running.values().map(|&(_, _, b)| b).sum();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(max_in_flight: usize) -> UploadQueue<&'static str, i64> {
        UploadQueue::new(QueueLimits {
            max_pending: 4,
            max_pending_bytes: 1000,
            max_in_flight,
        })
    }

    #[test]
    fn per_partition_order_and_concurrency() {
        let mut q = q(2);
        let a0 = q.push("a", 0, 10, 0).expect("a0");
        q.push("a", 10, 10, 10).expect("a10");
        q.push("b", 0, 10, 0).expect("b0");
        let s1 = q.start_next().expect("first");
        assert_eq!((s1.key, s1.item), ("a", 0));
        // a's second upload waits for its first; b runs beside it.
        let s2 = q.start_next().expect("second");
        assert_eq!((s2.key, s2.item), ("b", 0));
        assert!(q.start_next().is_none(), "two slots busy");
        assert!(q.finish(&"a", a0));
        assert!(!q.finish(&"a", a0), "finishing twice is a no-op");
        let s3 = q.start_next().expect("third");
        assert_eq!((s3.key, s3.item), ("a", 10));
        assert_eq!(q.pending(), 2);
        assert_eq!(q.pending_bytes(), 20);
    }

    #[test]
    fn bounds_and_duplicates() {
        let mut q = q(1);
        q.push("a", 0, 600, 0).expect("a0");
        assert_eq!(q.push("a", 0, 1, 0), Err(PushError::Duplicate));
        assert_eq!(
            q.push("b", 0, 500, 0),
            Err(PushError::Full {
                pending: 1,
                pending_bytes: 600
            })
        );
        let s = q.start_next().expect("run a0");
        assert_eq!(
            q.push("a", 0, 1, 0),
            Err(PushError::Duplicate),
            "running duplicate"
        );
        q.push("b", 0, 100, 0).expect("b0");
        q.push("c", 0, 100, 0).expect("c0");
        q.push("d", 0, 100, 0).expect("d0");
        assert!(matches!(q.push("e", 0, 1, 0), Err(PushError::Full { .. })));
        assert_eq!(q.remove_partition(&"c"), vec![0]);
        assert_eq!(q.pending_bytes(), 800);
        assert!(q.finish(&"a", s.id));
        assert_eq!(q.drain_queued().len(), 2);
        assert!(q.is_idle());
        assert_eq!(q.pending_bytes(), 0);
        // A huge upload is accepted into an empty queue.
        q.push("z", 0, 10_000, 0).expect("huge");
    }

    proptest! {
        /// Under any interleaving of pushes, starts and finishes: at most one
        /// running upload per partition, never more than max_in_flight, each
        /// partition's uploads start in push order, and pending bytes match.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec((0u8..3, 0usize..3, 1u64..300), 0..200)) {
            let mut q: UploadQueue<usize, i64> = UploadQueue::new(QueueLimits {
                max_pending: 6, max_pending_bytes: 1000, max_in_flight: 2 });
            let mut next_base = [0i64; 3];
            let mut last_started = [-1i64; 3];
            let mut running: Vec<(usize, u64, u64)> = Vec::new();
            let mut queued_bytes: Vec<(usize, i64, u64)> = Vec::new();
            for (op, part, bytes) in ops {
                match op {
                    0 => {
                        let base = next_base[part];
                        if q.push(part, base, bytes, base).is_ok() {
                            next_base[part] += 1;
                            queued_bytes.push((part, base, bytes));
                        }
                    }
                    1 => {
                        if let Some(s) = q.start_next() {
                            prop_assert!(s.item > last_started[s.key]);
                            last_started[s.key] = s.item;
                            prop_assert!(!running.iter().any(|r| r.0 == s.key));
                            let i = queued_bytes.iter().position(|e| e.0 == s.key && e.1 == s.item).expect("queued");
                            let (_, _, b) = queued_bytes.remove(i);
                            running.push((s.key, s.id, b));
                        }
                    }
                    _ => {
                        if !running.is_empty() {
                            let (k, id, _) = running.remove(0);
                            prop_assert!(q.finish(&k, id));
                        }
                    }
                }
                prop_assert!(q.running() <= 2);
                let expect: u64 = running.iter().map(|r| r.2).sum::<u64>()
                    + queued_bytes.iter().map(|e| e.2).sum::<u64>();
                prop_assert_eq!(q.pending_bytes(), expect);
            }
        }
    }
}
