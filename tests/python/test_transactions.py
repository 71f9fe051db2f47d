"""Transactions with confluent-kafka (librdkafka): transactional producers
that commit and abort, read_committed and read_uncommitted consumers,
fencing of a zombie producer, the coordinator's timeout, and
consume-transform-produce with send_offsets_to_transaction across kill -9.
"""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import Broker, serving
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


def test_a_second_producer_fences_the_first_and_aborts_its_transaction(broker, topic_name):
    topic = topic_name("fence")
    create_topic(broker, topic, 1)
    txn_id = f"fence-{uuid.uuid4().hex[:6]}"
    old = txn_producer(broker, txn_id)
    old.begin_transaction()
    old.produce(topic, b"zombie")
    old.flush(TIMEOUT)
    new = txn_producer(broker, txn_id)
    new.begin_transaction()
    new.produce(topic, b"fresh")
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
    p.begin_transaction()
    p.produce(topic, b"abandoned")
    p.flush(TIMEOUT)
    # Another producer's committed record lands after the abandoned one.
    q = txn_producer(broker, f"other-{uuid.uuid4().hex[:6]}")
    q.begin_transaction()
    q.produce(topic, b"kept")
    q.commit_transaction(TIMEOUT)
    got = read_all(broker, topic, 1, "read_committed", expect=1, timeout=TIMEOUT)
    assert got == ["kept"], "the coordinator aborted the lapsed transaction"
    assert "aborting a transaction past its timeout" in broker.logs()


def test_consume_transform_produce_is_exactly_once_across_kill9(tmp_path, topic_name):
    """Each cycle commits two transactions of 50 records (output records and
    input offsets together), then sends a third and kill -9s the broker
    before it commits. After every restart a new processor with the same
    transactional id fences the old one and goes on from the committed
    offsets. In the end the output holds every input record exactly once."""
    b = Broker(tmp_path).start()
    try:
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
            b.kill()
            crashes += 1
            b = Broker(tmp_path).start().wait_ready()
            del p
        assert crashes >= 10, f"only {crashes} crashes"
        out = read_all(b, dst, 3, "read_committed", expect=total)
        values = sorted(int(v.removeprefix("out-")) for v in out)
        duplicates = len(values) - len(set(values))
        lost = total - len(set(values))
        assert (duplicates, lost) == (0, 0), f"duplicates={duplicates}, lost={lost}"
        b.stop()
        errors = b.error_lines()
        assert not errors, "broker logged ERROR lines:\n" + "\n".join(errors)
    except BaseException:
        print(b.log_tail())
        raise
    finally:
        b.kill()
