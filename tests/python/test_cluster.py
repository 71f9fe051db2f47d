"""confluent-kafka against a cluster of three strata processes with
replicated partitions.

The ledger: an idempotent acks=all producer writes numbered records while
the leader of partition 0 is killed with SIGKILL and restarted, cycle
after cycle. Every acknowledged record is read back once, at the offset
it was given, in order per partition.
"""

import random
import socket
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker

TIMEOUT = 60
CYCLES = 6


def free_addr():
    """A free loopback port below the kernel's ephemeral range: a port the
    kernel hands out for a bind to port 0 could go to another listener
    (a broker's own admin listener on :0) before this one is bound."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    while True:
        port = random.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return f"127.0.0.1:{port}"


@pytest.fixture
def cluster(tmp_path):
    controllers = [free_addr() for _ in range(3)]
    voters = ",".join(f"{i + 1}@{a}" for i, a in enumerate(controllers))
    brokers = []
    for i in range(3):
        work = tmp_path / f"broker-{i + 1}"
        work.mkdir()
        brokers.append(Broker(work, extra_args=[
            "--node-id", str(i + 1),
            "--controller-listen", controllers[i],
            "--controller-quorum-voters", voters,
            "--broker-session-timeout-ms", "2000",
        ], listen=free_addr()))
    try:
        for b in brokers:
            b.start()
        for b in brokers:
            b.wait_ready()
        yield brokers
        # Stopped as the Rust cluster tests stop theirs: a broker stopped
        # last has no quorum left to hand its partitions to.
        for b in brokers:
            b.kill()
        errors = [line for b in brokers for line in b.error_lines()]
        assert not errors, "brokers logged ERROR lines:\n" + "\n".join(errors)
    except BaseException:
        for b in brokers:
            print(b.log_tail(30))
        raise
    finally:
        for b in brokers:
            b.kill()


def conf(brokers, **extra):
    c = {
        "bootstrap.servers": ",".join(b.listen for b in brokers),
        "broker.address.family": "v4",
    }
    c.update(extra)
    return c


def leaders_and_isr(brokers, topic):
    """Partition -> (leader, sorted ISR), as the cluster describes it."""
    md = AdminClient(conf(brokers)).list_topics(topic, timeout=10)
    t = md.topics[topic]
    return {p: (pm.leader, sorted(pm.isrs)) for p, pm in t.partitions.items()}


def wait_until(brokers, topic, what, check):
    deadline = time.time() + TIMEOUT
    now = None
    while time.time() < deadline:
        try:
            now = leaders_and_isr(brokers, topic)
            if now and check(now):
                return now
        except KafkaException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: {now}")


def full(m):
    return len(m) == 2 and all(l > 0 and isr == [1, 2, 3] for l, isr in m.values())


def test_confluent_kafka_ledger_through_leader_kills(cluster):
    brokers = cluster
    admin = AdminClient(conf(brokers))
    futures = admin.create_topics(
        [NewTopic("ledger", num_partitions=2, replication_factor=3)],
        operation_timeout=TIMEOUT,
    )
    futures["ledger"].result(TIMEOUT)
    wait_until(brokers, "ledger", "every partition led, ISR full", full)

    acked, failed = [], []
    stop = threading.Event()

    def write():
        p = Producer(conf(
            brokers,
            **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
               "message.timeout.ms": 120000},
        ))

        def report(err, msg):
            if err is None:
                acked.append((msg.partition(), msg.offset(), msg.value().decode()))
            else:
                failed.append(str(err))

        n = 0
        while not stop.is_set():
            for _ in range(50):
                n += 1
                p.produce("ledger", value=f"ledger-{n:07d}", partition=n % 2, on_delivery=report)
            p.flush(130)
        p.flush(130)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for cycle in range(CYCLES):
            time.sleep(0.7)
            leader = leaders_and_isr(brokers, "ledger")[0][0]
            if leader <= 0:
                continue
            b = brokers[leader - 1]
            b.kill()
            if cycle % 2 == 1:
                wait_until(brokers, "ledger", "a new leader",
                           lambda m: m[0][0] > 0 and m[0][0] != leader)
            b.start()
            b.wait_ready()
            wait_until(brokers, "ledger", "every ISR full again", full)
    finally:
        stop.set()
        writer.join(300)

    want = {p: max((o + 1 for q, o, _ in acked if q == p), default=0) for p in (0, 1)}
    c = Consumer(conf(brokers, **{"group.id": "ledger-check", "enable.auto.commit": False}))
    end = {}
    deadline = time.time() + TIMEOUT
    for p in (0, 1):
        while True:
            _, high = c.get_watermark_offsets(TopicPartition("ledger", p), timeout=10)
            if high >= want[p] or time.time() > deadline:
                end[p] = high
                break
            time.sleep(0.2)
    c.assign([TopicPartition("ledger", p, 0) for p in (0, 1)])
    read = {}
    nxt = {0: 0, 1: 0}
    deadline = time.time() + TIMEOUT
    while any(nxt[p] < end[p] for p in (0, 1)) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        p, o = m.partition(), m.offset()
        if o >= end[p]:
            continue
        assert (p, o) not in read, f"offset {p}@{o} read twice"
        read[(p, o)] = m.value().decode()
        nxt[p] = o + 1
    c.close()

    lost = [(p, o, v) for p, o, v in acked if read.get((p, o)) != v]
    values = list(read.values())
    duplicated = len(values) - len(set(values))
    for p in (0, 1):
        numbers = [v for (q, _), v in sorted(read.items()) if q == p]
        assert numbers == sorted(numbers), f"partition {p} out of order"
    print(f"confluent-kafka ledger: {CYCLES} leader kills, {len(acked)} acknowledged, "
          f"{len(failed)} not, {len(read)} read, {len(lost)} lost, {duplicated} duplicated")
    assert not lost, f"{len(lost)} acknowledged records lost, first {lost[:5]}"
    assert duplicated == 0


def test_confluent_kafka_elect_leaders_moves_leaders_back(cluster):
    """A broker stopped and started again leads nothing (its leaderships
    went to other replicas); ElectLeaders (preferred) gives them back to
    the first replica of each partition, and answers ELECTION_NOT_NEEDED
    where it already leads."""
    from confluent_kafka import ElectionType, KafkaError

    brokers = cluster
    admin = AdminClient(conf(brokers))
    admin.create_topics(
        [NewTopic("prefer", num_partitions=6, replication_factor=3)],
        operation_timeout=TIMEOUT,
    )["prefer"].result(TIMEOUT)
    full6 = lambda m: len(m) == 6 and all(l > 0 and isr == [1, 2, 3] for l, isr in m.values())
    wait_until(brokers, "prefer", "every partition led, ISR full", full6)
    md = admin.list_topics("prefer", timeout=10).topics["prefer"]
    preferred = {p: pm.replicas[0] for p, pm in md.partitions.items()}
    assert sorted(set(preferred.values())) == [1, 2, 3]

    brokers[0].stop()
    wait_until(brokers, "prefer", "broker 1 leads nothing",
               lambda m: all(l not in (-1, 1) for l, _ in m.values()))
    brokers[0].start()
    brokers[0].wait_ready()
    wait_until(brokers, "prefer", "every ISR full again", full6)
    moved = [p for p, (l, _) in leaders_and_isr(brokers, "prefer").items() if l != preferred[p]]
    assert moved, "broker 1 got its leaderships back by itself"

    admin = AdminClient(conf(brokers))
    asked = [TopicPartition("prefer", p) for p in range(6)]
    result = admin.elect_leaders(ElectionType.PREFERRED, asked).result(TIMEOUT)
    for tp, err in result.items():
        if tp.partition in moved:
            assert err is None, f"{tp}: {err}"
        else:
            assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED, f"{tp}: {err}"
    wait_until(brokers, "prefer", "every partition led by its preferred replica",
               lambda m: all(l == preferred[p] for p, (l, _) in m.items()))
