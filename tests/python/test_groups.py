"""Consumer groups with confluent-kafka (librdkafka): membership, commits,
a member killed with SIGKILL, and the admin group APIs.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, serving

TIMEOUT = 30
# No initial rebalance delay and short sessions: fast tests.
FAST_GROUPS = [
    "--group-initial-rebalance-delay-ms", "0",
    "--group-min-session-timeout-ms", "1000",
]


@pytest.fixture
def gbroker(tmp_path):
    b = Broker(tmp_path, FAST_GROUPS).start()
    yield from serving(b)


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"})


def create_topic(broker, topic, partitions):
    a = admin(broker)
    a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                    operation_timeout=TIMEOUT)[topic].result(TIMEOUT)
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        t = a.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} not visible")


def produce(broker, topic, partitions, n, tag):
    p = Producer({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4", "linger.ms": 5})
    landed = []

    def report(err, msg):
        assert err is None, err
        landed.append((msg.partition(), msg.offset()))

    for i in range(n):
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=i % partitions, on_delivery=report)
    assert p.flush(TIMEOUT) == 0
    return landed


def group_conf(broker, group, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 20000,
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return conf


class Member:
    """A consumer polled by a thread; records assignment and records."""

    def __init__(self, broker, group, topic, **extra):
        self.assignment = set()
        self.consumed = []
        self.errors = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        conf = group_conf(broker, group, **extra)
        self.thread = threading.Thread(target=self._run, args=(conf, topic), daemon=True)
        self.thread.start()

    def _run(self, conf, topic):
        c = Consumer(conf)

        def on_assign(consumer, parts):
            with self.lock:
                self.assignment = {p.partition for p in parts}

        def on_revoke(consumer, parts):
            try:
                consumer.commit(asynchronous=False)
            except Exception:  # nothing consumed yet
                pass
            with self.lock:
                self.assignment = set()

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        while not self.stop.is_set():
            m = c.poll(0.1)
            if m is None:
                continue
            if m.error():
                self.errors.append(m.error())
                continue
            with self.lock:
                self.consumed.append((m.partition(), m.offset()))
            c.commit(message=m, asynchronous=True)
        c.close()

    def snapshot(self):
        with self.lock:
            return set(self.assignment), list(self.consumed)

    def close(self):
        self.stop.set()
        self.thread.join(TIMEOUT)


def wait_until(what, cond, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def split(assignments, partitions):
    union = set()
    total = 0
    for a in assignments:
        if not a:
            return False
        union |= a
        total += len(a)
    return total == partitions and len(union) == partitions


CHILD = r"""
import sys
from confluent_kafka import Consumer
conf = dict(arg.split("=", 1) for arg in sys.argv[2:])
conf["enable.auto.commit"] = False
topic = sys.argv[1]
c = Consumer(conf)
def on_assign(consumer, parts):
    print("A " + ",".join(str(p.partition) for p in parts), flush=True)
c.subscribe([topic], on_assign=on_assign)
while True:
    m = c.poll(0.1)
    if m is None or m.error():
        continue
    print(f"C {m.partition()} {m.offset()}", flush=True)
    c.commit(message=m, asynchronous=False)
    print(f"K {m.partition()} {m.offset() + 1}", flush=True)
"""


def test_group_member_killed_with_sigkill_loses_nothing(gbroker):
    topic, group = name("pg-crash"), name("pg-crash-group")
    create_topic(gbroker, topic, 6)
    conf = group_conf(gbroker, group)
    args = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in conf.items()]
    child = subprocess.Popen([sys.executable, "-c", CHILD, topic, *args],
                             stdout=subprocess.PIPE, text=True)
    seen = {"assignment": set(), "consumed": [], "committed": {}}

    def read():
        for line in child.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "A":
                seen["assignment"] = {int(p) for p in rest.split(",") if p}
            elif kind == "C":
                p, o = rest.split()
                seen["consumed"].append((int(p), int(o)))
            elif kind == "K":
                p, o = rest.split()
                seen["committed"][int(p)] = int(o)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    b = Member(gbroker, group, topic)
    try:
        wait_until("the child and b to split 6 partitions",
                   lambda: split([seen["assignment"], b.snapshot()[0]], 6))
        produced = produce(gbroker, topic, 6, 120, "before")
        wait_until("records consumed",
                   lambda: set(produced) <= set(seen["consumed"]) | set(b.snapshot()[1]))
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT)
        reader.join(TIMEOUT)
        produced += produce(gbroker, topic, 6, 120, "after")
        # After the child's session times out, b owns everything.
        wait_until("b to own all 6 partitions", lambda: b.snapshot()[0] == set(range(6)))
        wait_until("every record consumed",
                   lambda: set(produced) <= set(seen["consumed"]) | set(b.snapshot()[1]))
        # Re-reads only past the child's last commit.
        child_read = set(seen["consumed"])
        for p, o in set(b.snapshot()[1]) & child_read:
            assert o >= seen["committed"].get(p, 0), f"{p}/{o} was committed by the child"
        assert not b.errors, b.errors
    finally:
        if child.poll() is None:
            child.kill()
        b.close()


def test_group_admin_apis(gbroker):
    topic, group = name("pg-admin"), name("pg-admin-group")
    create_topic(gbroker, topic, 2)
    produce(gbroker, topic, 2, 20, "x")
    m = Member(gbroker, group, topic)
    try:
        wait_until("consumption", lambda: len(m.snapshot()[1]) == 20)
        a = admin(gbroker)
        listed = a.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
        ids = {g.group_id: g for g in listed.valid}
        assert group in ids
        assert ids[group].state == ConsumerGroupState.STABLE
        stable = a.list_consumer_groups(states={ConsumerGroupState.EMPTY},
                                         request_timeout=TIMEOUT).result(TIMEOUT)
        assert group not in {g.group_id for g in stable.valid}
        desc = a.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result(TIMEOUT)
        assert desc.state == ConsumerGroupState.STABLE
        assert len(desc.members) == 1
        assigned = {tp.partition for tp in desc.members[0].assignment.topic_partitions}
        assert assigned == {0, 1}
        # Deleting a group with members is refused.
        fut = a.delete_consumer_groups([group], request_timeout=TIMEOUT)[group]
        with pytest.raises(Exception) as err:
            fut.result(TIMEOUT)
        assert "NON_EMPTY_GROUP" in str(err.value) or "not empty" in str(err.value).lower()
    finally:
        m.close()
    a = admin(gbroker)
    wait_until("the group to be empty", lambda: a.describe_consumer_groups(
        [group], request_timeout=TIMEOUT)[group].result(TIMEOUT).state == ConsumerGroupState.EMPTY)
    offsets = a.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0), TopicPartition(topic, 1)])],
        request_timeout=TIMEOUT)[group].result(TIMEOUT)
    assert sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions) == [(0, 10), (1, 10)]
    # Reset partition 0 to 3, check it, then delete the group.
    a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 3)])],
        request_timeout=TIMEOUT)[group].result(TIMEOUT)
    offsets = a.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])],
        request_timeout=TIMEOUT)[group].result(TIMEOUT)
    assert offsets.topic_partitions[0].offset == 3
    a.delete_consumer_groups([group], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    listed = a.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
    assert group not in {g.group_id for g in listed.valid}


def test_group_commits_survive_a_broker_restart(tmp_path):
    b = Broker(tmp_path, FAST_GROUPS).start()
    try:
        topic, group = name("pg-restart"), name("pg-restart-group")
        create_topic(b, topic, 3)
        produce(b, topic, 3, 30, "one")
        c = Consumer(group_conf(b, group))
        c.subscribe([topic])
        got = []
        deadline = time.time() + TIMEOUT
        while len(got) < 30 and time.time() < deadline:
            m = c.poll(0.1)
            if m is not None and not m.error():
                got.append(m)
        assert len(got) == 30
        c.commit(offsets=[TopicPartition(topic, p, 10, metadata=f"m{p}") for p in range(3)],
                 asynchronous=False)
        c.close()
        b.stop()
        b.start()
        produce(b, topic, 3, 3, "two")
        c = Consumer(group_conf(b, group))
        committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=TIMEOUT)
        assert [(tp.partition, tp.offset, tp.metadata) for tp in committed] == \
            [(p, 10, f"m{p}") for p in range(3)]
        c.subscribe([topic])
        values = []
        deadline = time.time() + TIMEOUT
        while len(values) < 3 and time.time() < deadline:
            m = c.poll(0.1)
            if m is not None and not m.error():
                values.append(m.value())
        c.close()
        assert sorted(values) == [b"two-0", b"two-1", b"two-2"]
        b.stop()
        assert not b.error_lines(), b.error_lines()
    except BaseException:
        print(b.log_tail())
        raise
    finally:
        b.kill()
