"""Transactions with confluent-kafka (librdkafka): transactional producers
that commit and abort, read_committed and read_uncommitted consumers,
fencing of a zombie producer, the coordinator's timeout, and
consume-transform-produce with send_offsets_to_transaction across kill -9.
"""

import contextlib
import json
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import Broker, serving, strata_bin
from test_cluster import cluster  # noqa: F401 (the fixture)
from test_compaction import metric
from test_confluent_kafka import create_topic

TIMEOUT = 30


def txn_producer(broker, txn_id, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "transactional.id": txn_id,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(TIMEOUT)
    return p


class Restarting:
    """A broker a test restarts on its directory: `b` is the one running."""

    def __init__(self, start):
        self.start = start
        self.b = start()

    def restart(self, kill):
        """kill -9 (or, without `kill`, stop) and start again."""
        if kill:
            self.b.kill()
        else:
            self.b.stop()
        self.b = self.start()
        return self.b


@contextlib.contextmanager
def restarting(start):
    """`start()` starts the broker. At the end the broker then running is
    stopped and must have logged no ERROR line; its log tail is printed
    when anything fails, and it is killed in any case."""
    r = Restarting(start)
    try:
        yield r
        r.b.stop()
        errors = r.b.error_lines()
        assert not errors, "broker logged ERROR lines:\n" + "\n".join(errors)
    except BaseException:
        print(r.b.log_tail())
        raise
    finally:
        r.b.kill()


def open_txn(p, topic, value):
    """Begins a transaction and sends one record in it (not committed)."""
    p.begin_transaction()
    p.produce(topic, value)
    assert p.flush(TIMEOUT) == 0


def read_all(broker, topic, partitions, isolation, expect=None, group=None, timeout=TIMEOUT):
    """Values of `topic` read from the start with `isolation`, until
    `expect` values arrived (or, without it, until the end offsets seen
    when reading starts are reached)."""
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "group.id": group or f"reader-{uuid.uuid4().hex[:8]}",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        tps = [TopicPartition(topic, p, 0) for p in range(partitions)]
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), TIMEOUT)[1] for p in range(partitions)}
        c.assign(tps)
        out = []
        positions = {p: 0 for p in range(partitions)}
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m.value().decode())
                positions[m.partition()] = m.offset() + 1
            if expect is not None and len(out) >= expect:
                break
            if expect is None:
                done = all(
                    c.position([TopicPartition(topic, p)])[0].offset >= ends[p] or ends[p] == 0
                    for p in range(partitions)
                )
                if done and m is None:
                    break
        return out
    finally:
        c.close()


def test_commit_and_abort_with_read_committed_and_uncommitted(broker, topic_name):
    topic = topic_name("txn")
    create_topic(broker, topic, 3)
    p = txn_producer(broker, f"tx-{uuid.uuid4().hex[:6]}")
    committed, aborted = [], []
    for round_ in range(4):
        p.begin_transaction()
        values = [f"r{round_}-{i}" for i in range(30)]
        for i, v in enumerate(values):
            p.produce(topic, v.encode(), partition=i % 3)
        if round_ % 2 == 0:
            p.commit_transaction(TIMEOUT)
            committed += values
        else:
            # Sent first: an abort drops what the client still holds.
            p.flush(TIMEOUT)
            p.abort_transaction(TIMEOUT)
            aborted += values
    # A last open transaction holds the LSO: read_committed stops before it.
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, f"open-{i}".encode(), partition=i % 3)
    p.flush(TIMEOUT)

    got = read_all(broker, topic, 3, "read_committed", expect=len(committed))
    time.sleep(1)
    got += read_all(broker, topic, 3, "read_committed", timeout=3)[len(got):]
    assert sorted(got) == sorted(committed), "read_committed sees exactly the committed records"

    p.commit_transaction(TIMEOUT)
    everything = read_all(broker, topic, 3, "read_uncommitted", expect=len(committed) + len(aborted) + 5)
    assert sorted(everything) == sorted(committed + aborted + [f"open-{i}" for i in range(5)])
    got = read_all(broker, topic, 3, "read_committed", expect=len(committed) + 5)
    assert sorted(got) == sorted(committed + [f"open-{i}" for i in range(5)])
    # Three commits and two aborts, markers written.
    assert metric(broker, "strata_txn_commits_total") == 3
    assert metric(broker, "strata_txn_aborts_total") == 2
    assert metric(broker, "strata_txn_ongoing") == 0
    assert metric(broker, "strata_txn_coordinator_load_seconds_count") >= 1


def txn_cli(broker, *args):
    """`strata txn ...` against `broker`; its JSON."""
    out = subprocess.run(
        [strata_bin(), "txn", *args, "--output", "json", "--bootstrap", broker.bootstrap],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_second_producer_fences_the_first_and_aborts_its_transaction(broker, topic_name):
    topic = topic_name("fence")
    create_topic(broker, topic, 1)
    txn_id = f"fence-{uuid.uuid4().hex[:6]}"
    old = txn_producer(broker, txn_id)
    open_txn(old, topic, b"zombie")
    new = txn_producer(broker, txn_id)
    open_txn(new, topic, b"fresh")
    # `strata txn` shows the new producer's open transaction.
    listed = txn_cli(broker, "list")
    mine = [t for t in listed if t["transactional_id"] == txn_id]
    assert len(mine) == 1 and mine[0]["state"] == "Ongoing", listed
    described = txn_cli(broker, "describe", txn_id)
    assert described["state"] == "Ongoing"
    assert described["producer_epoch"] == 2, "init, the fencing abort, the new init"
    assert described["partitions"] == [f"{topic}-0"]
    new.commit_transaction(TIMEOUT)
    with pytest.raises(KafkaException) as e:
        old.produce(topic, b"late")
        old.commit_transaction(TIMEOUT)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower(), str(e.value)
    assert read_all(broker, topic, 1, "read_committed", expect=1) == ["fresh"]
    assert sorted(read_all(broker, topic, 1, "read_uncommitted", expect=2)) == ["fresh", "zombie"]


@pytest.fixture
def quick_timeouts(tmp_path):
    yield from serving(Broker(tmp_path, ["--transaction-abort-check-interval-ms", "200"]).start())


def test_a_lapsed_transaction_is_aborted_and_the_lso_moves_on(quick_timeouts, topic_name):
    broker = quick_timeouts
    topic = topic_name("lapse")
    create_topic(broker, topic, 1)
    p = txn_producer(broker, f"lapse-{uuid.uuid4().hex[:6]}", **{"transaction.timeout.ms": 2000, "message.timeout.ms": 2000})
    open_txn(p, topic, b"abandoned")
    # Another producer's committed record lands after the abandoned one.
    q = txn_producer(broker, f"other-{uuid.uuid4().hex[:6]}")
    q.begin_transaction()
    q.produce(topic, b"kept")
    q.commit_transaction(TIMEOUT)
    got = read_all(broker, topic, 1, "read_committed", expect=1, timeout=TIMEOUT)
    assert got == ["kept"], "the coordinator aborted the lapsed transaction"
    assert "aborting a transaction past its timeout" in broker.logs()
    assert metric(broker, "strata_txn_timed_out_total") == 1


def test_consume_transform_produce_is_exactly_once_across_kill9(tmp_path, topic_name):
    """Each cycle commits two transactions of 50 records (output records and
    input offsets together), then sends a third and kill -9s the broker
    before it commits. After every restart a new processor with the same
    transactional id fences the old one and goes on from the committed
    offsets. In the end the output holds every input record exactly once."""
    with restarting(lambda: Broker(tmp_path).start().wait_ready()) as r:
        b = r.b
        src, dst = topic_name("in"), topic_name("out")
        create_topic(b, src, 3)
        create_topic(b, dst, 3)
        total = 1500
        feed = Producer({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4",
                         "enable.idempotence": True, "linger.ms": 5})
        for i in range(total):
            feed.produce(src, str(i).encode(), partition=i % 3)
        assert feed.flush(TIMEOUT) == 0
        group, txn_id = f"ctp-{uuid.uuid4().hex[:6]}", f"ctp-{uuid.uuid4().hex[:6]}"
        crashes = 0
        finished = False
        while not finished:
            c = Consumer({
                "bootstrap.servers": b.bootstrap, "broker.address.family": "v4",
                "group.id": group, "isolation.level": "read_committed",
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
            })
            tps = [TopicPartition(src, p) for p in range(3)]
            start = c.committed(tps, TIMEOUT)
            c.assign([TopicPartition(src, t.partition, max(t.offset, 0)) for t in start])
            p = txn_producer(b, txn_id)
            for step in range(3):
                p.begin_transaction()
                got = []
                deadline = time.time() + 5
                while len(got) < 50 and time.time() < deadline:
                    m = c.poll(0.2)
                    if m is not None and m.error() is None:
                        got.append(m)
                for m in got:
                    p.produce(dst, b"out-" + m.value(), partition=m.partition())
                if step == 2 and got:
                    # The third transaction is sent, not committed: crash.
                    assert p.flush(TIMEOUT) == 0
                    break
                positions = c.position(c.assignment())
                p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), TIMEOUT)
                p.commit_transaction(TIMEOUT)
                if not got:
                    finished = True
                    break
            c.close()
            if finished:
                break
            crashes += 1
            b = r.restart(kill=True)
            del p
        assert crashes >= 10, f"only {crashes} crashes"
        out = read_all(b, dst, 3, "read_committed", expect=total)
        values = sorted(int(v.removeprefix("out-")) for v in out)
        duplicates = len(values) - len(set(values))
        lost = total - len(set(values))
        assert (duplicates, lost) == (0, 0), f"duplicates={duplicates}, lost={lost}"


def java_hash(s):
    h = 0
    for ch in s:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def test_transactions_on_a_cluster_through_coordinator_kills(cluster):
    """Three brokers, a topic of 6 partitions with 3 replicas (leaders on
    every broker, so markers go to other brokers with WriteTxnMarkers and
    produces are verified with a remote coordinator). Mid-transaction the
    broker that coordinates the transactional id is killed (kill -9) and
    restarted; the transaction then commits or aborts with the next
    coordinator. read_committed readers see exactly the committed records."""
    from confluent_kafka.admin import AdminClient, NewTopic
    from test_cluster import TIMEOUT as CLUSTER_TIMEOUT, conf, full, wait_until

    brokers = cluster
    topic = "txn-cluster"
    admin = AdminClient(conf(brokers))
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=3)],
                        operation_timeout=CLUSTER_TIMEOUT)[topic].result(CLUSTER_TIMEOUT)
    wait_until(brokers, topic, "every partition led, ISR full",
               lambda m: len(m) == 6 and all(l > 0 and isr == [1, 2, 3] for l, isr in m.values()))
    txn_id = f"cluster-{uuid.uuid4().hex[:6]}"
    p = Producer(conf(brokers, **{"transactional.id": txn_id, "linger.ms": 5,
                                  "message.timeout.ms": 120000,
                                  "transaction.timeout.ms": 120000}))
    p.init_transactions(CLUSTER_TIMEOUT)
    committed, aborted, kills = [], [], 0
    for t in range(8):
        values = [f"t{t}-{i}" for i in range(60)]
        p.begin_transaction()
        for i, v in enumerate(values):
            p.produce(topic, v.encode(), partition=i % 6)
        assert p.flush(CLUSTER_TIMEOUT) == 0
        if t % 2 == 1:
            state = AdminClient(conf(brokers)).list_topics("__transaction_state", timeout=10)
            parts = state.topics["__transaction_state"].partitions
            index = abs(java_hash(txn_id)) % len(parts)
            leader = parts[index].leader
            victim = brokers[leader - 1]
            victim.kill()
            kills += 1
            victim.start()
        while True:
            try:
                if t % 3 == 2:
                    p.abort_transaction(CLUSTER_TIMEOUT)
                    aborted += values
                else:
                    p.commit_transaction(CLUSTER_TIMEOUT)
                    committed += values
                break
            except KafkaException as e:
                err = e.args[0]
                if err.retriable():
                    continue
                if err.txn_requires_abort():
                    p.abort_transaction(CLUSTER_TIMEOUT)
                    aborted += values
                    break
                raise
        wait_until(brokers, topic, "every partition led, ISR full",
                   lambda m: len(m) == 6 and all(l > 0 and isr == [1, 2, 3] for l, isr in m.values()))
    assert kills == 4
    assert committed, "some transactions committed"

    class Reader:
        bootstrap = ",".join(b.listen for b in brokers)

    got = read_all(Reader, topic, 6, "read_committed", expect=len(committed), timeout=CLUSTER_TIMEOUT)
    time.sleep(1)
    assert sorted(got) == sorted(committed)
    everything = read_all(Reader, topic, 6, "read_uncommitted",
                          expect=len(committed) + len(aborted), timeout=CLUSTER_TIMEOUT)
    assert set(everything) >= set(committed)


def test_read_committed_from_the_tier_after_local_deletion_and_restart(tmp_path, topic_name):
    """Aborted and committed transactions on small segments that go to a
    file:// tier and leave the local disk: each segment with an ABORT
    marker carries its .txnindex object, and after a restart (nothing of
    those segments left locally) a read_committed reader replaying from
    offset 0 through the tier sees exactly the committed records."""
    tier = tmp_path / "tier"
    args = ["--tier-url", f"file://{tier}", "--tier-interval-ms", "200",
            "--log-retention-check-interval-ms", "200"]
    with restarting(lambda: Broker(tmp_path / "b", args).start().wait_ready()) as r:
        b = r.b
        topic = topic_name("txn-tier")
        create_topic(b, topic, 2, config={"segment.bytes": "4096", "local.retention.bytes": "1"})
        p = txn_producer(b, f"tier-{uuid.uuid4().hex[:6]}")
        committed = []
        for t in range(12):
            values = [f"t{t}-{i}-" + "x" * 200 for i in range(20)]
            p.begin_transaction()
            for i, v in enumerate(values):
                p.produce(topic, v.encode(), partition=i % 2)
            assert p.flush(TIMEOUT) == 0
            if t % 3 == 1:
                p.abort_transaction(TIMEOUT)
            else:
                p.commit_transaction(TIMEOUT)
                committed += values
        # A plain record after the last marker, so the segment holding it
        # can seal and go too.
        plain = Producer({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4"})
        for i in range(40):
            plain.produce(topic, ("tail-" + "y" * 200).encode(), partition=i % 2)
        plain.flush(TIMEOUT)
        committed += ["tail-" + "y" * 200] * 40
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            indexes = list(tier.rglob("*.txnindex"))
            if len(indexes) >= 2:
                break
            time.sleep(0.2)
        assert len(indexes) >= 2, f"txnindex objects in the tier: {indexes}"
        # Local retention took the tiered segments off the disk.
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            local = list((b.data_dir / f"{topic}-0").glob("*.log"))
            if len(local) <= 2:
                break
            time.sleep(0.2)
        assert len(local) <= 2, f"local segments left: {local}"
        assert len(list(tier.rglob("*.log"))) > 4
        b = r.restart(kill=False)
        got = read_all(b, topic, 2, "read_committed", expect=len(committed))
        time.sleep(1)
        assert sorted(got) == sorted(committed)


def test_an_idle_transactional_id_expires(tmp_path, topic_name):
    """transactional.id.expiration.ms: an id without a transaction for that
    long is forgotten (a tombstone in __transaction_state); one with an
    open transaction is not."""
    args = ["--transactional-id-expiration-ms", "1500", "--transaction-abort-check-interval-ms", "200"]
    for b in serving(Broker(tmp_path, args).start()):
        topic = topic_name("expire")
        create_topic(b, topic, 1)
        idle, busy = f"idle-{uuid.uuid4().hex[:6]}", f"busy-{uuid.uuid4().hex[:6]}"
        p = txn_producer(b, idle)
        p.begin_transaction()
        p.produce(topic, b"done")
        p.commit_transaction(TIMEOUT)
        q = txn_producer(b, busy)
        open_txn(q, topic, b"open")
        deadline = time.time() + TIMEOUT
        ids = None
        while time.time() < deadline:
            ids = {t["transactional_id"] for t in txn_cli(b, "list")}
            if idle not in ids:
                break
            time.sleep(0.2)
        assert idle not in ids and busy in ids, ids
        out = subprocess.run([strata_bin(), "txn", "describe", idle, "--bootstrap", b.bootstrap],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "transactional_id" in out.stderr, out.stderr
        q.commit_transaction(TIMEOUT)
