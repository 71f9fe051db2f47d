//! Consumer groups with real clients: rdkafka consumers in threads (and one
//! in a child process that is killed with SIGKILL), plus raw requests for
//! exact error codes and every advertised version.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::clients::{self, TestRecord};
use common::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Broker flags that keep group tests fast: no initial rebalance delay and
/// short session timeouts allowed.
const FAST_GROUPS: [&str; 4] = [
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-min-session-timeout-ms",
    "1000",
];

const SESSION_TIMEOUT_MS: &str = "6000";

fn start_broker() -> Broker {
    Broker::builder().args(FAST_GROUPS).start()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
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
trait Sink: Send + Sync + 'static {
    fn consumed(&self, partition: i32, offset: i64);
    fn committed(&self, partition: i32, offset: i64);
    fn assigned(&self, partitions: &[i32]);
    fn revoked(&self, partitions: &[i32]);
    fn error(&self, e: String);
}

/// Everything one consumer saw.
#[derive(Default, Debug, Clone)]
struct Seen {
    assignment: BTreeSet<i32>,
    consumed: Vec<(i32, i64)>,
    /// Last successful commit per partition (the next offset to read).
    committed: BTreeMap<i32, i64>,
    assigned_events: Vec<Vec<i32>>,
    revoked_events: Vec<Vec<i32>>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Shared(Mutex<Seen>);

impl Shared {
    fn get(&self) -> Seen {
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

struct Ctx {
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
struct Opts {
    group: String,
    topic: String,
    instance: Option<String>,
    strategy: &'static str,
    reset: &'static str,
    /// Commit positions when partitions are revoked (and on close).
    commit_on_revoke: bool,
}

impl Opts {
    fn new(group: &str, topic: &str) -> Opts {
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

fn consumer_config(bootstrap: &str, o: &Opts) -> ClientConfig {
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

fn new_consumer(bootstrap: &str, o: &Opts, sink: Arc<dyn Sink>) -> BaseConsumer<Ctx> {
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
struct Member {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Member {
    fn start(bootstrap: &str, o: &Opts) -> Member {
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

    fn seen(&self) -> Seen {
        self.shared.get()
    }

    /// Stops polling and closes the consumer (commit, then LeaveGroup).
    fn close(&mut self) {
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

/// A group member in a child process (this test binary, re-run as
/// `child_consumer`), so that it can be killed with SIGKILL.
struct ChildMember {
    shared: Arc<Shared>,
    child: Child,
    reader: Option<JoinHandle<()>>,
}

impl ChildMember {
    fn start(bootstrap: &str, o: &Opts) -> ChildMember {
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

    fn seen(&self) -> Seen {
        self.shared.get()
    }

    /// SIGKILL: no commit, no LeaveGroup; the session timeout removes it.
    fn kill9(&mut self) {
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

/// Not a test of its own: the body of a [`ChildMember`] process.
#[test]
#[ignore = "runs only as a child process of the group tests"]
fn child_consumer() {
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
fn produce_spread(
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

fn assignments_split(seen: &[Seen], partitions: i32) -> bool {
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

fn wait_for_split(what: &str, partitions: i32, seen: impl Fn() -> Vec<Seen>) {
    wait_until(what, Duration::from_secs(60), || {
        assignments_split(&seen(), partitions)
    });
}

fn all_consumed(seen: &[Seen], produced: &[(i32, i64)]) -> bool {
    let got: BTreeSet<(i32, i64)> = seen
        .iter()
        .flat_map(|s| s.consumed.iter().copied())
        .collect();
    produced.iter().all(|r| got.contains(r))
}

/// No consumer errors other than refused commits (a commit racing a
/// rebalance is refused with REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION, as
/// in Kafka).
fn no_errors(seen: &[Seen]) {
    for s in seen {
        let bad: Vec<&String> = s
            .errors
            .iter()
            .filter(|e| !e.starts_with("commit:"))
            .collect();
        assert!(bad.is_empty(), "consumer errors: {bad:?}");
    }
}

// ----- Tests -----------------------------------------------------------------

#[test]
fn group_three_consumers_share_twelve_partitions_and_read_each_record_once() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-split");
    clients::create_topic(&bs, &topic, 12, &[]);
    let opts = Opts::new(&common::topic_name("g-split"), &topic);
    let mut members: Vec<Member> = (0..3).map(|_| Member::start(&bs, &opts)).collect();
    wait_for_split("3 consumers to split 12 partitions", 12, || {
        members.iter().map(Member::seen).collect()
    });
    for m in &members {
        assert_eq!(
            m.seen().assignment.len(),
            4,
            "an even split: {:?}",
            m.seen().assignment
        );
    }
    let produced = produce_spread(&bs, &topic, 12, 1200, "split");
    wait_until("every record consumed", Duration::from_secs(60), || {
        all_consumed(
            &members.iter().map(Member::seen).collect::<Vec<_>>(),
            &produced,
        )
    });
    // Steady state: each record exactly once, by the owner of its partition.
    let seen: Vec<Seen> = members.iter().map(Member::seen).collect();
    let mut count: HashMap<(i32, i64), usize> = HashMap::new();
    for s in &seen {
        for r in &s.consumed {
            assert!(
                s.assignment.contains(&r.0),
                "record {r:?} read by a non-owner"
            );
            *count.entry(*r).or_default() += 1;
        }
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates in steady state: {dups:?}");
    assert_eq!(count.len(), produced.len());
    no_errors(&seen);
    // Committed offsets reach the end of every partition.
    wait_until("commits at the end", Duration::from_secs(20), || {
        let committed: BTreeMap<i32, i64> = members
            .iter()
            .flat_map(|m| m.seen().committed.into_iter())
            .collect();
        (0..12).all(|p| committed.get(&p) == Some(&100))
    });
    for m in &mut members {
        m.close();
    }
    broker.assert_no_error_logs();
}

#[test]
fn group_members_leave_crash_and_join_without_losing_records() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-churn");
    clients::create_topic(&bs, &topic, 12, &[]);
    let opts = Opts::new(&common::topic_name("g-churn"), &topic);
    let mut a = Member::start(&bs, &opts);
    let b = Member::start(&bs, &opts);
    let mut c = ChildMember::start(&bs, &opts);
    wait_for_split("a, b and the child to split", 12, || {
        vec![a.seen(), b.seen(), c.seen()]
    });
    let mut produced = produce_spread(&bs, &topic, 12, 600, "one");
    wait_until("batch one consumed", Duration::from_secs(60), || {
        all_consumed(&[a.seen(), b.seen(), c.seen()], &produced)
    });

    // Records keep arriving while a leaves, the child crashes and d joins.
    let producer = {
        let (bs, topic) = (bs.clone(), topic.clone());
        std::thread::spawn(move || {
            let mut out = Vec::new();
            for round in 0..10 {
                out.extend(produce_spread(&bs, &topic, 12, 60, &format!("two-{round}")));
                std::thread::sleep(Duration::from_millis(300));
            }
            out
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    a.close();
    c.kill9();
    let d = Member::start(&bs, &opts);
    produced.extend(producer.join().expect("producer"));
    // The crashed member is gone after its session timeout: b and d own all.
    wait_for_split("b and d to own every partition", 12, || {
        vec![b.seen(), d.seen()]
    });
    produced.extend(produce_spread(&bs, &topic, 12, 240, "three"));
    let everyone = || vec![a.seen(), b.seen(), c.seen(), d.seen()];
    wait_until("every record consumed", Duration::from_secs(60), || {
        all_consumed(&everyone(), &produced)
    });

    // Nothing lost (above). Duplicates only within the at-least-once window:
    // a record read twice was read by a member that had not committed past it.
    let seen = everyone();
    let mut readers: HashMap<(i32, i64), Vec<usize>> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        for r in &s.consumed {
            readers.entry(*r).or_default().push(i);
        }
    }
    let mut dups = 0;
    for (r, who) in &readers {
        if who.len() < 2 {
            continue;
        }
        dups += who.len() - 1;
        let in_window = who.iter().any(|i| {
            seen[*i]
                .committed
                .get(&r.0)
                .is_none_or(|committed| *committed <= r.1)
        });
        assert!(
            in_window,
            "{r:?} read by {who:?} although committed by all of them"
        );
    }
    eprintln!(
        "{} records, {dups} duplicates after the crash",
        produced.len()
    );
    no_errors(&[b.seen(), d.seen()]);
    broker.assert_no_error_logs();
}

#[test]
fn group_cooperative_sticky_keeps_partitions_that_stay() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-coop");
    clients::create_topic(&bs, &topic, 12, &[]);
    let mut opts = Opts::new(&common::topic_name("g-coop"), &topic);
    opts.strategy = "cooperative-sticky";
    let a = Member::start(&bs, &opts);
    let b = Member::start(&bs, &opts);
    wait_for_split("a and b to split", 12, || vec![a.seen(), b.seen()]);
    // Let the group settle (a cooperative rebalance can take two rounds).
    std::thread::sleep(Duration::from_secs(2));
    let (a0, b0) = (a.seen(), b.seen());
    let c = Member::start(&bs, &opts);
    wait_for_split("a, b and c to split", 12, || {
        vec![a.seen(), b.seen(), c.seen()]
    });
    std::thread::sleep(Duration::from_secs(2));
    let (a1, b1, c1) = (a.seen(), b.seen(), c.seen());
    assert!(assignments_split(&[a1.clone(), b1.clone(), c1.clone()], 12));
    assert_eq!(c1.assignment.len(), 4);
    for (name, before, after) in [("a", &a0, &a1), ("b", &b0, &b1)] {
        let revoked: BTreeSet<i32> = after.revoked_events[before.revoked_events.len()..]
            .iter()
            .flatten()
            .copied()
            .collect();
        let kept: BTreeSet<i32> = before
            .assignment
            .intersection(&after.assignment)
            .copied()
            .collect();
        assert!(
            revoked.is_disjoint(&kept),
            "{name} had kept partitions {kept:?} revoked ({revoked:?})"
        );
        assert_eq!(
            revoked,
            before
                .assignment
                .difference(&after.assignment)
                .copied()
                .collect(),
            "{name} gave up exactly the partitions that moved"
        );
        assert!(
            after.assignment.is_subset(&before.assignment),
            "{name} gained partitions"
        );
    }
    let produced = produce_spread(&bs, &topic, 12, 240, "coop");
    wait_until("every record consumed", Duration::from_secs(60), || {
        all_consumed(&[a.seen(), b.seen(), c.seen()], &produced)
    });
    no_errors(&[a.seen(), b.seen(), c.seen()]);
    broker.assert_no_error_logs();
}

/// Reads from an explicit consumer until it has `n` records; returns them.
fn poll_n(c: &BaseConsumer<Ctx>, n: usize, timeout: Duration) -> Vec<(i32, i64, Vec<u8>)> {
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

#[test]
fn group_commits_survive_a_broker_crash_and_consumers_resume_there() {
    let mut broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-restart");
    clients::create_topic(&bs, &topic, 4, &[]);
    let produced = produce_spread(&bs, &topic, 4, 200, "first");
    assert_eq!(produced.len(), 200);
    let mut opts = Opts::new(&common::topic_name("g-restart"), &topic);
    // Only the explicit commit below.
    opts.commit_on_revoke = false;
    {
        let c = new_consumer(&bs, &opts, Arc::new(Shared::default()));
        let got = poll_n(&c, 120, Duration::from_secs(60));
        // Commit what was read, with metadata, per partition.
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, o, _) in &got {
            let e = next.entry(*p).or_default();
            *e = (*e).max(o + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
                .expect("add");
            tpl.find_partition(&topic, *p)
                .expect("partition")
                .set_metadata(format!("meta-{p}"));
        }
        c.commit(&tpl, CommitMode::Sync).expect("commit");
        drop(c);
        // A crash right after the commits were acknowledged.
        broker.kill9();
        broker.restart();
        let bs2 = broker.bootstrap();
        let c = new_consumer(&bs2, &opts, Arc::new(Shared::default()));
        let mut want = TopicPartitionList::new();
        for p in 0..4 {
            want.add_partition(&topic, p);
        }
        let committed = c
            .committed_offsets(want, clients::OP_TIMEOUT)
            .expect("committed");
        for p in 0..4 {
            let e = committed.find_partition(&topic, p).expect("partition");
            match next.get(&p) {
                Some(o) => {
                    assert_eq!(
                        e.offset(),
                        Offset::Offset(*o),
                        "partition {p} committed offset"
                    );
                    assert_eq!(e.metadata(), format!("meta-{p}"), "partition {p} metadata");
                }
                None => assert_eq!(e.offset(), Offset::Invalid, "partition {p} has no commit"),
            }
        }
        // The restarted consumer resumes exactly at the committed offsets
        // (and at the start where nothing was committed).
        let rest = poll_n(&c, 80, Duration::from_secs(60));
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, o, _) in &rest {
            first.entry(*p).or_insert(*o);
        }
        let expected: BTreeMap<i32, i64> = (0..4)
            .map(|p| (p, next.get(&p).copied().unwrap_or(0)))
            .filter(|(_, o)| *o < 50)
            .collect();
        assert_eq!(first, expected, "first offsets after the restart");
        let all: BTreeSet<(i32, i64)> = got
            .iter()
            .chain(rest.iter())
            .map(|(p, o, _)| (*p, *o))
            .collect();
        assert_eq!(
            all.len(),
            200,
            "every record exactly once across the restart"
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            c.poll(Duration::from_millis(500)).is_none(),
            "nothing more to read"
        );
    }
    broker.assert_no_error_logs();
}

#[test]
fn group_static_member_restart_within_the_session_timeout_does_not_rebalance() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-static");
    clients::create_topic(&bs, &topic, 6, &[]);
    let mut o1 = Opts::new(&common::topic_name("g-static"), &topic);
    o1.instance = Some("instance-1".into());
    let mut o2 = o1.clone();
    o2.instance = Some("instance-2".into());
    let mut a = Member::start(&bs, &o1);
    let b = Member::start(&bs, &o2);
    wait_for_split("two static members to split", 6, || {
        vec![a.seen(), b.seen()]
    });
    std::thread::sleep(Duration::from_secs(1));
    let (a0, b0) = (a.seen(), b.seen());
    // Restart a: a static member sends no LeaveGroup when it closes.
    a.close();
    let a2 = Member::start(&bs, &o1);
    wait_until(
        "the restarted member to get its partitions",
        Duration::from_secs(30),
        || !a2.seen().assignment.is_empty(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let b1 = b.seen();
    assert_eq!(
        b1.revoked_events.len(),
        b0.revoked_events.len(),
        "b saw no revocation"
    );
    assert_eq!(
        b1.assigned_events.len(),
        b0.assigned_events.len(),
        "b saw no new assignment"
    );
    assert_eq!(
        a2.seen().assignment,
        a0.assignment,
        "a got its old partitions back"
    );
    let produced = produce_spread(&bs, &topic, 6, 60, "static");
    wait_until("every record consumed", Duration::from_secs(30), || {
        all_consumed(&[a2.seen(), b.seen()], &produced)
    });
    broker.assert_no_error_logs();
}

#[test]
fn group_auto_offset_reset_earliest_latest_and_none() {
    let broker = start_broker();
    let bs = broker.bootstrap();
    let topic = common::topic_name("grp-reset");
    clients::create_topic(&bs, &topic, 1, &[]);
    produce_spread(&bs, &topic, 1, 10, "old");

    // earliest: from the start.
    let mut o = Opts::new(&common::topic_name("g-earliest"), &topic);
    let c = new_consumer(&bs, &o, Arc::new(Shared::default()));
    let got = poll_n(&c, 10, Duration::from_secs(30));
    assert_eq!(got[0].1, 0);
    drop(c);

    // latest: only what arrives after the assignment.
    o.group = common::topic_name("g-latest");
    o.reset = "latest";
    let shared = Arc::new(Shared::default());
    let c = new_consumer(&bs, &o, shared.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.get().assignment.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no assignment for the latest consumer"
        );
        assert!(
            c.poll(Duration::from_millis(100)).is_none(),
            "latest read an old record"
        );
    }
    // Let the reset to the end (OffsetFetch, then ListOffsets) finish.
    for _ in 0..20 {
        assert!(
            c.poll(Duration::from_millis(100)).is_none(),
            "latest read an old record"
        );
    }
    produce_spread(&bs, &topic, 1, 5, "new");
    let got = poll_n(&c, 5, Duration::from_secs(30));
    assert_eq!(
        got.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(got[0].2, b"new-0");
    drop(c);

    // none (librdkafka: error): no committed offset is an error, not a guess.
    o.group = common::topic_name("g-none");
    o.reset = "error";
    let c = new_consumer(&bs, &o, Arc::new(Shared::default()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "no error for auto.offset.reset=none"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Err(e)) => break e,
            Some(Ok(m)) => panic!("read offset {} without a committed offset", m.offset()),
            None => {}
        }
    };
    assert!(err.to_string().to_lowercase().contains("offset"), "{err}");
    drop(c);
    // With a committed offset, `none` starts there.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(12))
        .expect("add");
    // A consumer outside the group's membership commits (generation -1).
    let committer: BaseConsumer = consumer_config(&bs, &o).create().expect("create consumer");
    committer.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(committer);
    let c = new_consumer(&bs, &o, Arc::new(Shared::default()));
    let got = poll_n(&c, 3, Duration::from_secs(30));
    assert_eq!(
        got.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![12, 13, 14]
    );
    drop(c);
    broker.assert_no_error_logs();
}

mod raw_requests {
    //! Exact error codes and every advertised version, with raw frames.

    use super::*;
    use common::raw::RawConn;
    use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    const NONE: i16 = 0;
    const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const ILLEGAL_GENERATION: i16 = 22;
    const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    const INVALID_GROUP_ID: i16 = 24;
    const UNKNOWN_MEMBER_ID: i16 = 25;
    const INVALID_SESSION_TIMEOUT: i16 = 26;
    const REBALANCE_IN_PROGRESS: i16 = 27;
    const NON_EMPTY_GROUP: i16 = 68;
    const GROUP_ID_NOT_FOUND: i16 = 69;
    const MEMBER_ID_REQUIRED: i16 = 79;
    const FENCED_INSTANCE_ID: i16 = 82;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    fn join_req(group: &str, member: &str, protocol: &str) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(6000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s(protocol))
                .with_metadata(bytes::Bytes::from_static(b"\x00\x01"))])
    }

    fn join(conn: &mut RawConn, v: i16, req: &JoinGroupRequest) -> JoinGroupResponse {
        conn.roundtrip(ApiKey::JoinGroup, v, req)
    }

    /// Joins `group` as its only member (v5 + MEMBER_ID_REQUIRED dance) and
    /// syncs; returns (member id, generation).
    fn join_alone(conn: &mut RawConn, group: &str, instance: Option<&str>) -> (String, i32) {
        let mut req = join_req(group, "", "range");
        req.group_instance_id = instance.map(s);
        let r = join(conn, 5, &req);
        let r = if r.error_code == MEMBER_ID_REQUIRED {
            req.member_id = r.member_id.clone();
            join(conn, 5, &req)
        } else {
            r
        };
        assert_eq!(r.error_code, NONE, "join {group}");
        let member = r.member_id.to_string();
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(r.generation_id)
            .with_member_id(s(&member))
            .with_group_instance_id(instance.map(s))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(bytes::Bytes::from_static(b"assignment"))]);
        let sr: SyncGroupResponse = conn.roundtrip(ApiKey::SyncGroup, 3, &sync);
        assert_eq!(sr.error_code, NONE);
        assert_eq!(&sr.assignment[..], b"assignment");
        (member, r.generation_id)
    }

    fn commit_req(
        group: &str,
        member: &str,
        generation: i32,
        topic: &str,
        metadata: &str,
    ) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member))
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(5)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(s(metadata)))])])
    }

    fn commit_code(conn: &mut RawConn, v: i16, req: &OffsetCommitRequest) -> i16 {
        let r: OffsetCommitResponse = conn.roundtrip(ApiKey::OffsetCommit, v, req);
        r.topics[0].partitions[0].error_code
    }

    #[test]
    fn group_bad_requests_get_kafka_error_codes_and_the_coordinator_keeps_serving() {
        let broker = start_broker();
        let bs = broker.bootstrap();
        let topic = common::topic_name("grp-raw");
        clients::create_topic(&bs, &topic, 1, &[]);
        let mut conn = RawConn::connect(&bs);
        let group = common::topic_name("g-raw");

        // JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED.
        let r = join(&mut conn, 4, &join_req(&group, "", "range"));
        assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
        assert!(!r.member_id.is_empty());
        // Session timeout out of range; empty group id.
        let mut bad = join_req(&group, "", "range");
        bad.session_timeout_ms = 10;
        assert_eq!(join(&mut conn, 5, &bad).error_code, INVALID_SESSION_TIMEOUT);
        assert_eq!(
            join(&mut conn, 5, &join_req("", "", "range")).error_code,
            INVALID_GROUP_ID
        );

        let (member, generation) = join_alone(&mut conn, &group, None);
        assert_eq!(generation, 1);
        // Unknown protocols and a different protocol type are inconsistent.
        let r = join(&mut conn, 5, &join_req(&group, "", "no-such-assignor"));
        assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
        let mut other_type = join_req(&group, "", "range");
        other_type.protocol_type = s("connect");
        assert_eq!(
            join(&mut conn, 5, &other_type).error_code,
            INCONSISTENT_GROUP_PROTOCOL
        );
        // Unknown members.
        assert_eq!(
            join(&mut conn, 5, &join_req(&group, "ghost", "range")).error_code,
            UNKNOWN_MEMBER_ID
        );
        let hb = |member: &str, generation: i32| {
            HeartbeatRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(member))
                .with_generation_id(generation)
        };
        let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, 4, &hb(&member, generation));
        assert_eq!(r.error_code, NONE);
        let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, 4, &hb("ghost", generation));
        assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
        // Stale generations.
        let r: HeartbeatResponse =
            conn.roundtrip(ApiKey::Heartbeat, 4, &hb(&member, generation - 1));
        assert_eq!(r.error_code, ILLEGAL_GENERATION);
        let stale_sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation + 7)
            .with_member_id(s(&member));
        let r: SyncGroupResponse = conn.roundtrip(ApiKey::SyncGroup, 5, &stale_sync);
        assert_eq!(r.error_code, ILLEGAL_GENERATION);
        assert_eq!(
            commit_code(
                &mut conn,
                8,
                &commit_req(&group, &member, generation + 1, &topic, "")
            ),
            ILLEGAL_GENERATION
        );
        // A group with members takes commits from members only.
        assert_eq!(
            commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
            UNKNOWN_MEMBER_ID
        );
        // Oversized metadata, unknown topics.
        let big = "x".repeat(5000);
        assert_eq!(
            commit_code(
                &mut conn,
                8,
                &commit_req(&group, &member, generation, &topic, &big)
            ),
            OFFSET_METADATA_TOO_LARGE
        );
        assert_eq!(
            commit_code(
                &mut conn,
                8,
                &commit_req(&group, &member, generation, "no-such-topic", "")
            ),
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            commit_code(
                &mut conn,
                8,
                &commit_req(&group, &member, generation, &topic, "ok")
            ),
            NONE
        );
        // A group that does not exist does not take generation-bound commits.
        assert_eq!(
            commit_code(
                &mut conn,
                8,
                &commit_req("never-joined", "m", 3, &topic, "")
            ),
            ILLEGAL_GENERATION
        );
        // A member with huge protocol metadata still gets an answer.
        let mut huge = join_req(&common::topic_name("g-huge"), "", "range");
        huge.protocols[0].metadata = bytes::Bytes::from(vec![7u8; 2 << 20]);
        let r = join(&mut conn, 3, &huge);
        assert_eq!(r.error_code, NONE);
        assert_eq!(r.members[0].metadata.len(), 2 << 20);

        // Delete: not while it has members; offsets of a consumed topic stay.
        let del: DeleteGroupsResponse = conn.roundtrip(
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s(&group)), GroupId(s("nope"))]),
        );
        assert_eq!(del.results[0].error_code, NON_EMPTY_GROUP);
        assert_eq!(del.results[1].error_code, GROUP_ID_NOT_FOUND);
        let od: OffsetDeleteResponse = conn.roundtrip(
            ApiKey::OffsetDelete,
            0,
            &OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("nope")))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s(&topic)))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ])]),
        );
        assert_eq!(od.error_code, GROUP_ID_NOT_FOUND);

        // Static members: a second instance with the same id fences the first.
        let sgroup = common::topic_name("g-raw-static");
        let (m1, g1) = join_alone(&mut conn, &sgroup, Some("inst"));
        let (m2, g2) = join_alone(&mut conn, &sgroup, Some("inst"));
        assert_ne!(m1, m2);
        assert_eq!(g1, g2, "a static rejoin does not start a new generation");
        let r: HeartbeatResponse = conn.roundtrip(
            ApiKey::Heartbeat,
            4,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s(&sgroup)))
                .with_member_id(s(&m1))
                .with_group_instance_id(Some(s("inst")))
                .with_generation_id(g1),
        );
        assert_eq!(r.error_code, FENCED_INSTANCE_ID);

        // Leave: the group empties and can be deleted.
        let lr: LeaveGroupResponse = conn.roundtrip(
            ApiKey::LeaveGroup,
            5,
            &LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(s(&member)),
                    MemberIdentity::default().with_member_id(s("ghost")),
                ]),
        );
        assert_eq!(lr.error_code, NONE);
        assert_eq!(lr.members[0].error_code, NONE);
        assert_eq!(lr.members[1].error_code, UNKNOWN_MEMBER_ID);
        let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, 4, &hb(&member, generation));
        assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
        let fetched: OffsetFetchResponse = conn.roundtrip(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(&topic)))
                    .with_partition_indexes(vec![0])])),
        );
        let p = &fetched.topics[0].partitions[0];
        assert_eq!((p.committed_offset, p.metadata.as_deref()), (5, Some("ok")));
        let del: DeleteGroupsResponse = conn.roundtrip(
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]),
        );
        assert_eq!(del.results[0].error_code, NONE);

        // The coordinator still serves other groups.
        let (_, g) = join_alone(&mut conn, &common::topic_name("g-after"), None);
        assert_eq!(g, 1);
        let _ = REBALANCE_IN_PROGRESS;
        broker.assert_no_error_logs();
    }

    fn fetch_offset(conn: &mut RawConn, group: &str, topic: &str) -> i64 {
        let r: OffsetFetchResponse = conn.roundtrip(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(vec![0])])),
        );
        r.topics[0].partitions[0].committed_offset
    }

    #[test]
    fn group_offsets_of_a_deleted_topic_are_removed() {
        let broker = start_broker();
        let bs = broker.bootstrap();
        let topic = common::topic_name("grp-deleted");
        clients::create_topic(&bs, &topic, 1, &[]);
        let mut conn = RawConn::connect(&bs);
        let group = common::topic_name("g-deleted");
        assert_eq!(
            commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
            NONE
        );
        assert_eq!(fetch_offset(&mut conn, &group, &topic), 5);
        let admin = clients::admin(&bs);
        let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(clients::OP_TIMEOUT));
        for r in clients::block_on(admin.delete_topics(&[&topic], &opts)).expect("delete topics") {
            r.expect("topic deleted");
        }
        // A topic of the same name starts without the old group's offsets.
        clients::create_topic(&bs, &topic, 1, &[]);
        wait_until("the old offset to go", Duration::from_secs(10), || {
            fetch_offset(&mut conn, &group, &topic) == -1
        });
        broker.assert_no_error_logs();
    }

    #[test]
    fn group_every_advertised_version_is_answered() {
        let broker = start_broker();
        let bs = broker.bootstrap();
        let topic = common::topic_name("grp-versions");
        clients::create_topic(&bs, &topic, 1, &[]);
        let mut conn = RawConn::connect(&bs);
        let range = |conn: &mut RawConn, key: ApiKey| {
            let r = conn
                .version_range(key)
                .unwrap_or_else(|| panic!("{key:?} not advertised"));
            r.min_version..=r.max_version
        };
        for v in range(&mut conn, ApiKey::FindCoordinator) {
            let req = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")])
            } else {
                FindCoordinatorRequest::default().with_key(s("g"))
            };
            let r: FindCoordinatorResponse = conn.roundtrip(ApiKey::FindCoordinator, v, &req);
            if v >= 4 {
                assert_eq!(r.coordinators.len(), 2);
                assert!(r
                    .coordinators
                    .iter()
                    .all(|c| c.error_code == NONE && c.node_id.0 >= 0));
            } else {
                assert_eq!((r.error_code, r.port > 0), (NONE, true), "v{v}");
            }
        }
        for v in range(&mut conn, ApiKey::JoinGroup) {
            let group = format!("{}-v{v}", common::topic_name("g-join"));
            let mut req = join_req(&group, "", "range");
            req.group_instance_id = (v >= 5).then(|| s("static"));
            let mut r = join(&mut conn, v, &req);
            if v == 4 {
                assert_eq!(r.error_code, MEMBER_ID_REQUIRED, "JoinGroup v4");
                req.member_id = r.member_id.clone();
                r = join(&mut conn, v, &req);
            }
            assert_eq!(r.error_code, NONE, "JoinGroup v{v}");
            let member = r.member_id.to_string();
            let gen = r.generation_id;
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id(gen)
                .with_member_id(s(&member))
                .with_group_instance_id(req.group_instance_id.clone())
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(bytes::Bytes::from_static(b"a"))]);
            let sv = v.min(5);
            let r: SyncGroupResponse = conn.roundtrip(ApiKey::SyncGroup, sv, &sync);
            assert_eq!(r.error_code, NONE, "SyncGroup v{sv}");
            let hv = v.min(4);
            let hb = HeartbeatRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(&member))
                .with_group_instance_id(if hv >= 3 {
                    req.group_instance_id.clone()
                } else {
                    None
                })
                .with_generation_id(gen);
            let r: HeartbeatResponse = conn.roundtrip(ApiKey::Heartbeat, hv, &hb);
            assert_eq!(r.error_code, NONE, "Heartbeat v{hv}");
            let lv = v.min(5);
            let leave = if lv >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_members(vec![MemberIdentity::default()
                        .with_member_id(s(&member))
                        .with_group_instance_id(req.group_instance_id.clone())])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_member_id(s(&member))
            };
            let r: LeaveGroupResponse = conn.roundtrip(ApiKey::LeaveGroup, lv, &leave);
            assert_eq!(r.error_code, NONE, "LeaveGroup v{lv}");
            if lv >= 3 {
                assert_eq!(r.members[0].error_code, NONE);
            }
        }
        for v in range(&mut conn, ApiKey::OffsetCommit) {
            let group = format!("{}-v{v}", common::topic_name("g-commit"));
            let code = commit_code(
                &mut conn,
                v,
                &commit_req(&group, "", -1, &topic, &format!("v{v}")),
            );
            assert_eq!(code, NONE, "OffsetCommit v{v}");
            for fv in range(&mut conn, ApiKey::OffsetFetch) {
                let req = if fv >= 8 {
                    OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(s(&group)))
                            .with_member_epoch(-1)
                            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                                .with_name(TopicName(s(&topic)))
                                .with_partition_indexes(vec![0])])),
                    ])
                } else {
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(s(&group)))
                        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                            .with_name(TopicName(s(&topic)))
                            .with_partition_indexes(vec![0])]))
                };
                let r: OffsetFetchResponse = conn.roundtrip(ApiKey::OffsetFetch, fv, &req);
                let (offset, metadata) = if fv >= 8 {
                    let p = &r.groups[0].topics[0].partitions[0];
                    (p.committed_offset, p.metadata.clone())
                } else {
                    let p = &r.topics[0].partitions[0];
                    (p.committed_offset, p.metadata.clone())
                };
                assert_eq!(offset, 5, "OffsetFetch v{fv} after OffsetCommit v{v}");
                assert_eq!(metadata.as_deref(), Some(format!("v{v}").as_str()));
            }
        }
        for v in range(&mut conn, ApiKey::DescribeGroups) {
            let r: DescribeGroupsResponse = conn.roundtrip(
                ApiKey::DescribeGroups,
                v,
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("missing"))]),
            );
            let want = if v >= 6 { GROUP_ID_NOT_FOUND } else { NONE };
            assert_eq!(r.groups[0].error_code, want, "DescribeGroups v{v}");
            assert_eq!(r.groups[0].group_state.as_str(), "Dead");
        }
        for v in range(&mut conn, ApiKey::ListGroups) {
            let req = ListGroupsRequest::default().with_states_filter(if v >= 4 {
                vec![s("empty")]
            } else {
                vec![]
            });
            let r: ListGroupsResponse = conn.roundtrip(ApiKey::ListGroups, v, &req);
            assert_eq!(r.error_code, NONE);
            assert!(r.groups.len() >= 2, "ListGroups v{v}: {}", r.groups.len());
        }
        for v in range(&mut conn, ApiKey::DeleteGroups) {
            let group = format!("{}-v{v}", common::topic_name("g-del"));
            assert_eq!(
                commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
                NONE
            );
            let r: DeleteGroupsResponse = conn.roundtrip(
                ApiKey::DeleteGroups,
                v,
                &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]),
            );
            assert_eq!(r.results[0].error_code, NONE, "DeleteGroups v{v}");
        }
        let group = common::topic_name("g-odel");
        assert_eq!(
            commit_code(&mut conn, 8, &commit_req(&group, "", -1, &topic, "")),
            NONE
        );
        for v in range(&mut conn, ApiKey::OffsetDelete) {
            let r: OffsetDeleteResponse = conn.roundtrip(
                ApiKey::OffsetDelete,
                v,
                &OffsetDeleteRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(vec![OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(0)
                        ])]),
            );
            assert_eq!(r.error_code, NONE);
            assert_eq!(
                r.topics[0].partitions[0].error_code, NONE,
                "OffsetDelete v{v}"
            );
        }
        broker.assert_no_error_logs();
    }
}
