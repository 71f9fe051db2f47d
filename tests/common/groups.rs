//! Consumer-group harness: rdkafka consumers that record what happens to
//! them (assignments, records, commits, errors), in threads or in a child
//! process that can be killed with SIGKILL, and the checks the group tests
//! make on what they saw. Raw group requests are in [`requests`].

pub mod requests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::clients::{self, TestRecord};
use super::Broker;

/// Broker flags that keep group tests fast: no initial rebalance delay and
/// short session timeouts allowed.
const FAST_GROUPS: [&str; 4] = [
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-min-session-timeout-ms",
    "1000",
];

const SESSION_TIMEOUT_MS: &str = "6000";

pub fn start_broker() -> Broker {
    Broker::builder().args(FAST_GROUPS).start()
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ----- A consumer that records what happens to it -------------------------

/// Where a consumer reports: memory (threads) or stdout (child process).
pub trait Sink: Send + Sync + 'static {
    fn consumed(&self, partition: i32, offset: i64);
    fn committed(&self, partition: i32, offset: i64);
    fn assigned(&self, partitions: &[i32]);
    fn revoked(&self, partitions: &[i32]);
    fn error(&self, e: String);
}

/// Everything one consumer saw.
#[derive(Default, Debug, Clone)]
pub struct Seen {
    pub assignment: BTreeSet<i32>,
    pub consumed: Vec<(i32, i64)>,
    /// Last successful commit per partition (the next offset to read).
    pub committed: BTreeMap<i32, i64>,
    pub assigned_events: Vec<Vec<i32>>,
    pub revoked_events: Vec<Vec<i32>>,
    pub errors: Vec<String>,
}

#[derive(Default)]
pub struct Shared(Mutex<Seen>);

impl Shared {
    pub fn get(&self) -> Seen {
        self.0.lock().expect("lock").clone()
    }
}

impl Sink for Shared {
    fn consumed(&self, partition: i32, offset: i64) {
        self.0
            .lock()
            .expect("lock")
            .consumed
            .push((partition, offset));
    }
    fn committed(&self, partition: i32, offset: i64) {
        self.0
            .lock()
            .expect("lock")
            .committed
            .insert(partition, offset);
    }
    fn assigned(&self, partitions: &[i32]) {
        let mut s = self.0.lock().expect("lock");
        s.assignment.extend(partitions);
        s.assigned_events.push(partitions.to_vec());
    }
    fn revoked(&self, partitions: &[i32]) {
        let mut s = self.0.lock().expect("lock");
        for p in partitions {
            s.assignment.remove(p);
        }
        s.revoked_events.push(partitions.to_vec());
    }
    fn error(&self, e: String) {
        self.0.lock().expect("lock").errors.push(e);
    }
}

/// A child process reports line by line on stdout.
struct StdoutSink;

impl StdoutSink {
    fn line(&self, l: String) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{l}");
        let _ = out.flush();
    }
}

fn list(ps: &[i32]) -> String {
    ps.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

impl Sink for StdoutSink {
    fn consumed(&self, p: i32, o: i64) {
        self.line(format!("@C {p} {o}"));
    }
    fn committed(&self, p: i32, o: i64) {
        self.line(format!("@K {p} {o}"));
    }
    fn assigned(&self, ps: &[i32]) {
        self.line(format!("@A {}", list(ps)));
    }
    fn revoked(&self, ps: &[i32]) {
        self.line(format!("@R {}", list(ps)));
    }
    fn error(&self, e: String) {
        self.line(format!("@E {e}"));
    }
}

/// Parses a child's report line into `sink`.
fn parse_report(line: &str, sink: &Shared) {
    // libtest prints "test child_consumer ... " before the first report.
    let Some(start) = line.find('@') else {
        return;
    };
    let parts: Vec<&str> = line[start..].trim().splitn(3, ' ').collect();
    let nums = |s: &str| -> Vec<i32> { s.split(',').filter_map(|p| p.parse().ok()).collect() };
    match parts.as_slice() {
        ["@C", p, o] => sink.consumed(p.parse().unwrap_or(-1), o.parse().unwrap_or(-1)),
        ["@K", p, o] => sink.committed(p.parse().unwrap_or(-1), o.parse().unwrap_or(-1)),
        ["@A", ps] => sink.assigned(&nums(ps)),
        ["@A"] => sink.assigned(&[]),
        ["@R", ps] => sink.revoked(&nums(ps)),
        ["@R"] => sink.revoked(&[]),
        ["@E", rest @ ..] => sink.error(rest.join(" ")),
        _ => {}
    }
}

pub struct Ctx {
    sink: Arc<dyn Sink>,
    commit_on_revoke: bool,
    /// Last committed offset per partition (to skip commits of no change).
    last_commit: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Ctx {}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut ps: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    ps.sort_unstable();
    ps
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = partitions_of(tpl);
            // A well-behaved consumer commits what it read before it lets go.
            if self.commit_on_revoke {
                commit_positions(c, Some(&ps));
            }
            self.sink.revoked(&ps);
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.sink.assigned(&partitions_of(tpl)),
            Rebalance::Error(e) => self.sink.error(format!("rebalance: {e}")),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Commits the current position of the assigned partitions (or `only`
/// those), synchronously; reports what was committed.
fn commit_positions(c: &BaseConsumer<Ctx>, only: Option<&[i32]>) {
    let Ok(pos) = c.position() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    let mut pairs = Vec::new();
    {
        let last = c.context().last_commit.lock().expect("lock");
        for e in pos.elements() {
            if let Offset::Offset(o) = e.offset() {
                let wanted = only.is_none_or(|ps| ps.contains(&e.partition()));
                if wanted && last.get(&e.partition()) != Some(&o) {
                    tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))
                        .expect("add partition");
                    pairs.push((e.partition(), o));
                }
            }
        }
    }
    if pairs.is_empty() {
        return;
    }
    match c.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            let mut last = c.context().last_commit.lock().expect("lock");
            for (p, o) in pairs {
                last.insert(p, o);
                c.context().sink.committed(p, o);
            }
        }
        Err(e) => c.context().sink.error(format!("commit: {e}")),
    }
}

#[derive(Clone)]
pub struct Opts {
    pub group: String,
    pub topic: String,
    pub instance: Option<String>,
    pub strategy: &'static str,
    pub reset: &'static str,
    /// Commit positions when partitions are revoked (and on close).
    pub commit_on_revoke: bool,
}

impl Opts {
    pub fn new(group: &str, topic: &str) -> Opts {
        Opts {
            group: group.to_string(),
            topic: topic.to_string(),
            instance: None,
            strategy: "range",
            reset: "earliest",
            commit_on_revoke: true,
        }
    }
}

pub fn consumer_config(bootstrap: &str, o: &Opts) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", "strata-groups-it")
        .set("group.id", &o.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", o.reset)
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "20000")
        .set("partition.assignment.strategy", o.strategy)
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000");
    if let Some(i) = &o.instance {
        c.set("group.instance.id", i);
    }
    c
}

/// Polls until `stop`, commits every `commit_every`; on `stop` closes the
/// consumer (LeaveGroup) by dropping it.
fn consume_loop(c: BaseConsumer<Ctx>, stop: &AtomicBool, commit_every: Duration) {
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => c.context().sink.consumed(m.partition(), m.offset()),
            Some(Err(e)) => c.context().sink.error(e.to_string()),
        }
        if last_commit.elapsed() >= commit_every {
            commit_positions(&c, None);
            last_commit = Instant::now();
        }
    }
    commit_positions(&c, None);
}

pub fn new_consumer(bootstrap: &str, o: &Opts, sink: Arc<dyn Sink>) -> BaseConsumer<Ctx> {
    let ctx = Ctx {
        sink,
        commit_on_revoke: o.commit_on_revoke,
        last_commit: Mutex::new(HashMap::new()),
    };
    let c: BaseConsumer<Ctx> = consumer_config(bootstrap, o)
        .create_with_context(ctx)
        .expect("create consumer");
    c.subscribe(&[&o.topic]).expect("subscribe");
    c
}

/// A group member polling in its own thread.
pub struct Member {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Member {
    pub fn start(bootstrap: &str, o: &Opts) -> Member {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (bs, o, sink, flag) = (
            bootstrap.to_string(),
            o.clone(),
            shared.clone(),
            stop.clone(),
        );
        let handle = std::thread::spawn(move || {
            let c = new_consumer(&bs, &o, sink);
            consume_loop(c, &flag, Duration::from_millis(200));
        });
        Member {
            shared,
            stop,
            handle: Some(handle),
        }
    }

    pub fn seen(&self) -> Seen {
        self.shared.get()
    }

    /// Stops polling and closes the consumer (commit, then LeaveGroup).
    pub fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("consumer thread");
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A group member in a child process, so that it can be killed with
/// SIGKILL: the test binary re-run as its ignored `child_consumer` test,
/// which calls [`child_consumer`].
pub struct ChildMember {
    shared: Arc<Shared>,
    child: Child,
    reader: Option<JoinHandle<()>>,
}

impl ChildMember {
    pub fn start(bootstrap: &str, o: &Opts) -> ChildMember {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "child_consumer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STRATA_IT_CHILD_BOOTSTRAP", bootstrap)
            .env("STRATA_IT_CHILD_GROUP", &o.group)
            .env("STRATA_IT_CHILD_TOPIC", &o.topic)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child consumer");
        let out = child.stdout.take().expect("child stdout");
        let shared = Arc::new(Shared::default());
        let sink = shared.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => parse_report(&l, &sink),
                    Err(_) => break,
                }
            }
        });
        ChildMember {
            shared,
            child,
            reader: Some(reader),
        }
    }

    pub fn seen(&self) -> Seen {
        self.shared.get()
    }

    /// SIGKILL: no commit, no LeaveGroup; the session timeout removes it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for ChildMember {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The body of a [`ChildMember`] process: consumes as the environment says
/// and reports on stdout. A test binary that starts a [`ChildMember`] calls
/// it from an ignored test named `child_consumer`.
pub fn child_consumer() {
    let (Ok(bs), Ok(group), Ok(topic)) = (
        std::env::var("STRATA_IT_CHILD_BOOTSTRAP"),
        std::env::var("STRATA_IT_CHILD_GROUP"),
        std::env::var("STRATA_IT_CHILD_TOPIC"),
    ) else {
        return;
    };
    let c = new_consumer(&bs, &Opts::new(&group, &topic), Arc::new(StdoutSink));
    let stop = AtomicBool::new(false);
    // Commits seldom, so a crash leaves read-but-uncommitted records behind.
    consume_loop(c, &stop, Duration::from_millis(1500));
}

// ----- Checks --------------------------------------------------------------

/// Produces `n` records spread round-robin over `partitions`; returns where
/// they landed.
pub fn produce_spread(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    tag: &str,
) -> Vec<(i32, i64)> {
    let records: Vec<TestRecord> = (0..n)
        .map(|i| TestRecord::value(format!("{tag}-{i}")).in_partition(i as i32 % partitions))
        .collect();
    clients::produce(bootstrap, topic, &records)
}

pub fn assignments_split(seen: &[Seen], partitions: i32) -> bool {
    let mut all = BTreeSet::new();
    let mut total = 0;
    for s in seen {
        if s.assignment.is_empty() {
            return false;
        }
        total += s.assignment.len();
        all.extend(s.assignment.iter().copied());
    }
    total == partitions as usize && all.len() == partitions as usize
}

pub fn wait_for_split(what: &str, partitions: i32, seen: impl Fn() -> Vec<Seen>) {
    wait_until(what, Duration::from_secs(60), || {
        assignments_split(&seen(), partitions)
    });
}

pub fn all_consumed(seen: &[Seen], produced: &[(i32, i64)]) -> bool {
    let got: BTreeSet<(i32, i64)> = seen
        .iter()
        .flat_map(|s| s.consumed.iter().copied())
        .collect();
    produced.iter().all(|r| got.contains(r))
}

/// No consumer errors other than refused commits (a commit racing a
/// rebalance is refused with REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION, as
/// in Kafka).
pub fn no_errors(seen: &[Seen]) {
    for s in seen {
        let bad: Vec<&String> = s
            .errors
            .iter()
            .filter(|e| !e.starts_with("commit:"))
            .collect();
        assert!(bad.is_empty(), "consumer errors: {bad:?}");
    }
}

/// Reads from an explicit consumer until it has `n` records; returns them.
pub fn poll_n(c: &BaseConsumer<Ctx>, n: usize, timeout: Duration) -> Vec<(i32, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "got {} of {n} records in {timeout:?}",
            out.len()
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}
