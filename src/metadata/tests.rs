//! End-to-end tests of [`Metadata`]: open, propose, restart, recovery.

use std::collections::BTreeMap;
use std::path::Path;

use uuid::Uuid;

use super::*;

const ADDR: &str = "127.0.0.1:9093";

async fn open(dir: &Path) -> Metadata {
    Metadata::open(dir, 1, ADDR.to_string())
        .await
        .expect("open")
}

fn broker(id: i32) -> Command {
    Command::RegisterBroker(BrokerInfo {
        node_id: id,
        host: "localhost".to_string(),
        port: 9092,
        rack: None,
        listeners: Vec::new(),
    })
}

fn create(name: &str, id: Uuid, partitions: i32, configs: &[(&str, &str)]) -> Command {
    Command::CreateTopic {
        name: name.to_string(),
        id,
        partitions,
        replication_factor: 1,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        assignments: None,
    }
}

async fn producer_block(md: &Metadata, count: i64) -> i64 {
    match md
        .propose(Command::AllocateProducerIds { count })
        .await
        .expect("allocate")
    {
        CommandResult::ProducerIdBlock { first, count: c } => {
            assert_eq!(c, count);
            first
        }
        other => panic!("unexpected result {other:?}"),
    }
}

#[tokio::test]
async fn fresh_open_initializes_one_voter_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = open(dir.path()).await;
    let view = md.view();
    assert_eq!(view.cluster_id.len(), 22, "{}", view.cluster_id);
    assert_eq!(view.controller_id, 1);
    assert!(view.topics.is_empty());

    let mut applied = md.subscribe();
    let before = *applied.borrow_and_update();
    assert_eq!(
        md.propose(broker(1)).await.expect("register"),
        CommandResult::Ok
    );
    assert!(applied.has_changed().expect("sender alive"));
    assert!(*applied.borrow_and_update() > before);
    assert!(md.view().brokers.contains_key(&1));
    md.shutdown().await.expect("shutdown");
    md.shutdown().await.expect("shutdown is idempotent");
    assert!(md.propose(broker(1)).await.is_err());
}

#[tokio::test]
async fn restart_keeps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (orders, events) = (Uuid::new_v4(), Uuid::new_v4());
    let md = open(dir.path()).await;
    assert_eq!(
        md.propose(broker(1)).await.expect("register"),
        CommandResult::Ok
    );
    let created = md
        .propose(create("orders", orders, 3, &[("retention.ms", "1000")]))
        .await
        .expect("create");
    assert_eq!(created, CommandResult::Ok);
    let created = md
        .propose(create("events", events, 1, &[]))
        .await
        .expect("create");
    assert_eq!(created, CommandResult::Ok);
    let dup = md
        .propose(create("orders", Uuid::new_v4(), 1, &[]))
        .await
        .expect("duplicate");
    assert_eq!(dup, CommandResult::TopicAlreadyExists);
    let alter = Command::AlterTopicConfigs {
        name: "events".to_string(),
        set: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        delete: vec![],
        replace: false,
    };
    assert_eq!(md.propose(alter).await.expect("alter"), CommandResult::Ok);
    let grow = Command::CreatePartitions {
        name: "events".to_string(),
        total_count: 2,
        assignments: None,
    };
    assert_eq!(md.propose(grow).await.expect("grow"), CommandResult::Ok);
    let first_block = producer_block(&md, 1000).await;
    let before = md.view();
    md.shutdown().await.expect("shutdown");

    let md = open(dir.path()).await;
    let after = md.view();
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.brokers, before.brokers);
    assert_eq!(
        after.topic_by_id(orders).map(|t| t.name.as_str()),
        Some("orders")
    );
    assert_eq!(
        after.topic("orders").map(|t| t.configs.clone()),
        Some(BTreeMap::from([(
            "retention.ms".to_string(),
            "1000".to_string()
        )]))
    );
    assert_eq!(after.topic("events").map(|t| t.partitions.len()), Some(2));
    assert_eq!(after.controller_id, 1);
    let second_block = producer_block(&md, 1000).await;
    assert!(
        second_block >= first_block + 1000,
        "{second_block} after {first_block}"
    );
    md.shutdown().await.expect("shutdown");

    // A third generation sees the second one's writes too.
    let md = open(dir.path()).await;
    assert!(producer_block(&md, 1).await >= second_block + 1000);
    assert_eq!(md.view().cluster_id, before.cluster_id);
    md.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn restart_from_snapshot_and_purged_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tuning = Tuning {
        snapshot_every: 5,
        keep_logs_in_snapshot: 2,
    };
    let md = Metadata::open_with(
        dir.path(),
        1,
        Quorum::Alone {
            raft_addr: ADDR.to_string(),
        },
        tuning.clone(),
    )
    .await
    .expect("open");
    assert_eq!(
        md.propose(broker(1)).await.expect("register"),
        CommandResult::Ok
    );
    let mut last = 0;
    for i in 0..30 {
        last = producer_block(&md, 10).await;
        assert_eq!(
            md.propose(create(&format!("t{i}"), Uuid::new_v4(), 1, &[]))
                .await
                .expect("create"),
            CommandResult::Ok
        );
    }
    // Let openraft build a snapshot and purge.
    let metrics = md
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some() && m.purged.is_some(),
            "snapshot and purge",
        )
        .await
        .expect("snapshot taken and log purged");
    assert!(metrics.purged.is_some());
    let before = md.view();
    md.shutdown().await.expect("shutdown");
    assert!(dir.path().join("snapshot").exists());

    let md = Metadata::open_with(
        dir.path(),
        1,
        Quorum::Alone {
            raft_addr: ADDR.to_string(),
        },
        tuning,
    )
    .await
    .expect("reopen");
    let after = md.view();
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.topics.len(), 30);
    assert_eq!(after.next_producer_id, before.next_producer_id);
    assert!(producer_block(&md, 1).await > last);
    md.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn torn_last_log_record_is_dropped_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = open(dir.path()).await;
    assert_eq!(
        md.propose(broker(1)).await.expect("register"),
        CommandResult::Ok
    );
    let id = Uuid::new_v4();
    assert_eq!(
        md.propose(create("t", id, 1, &[])).await.expect("create"),
        CommandResult::Ok
    );
    let before = md.view();
    md.shutdown().await.expect("shutdown");

    // A crash in the middle of appending one more record: a frame header
    // promising more bytes than made it to disk.
    let log = dir.path().join("raft.log");
    let mut bytes = std::fs::read(&log).expect("read log");
    let intact = bytes.len();
    bytes.extend_from_slice(&200u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(b"{\"log_id\":");
    std::fs::write(&log, &bytes).expect("tear");

    let md = open(dir.path()).await;
    let after = md.view();
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_eq!(
        md.propose(broker(2)).await.expect("register"),
        CommandResult::Ok
    );
    md.shutdown().await.expect("shutdown");
    let len = std::fs::metadata(&log).expect("stat").len();
    assert!(len > intact as u64, "appends continue after the cut");
    let md = open(dir.path()).await;
    assert!(md.view().brokers.contains_key(&2));
    md.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn reopen_with_another_node_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = open(dir.path()).await;
    md.shutdown().await.expect("shutdown");
    match Metadata::open(dir.path(), 2, ADDR.to_string()).await {
        Err(MetadataError::NotAVoter { node_id: 2, voters }) => assert_eq!(voters, vec![1]),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("opened as a non-voter"),
    }
}

#[tokio::test]
async fn node_id_must_fit_a_broker_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let too_big = u64::from(u32::MAX);
    assert!(matches!(
        Metadata::open(dir.path(), too_big, ADDR.to_string()).await,
        Err(MetadataError::InvalidNodeId { .. })
    ));
}

#[test]
fn cluster_ids_look_like_kafka_uuids() {
    for _ in 0..100 {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(!id.starts_with('-'));
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
    // RFC 4648 test vectors, unpadded url-safe alphabet.
    assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64url(b"fooba"), "Zm9vYmE");
    assert_eq!(base64url(b"foob"), "Zm9vYg");
    assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
}

/// Three voters in one process, each on its own controller listener.
struct Quorum3 {
    dirs: Vec<tempfile::TempDir>,
    addrs: BTreeMap<NodeId, String>,
}

impl Quorum3 {
    async fn new() -> (Quorum3, Vec<tokio::net::TcpListener>) {
        let mut listeners = Vec::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=3u64 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(id, l.local_addr().unwrap().to_string());
            listeners.push(l);
        }
        let dirs = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        (Quorum3 { dirs, addrs }, listeners)
    }

    async fn open(&self, id: NodeId, listener: tokio::net::TcpListener) -> Metadata {
        let quorum = super::Quorum::Voters {
            voters: self.addrs.clone(),
            listener,
            tls: None,
        };
        Metadata::open_quorum(self.dirs[(id - 1) as usize].path(), id, quorum)
            .await
            .expect("open in quorum")
    }
}

fn leader_of(nodes: &[&Metadata]) -> i32 {
    nodes
        .iter()
        .map(|m| m.view().controller_id)
        .max()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_agree_forward_proposals_and_survive_the_loss_of_the_leader() {
    let (q, listeners) = Quorum3::new().await;
    let mut listeners = listeners.into_iter();
    let (a, b, c) = tokio::join!(
        q.open(1, listeners.next().unwrap()),
        q.open(2, listeners.next().unwrap()),
        q.open(3, listeners.next().unwrap()),
    );
    let id = a.view().cluster_id.clone();
    assert!(!id.is_empty());
    assert_eq!(b.view().cluster_id, id);
    assert_eq!(c.view().cluster_id, id);

    // Every node takes proposals: followers forward them, and each sees
    // its own change in its view as soon as propose returns.
    for (i, m) in [&a, &b, &c].into_iter().enumerate() {
        let node = i32::try_from(i).unwrap() + 1;
        assert_eq!(
            m.propose(broker(node)).await.expect("register"),
            CommandResult::Ok
        );
        assert!(m.view().brokers.contains_key(&node), "node {node}");
    }
    let topic = Uuid::new_v4();
    assert_eq!(
        b.propose(create("t", topic, 3, &[])).await.unwrap(),
        CommandResult::Ok
    );
    assert!(b.view().topic("t").is_some());

    // The leader stops; the two left elect one of themselves and commit.
    let leader = leader_of(&[&a, &b, &c]);
    assert!((1..=3).contains(&leader), "{leader}");
    let (stopped, rest): (Vec<_>, Vec<_>) = [a, b, c]
        .into_iter()
        .enumerate()
        .partition(|(i, _)| *i as i32 + 1 == leader);
    let (_, old) = stopped.into_iter().next().unwrap();
    old.shutdown().await.expect("shutdown");
    let rest: Vec<Metadata> = rest.into_iter().map(|(_, m)| m).collect();
    let created = rest[0]
        .propose(create("after", Uuid::new_v4(), 1, &[]))
        .await
        .expect("a quorum of two commits");
    assert_eq!(created, CommandResult::Ok);
    for m in &rest {
        // Applied everywhere eventually; the proposer at once.
        let mut watch = m.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            watch.wait_for(|_| m.view().topic("after").is_some()),
        )
        .await
        .expect("applied")
        .expect("watch");
        assert_ne!(m.view().controller_id, leader);
    }

    // The old leader comes back on its address and catches up.
    let listener = tokio::net::TcpListener::bind(&q.addrs[&(leader as u64)])
        .await
        .unwrap();
    let back = q.open(leader as u64, listener).await;
    let mut watch = back.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|_| back.view().topic("after").is_some()),
    )
    .await
    .expect("caught up")
    .expect("watch");
    assert_eq!(back.view().cluster_id, id);
    for m in rest.iter().chain([&back]) {
        m.shutdown().await.expect("shutdown");
    }
}

/// A single node's directory started as one voter of three would leave the
/// other two to make a second history (or wait for ever): refused, naming
/// both voter sets.
#[tokio::test]
async fn a_directory_of_another_quorum_is_refused() {
    let (q, mut listeners) = Quorum3::new().await;
    let alone = open(q.dirs[0].path()).await;
    alone.shutdown().await.expect("shutdown");
    drop(alone);
    let quorum = super::Quorum::Voters {
        voters: q.addrs.clone(),
        listener: listeners.remove(0),
        tls: None,
    };
    let err = Metadata::open_quorum(q.dirs[0].path(), 1, quorum)
        .await
        .err()
        .expect("another quorum");
    assert!(matches!(err, MetadataError::VotersChanged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("stored=[1]") && text.contains("configured=[1, 2, 3]"),
        "{text}"
    );
}

/// A fourth node outside the voters joins as a learner: it follows the log,
/// its proposals are forwarded, and the leader lists it as an observer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_voters_follows_as_a_learner() {
    let (q, listeners) = Quorum3::new().await;
    let mut listeners = listeners.into_iter();
    let learner_dir = tempfile::tempdir().unwrap();
    let learner_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let learner = async {
        let quorum = super::Quorum::Voters {
            voters: q.addrs.clone(),
            listener: learner_listener,
            tls: None,
        };
        Metadata::open_quorum(learner_dir.path(), 4, quorum)
            .await
            .expect("learner opens")
    };
    let (a, b, c, d) = tokio::join!(
        q.open(1, listeners.next().unwrap()),
        q.open(2, listeners.next().unwrap()),
        q.open(3, listeners.next().unwrap()),
        learner,
    );
    assert_eq!(d.view().cluster_id, a.view().cluster_id);
    assert_eq!(
        d.propose(broker(4)).await.expect("forwarded"),
        CommandResult::Ok
    );
    assert!(d.view().brokers.contains_key(&4));
    let status = d.quorum_status().await.expect("status");
    let voters: Vec<NodeId> = status.voters.iter().map(|v| v.node_id).collect();
    let observers: Vec<NodeId> = status.observers.iter().map(|v| v.node_id).collect();
    assert_eq!((voters, observers), (vec![1, 2, 3], vec![4]));
    for m in [&a, &b, &c, &d] {
        m.shutdown().await.expect("shutdown");
    }
    drop((a, b, c, d));
    // It comes back as a learner of the same quorum.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let quorum = super::Quorum::Voters {
        voters: q.addrs.clone(),
        listener,
        tls: None,
    };
    let reopened = tokio::time::timeout(
        Duration::from_secs(3),
        Metadata::open_quorum(learner_dir.path(), 4, quorum),
    )
    .await;
    // With the voters gone it waits for them; opening must not fail on
    // its own membership.
    if let Ok(r) = reopened {
        let m = r.expect("reopen");
        m.shutdown().await.ok();
    }
}

/// A single node grows into a quorum of three: restarted as the one voter
/// of a quorum (its address in the membership becomes its controller
/// listener's), two brokers join as learners and are made voters, one
/// forwarded through a node that does not lead. The three then survive
/// the loss of the first, and nodes still configured with the first
/// voter list (a subset of the stored voters) restart, including one that
/// became a voter since, while the first is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_grows_into_a_quorum_of_three() {
    let (q, listeners) = Quorum3::new().await;
    let mut listeners = listeners.into_iter();
    let alone = open(q.dirs[0].path()).await;
    let topic = Uuid::from_u128(7);
    assert_eq!(alone.propose(broker(1)).await.unwrap(), CommandResult::Ok);
    assert_eq!(
        alone
            .propose(create("before", topic, 1, &[]))
            .await
            .unwrap(),
        CommandResult::Ok
    );
    let refused = alone.add_voter(2).await.expect_err("alone");
    assert!(refused.to_string().contains("runs alone"), "{refused}");
    alone.shutdown().await.expect("shutdown");
    drop(alone);

    let first: BTreeMap<NodeId, String> = [(1, q.addrs[&1].clone())].into();
    let open_as = |id: NodeId, listener: tokio::net::TcpListener| {
        let quorum = super::Quorum::Voters {
            voters: first.clone(),
            listener,
            tls: None,
        };
        Metadata::open_quorum(q.dirs[(id - 1) as usize].path(), id, quorum)
    };
    let one = open_as(1, listeners.next().unwrap()).await.expect("open 1");
    let status = one.quorum_status().await.expect("status");
    assert_eq!(status.voters.len(), 1);
    assert_eq!(status.voters[0].addr, q.addrs[&1], "address updated");
    let not_joined = one.add_voter(2).await.expect_err("not a learner yet");
    assert!(
        not_joined.to_string().contains("does not follow"),
        "{not_joined}"
    );
    let two = open_as(2, listeners.next().unwrap()).await.expect("open 2");
    let three = open_as(3, listeners.next().unwrap()).await.expect("open 3");
    one.add_voter(2).await.expect("2 a voter");
    three.add_voter(3).await.expect("3 a voter, forwarded");
    one.add_voter(3).await.expect("a voter already");
    let status = one.quorum_status().await.expect("status");
    let ids = |v: &[VoterStatus]| v.iter().map(|s| s.node_id).collect::<Vec<_>>();
    assert_eq!(ids(&status.voters), vec![1, 2, 3]);
    assert!(status.observers.is_empty(), "{status:?}");

    // The first goes; two and three elect a leader and commit.
    one.shutdown().await.expect("shutdown 1");
    drop(one);
    let after = producer_block(&two, 10).await;
    // Two restarts with the first voter list while the first is down: a
    // voter of the stored membership, it asks nobody to join.
    two.shutdown().await.expect("shutdown 2");
    drop(two);
    let l2 = tokio::net::TcpListener::bind(&q.addrs[&2]).await.unwrap();
    let two = tokio::time::timeout(Duration::from_secs(30), open_as(2, l2))
        .await
        .expect("reopened without the first voter")
        .expect("open 2");
    assert!(two.view().topic("before").is_some());
    producer_block(&three, 10).await;
    // The first comes back with its old voter list and catches up.
    let l1 = tokio::net::TcpListener::bind(&q.addrs[&1]).await.unwrap();
    let one = open_as(1, l1).await.expect("reopen 1");
    let mut watch = one.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|_| one.view().next_producer_id >= after + 20),
    )
    .await
    .expect("caught up")
    .expect("watch");
    for m in [one, two, three] {
        m.shutdown().await.expect("shutdown");
    }
}
