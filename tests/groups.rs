//! Consumer groups with real clients: rdkafka consumers in threads (and one
//! in a child process that is killed with SIGKILL), plus raw requests for
//! exact error codes and every advertised version (`raw_requests`). The
//! consumers and checks are in `common::groups`.

mod common;
#[path = "groups/raw_requests.rs"]
mod raw_requests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clients;
use common::groups::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// Not a test of its own: the body of a [`ChildMember`] process.
#[test]
#[ignore = "runs only as a child process of the group tests"]
fn child_consumer() {
    common::groups::child_consumer();
}

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
