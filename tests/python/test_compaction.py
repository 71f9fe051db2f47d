"""Log compaction with confluent-kafka (librdkafka): a compacted topic
reads back one record per live key with its last value, tombstoned keys
disappear after delete.retention.ms, keyless records are refused, and a
group's committed offsets survive compaction of __consumer_offsets and a
restart.
"""

import re
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from conftest import Broker, serving

TIMEOUT = 30
KEYS = 1000
UPDATES = 1_000_000
FAST_CLEANER = [
    "--log-cleaner-backoff-ms", "200",
    "--log-retention-check-interval-ms", "200",
    "--group-initial-rebalance-delay-ms", "0",
]


@pytest.fixture
def cbroker(tmp_path):
    yield from serving(Broker(tmp_path, FAST_CLEANER).start())


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4"})


def metrics(b):
    with urllib.request.urlopen(f"http://{b.admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(b, name, **labels):
    """The sum of metric `name` over the samples with `labels`."""
    total = None
    for line in metrics(b).splitlines():
        m = re.match(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if any(have.get(k) != v for k, v in labels.items()):
            continue
        total = (total or 0.0) + float(m.group(3))
    return total


def create_compacted(b, topic, **extra):
    configs = {
        "cleanup.policy": "compact",
        "segment.bytes": "262144",
        "segment.ms": "1000",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "1000",
        **extra,
    }
    a = admin(b)
    a.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(TIMEOUT)


def producer(b):
    return Producer({
        "bootstrap.servers": b.bootstrap,
        "broker.address.family": "v4",
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
    })


def produce(p, topic, records):
    failures = []

    def report(err, _msg):
        if err is not None:
            failures.append(err)

    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0
    assert not failures, failures[:5]


def read_all(b, topic):
    """Every record of partition 0 from offset 0 to the high watermark."""
    c = Consumer({
        "bootstrap.servers": b.bootstrap,
        "broker.address.family": "v4",
        "group.id": "reader",
        "enable.auto.commit": False,
    })
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.time() + 120
        while time.time() < deadline:
            msgs = c.consume(10_000, 1.0)
            for m in msgs:
                assert m.error() is None, m.error()
                out.append((m.offset(), m.key(), m.value()))
            position = c.position([TopicPartition(topic, 0)])[0].offset
            if position >= high or (out and out[-1][0] >= high - 1):
                return out
        raise AssertionError(f"read {len(out)} records, not up to {high}")
    finally:
        c.close()


def wait_compacted(b, topic, expect, timeout=180):
    """Reads the topic until it holds exactly `expect` (key -> value), one
    record per key, in offset order; returns the records."""
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        size = metric(b, "strata_partition_log_size_bytes", topic=topic, partition="0")
        # Read only once the log is small: reading a million records
        # each round would be slow.
        if size is not None and size < 400_000:
            recs = read_all(b, topic)
            seen = len(recs)
            offsets = [o for o, _, _ in recs]
            assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
            got = {}
            for _, k, v in recs:
                got[k] = v
            if len(recs) == len(expect) and got == expect:
                return recs
        time.sleep(0.5)
    raise AssertionError(f"not compacted within {timeout}s: last read {seen} records, "
                         f"size {metric(b, 'strata_partition_log_size_bytes', topic=topic)}")


def test_compacted_topic_keeps_the_last_value_of_each_key(cbroker, topic_name):
    b = cbroker
    topic = topic_name("compacted")
    create_compacted(b, topic)
    p = producer(b)
    produce(p, topic, ((f"k{i % KEYS:04}".encode(), f"v{i}".encode()) for i in range(UPDATES)))
    last = {f"k{k:04}".encode(): f"v{UPDATES - KEYS + k}".encode() for k in range(KEYS)}
    recs = wait_compacted(b, topic, last)
    # The offsets are those the last values were written at.
    assert [o for o, _, _ in recs] == list(range(UPDATES - KEYS, UPDATES))
    assert metric(b, "strata_log_cleaner_passes_total") > 0
    assert metric(b, "strata_log_cleaner_written_bytes_total") > 0

    # Tombstones for a tenth of the keys: once the cleaner has seen them
    # and delete.retention.ms has passed, the keys are gone altogether.
    produce(p, topic, ((f"k{k:04}".encode(), None) for k in range(0, KEYS, 10)))
    live = {k: v for k, v in last.items() if int(k[1:]) % 10 != 0}
    deadline = time.time() + 180
    n = 0
    while True:
        # Keep something dirty so passes go on after the tombstones age.
        produce(p, topic, [(b"k0001", f"again{n}".encode())])
        live[b"k0001"] = f"again{n}".encode()
        n += 1
        recs = read_all(b, topic)
        # k0001 is rewritten each round: its newest records may not be
        # cleaned yet. Every other key appears once.
        others = [k for _, k, _ in recs if k != b"k0001"]
        if len(others) == len(live) - 1 and {k: v for _, k, v in recs} == live:
            break
        assert time.time() < deadline, (
            f"{len(recs)} records, {sum(1 for _, _, v in recs if v is None)} tombstones; "
            f"want {len(live)} live keys; duplicates {len(others) - len(set(others))}")
        time.sleep(1)


def test_keyless_records_are_refused(cbroker, topic_name):
    b = cbroker
    topic = topic_name("compacted-keyless")
    create_compacted(b, topic)
    p = producer(b)
    errors = []
    p.produce(topic, value=b"no key", on_delivery=lambda err, _m: errors.append(err))
    p.flush(TIMEOUT)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]


def test_committed_offsets_survive_offsets_topic_compaction_and_restart(cbroker, topic_name):
    b = cbroker
    topic = topic_name("offsets-src")
    a = admin(b)
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(TIMEOUT)
    group = topic_name("compacting-group")
    conf = {
        "bootstrap.servers": b.bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "enable.auto.commit": False,
    }
    c = Consumer(conf)
    c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    # Small segments for the offsets topic, and an eager cleaner.
    res = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets", incremental_configs=[
        ConfigEntry("segment.bytes", "4096", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([res])[res].result(TIMEOUT)
    for i in range(2, 3000):
        c.commit(offsets=[TopicPartition(topic, 0, i)], asynchronous=False)
    c.close()
    deadline = time.time() + 120
    while (metric(b, "strata_log_cleaner_passes_total") or 0) < 1:
        assert time.time() < deadline, "the offsets topic was never cleaned"
        time.sleep(0.2)
    size = metric(b, "strata_partition_log_size_bytes", topic="__consumer_offsets")
    assert size < 3000 * 60, size
    b.stop()
    b.start()
    c = Consumer({**conf, "bootstrap.servers": b.bootstrap})
    try:
        deadline = time.time() + TIMEOUT
        while True:
            got = c.committed([TopicPartition(topic, 0)], timeout=TIMEOUT)[0]
            if got.error is None and got.offset == 2999:
                break
            assert time.time() < deadline, f"committed offset after restart: {got}"
            time.sleep(0.2)
    finally:
        c.close()


def test_a_compacted_topic_whose_history_is_only_in_the_tier_is_compacted_there(
        tmp_path, topic_name):
    """1M updates of 1,000 keys to a compacted topic that tiers to file://
    with a small local retention: tier compaction leaves the bucket holding
    a fraction of what was uploaded, a consumer from offset 0 reads one
    record per key with its last value at its offset, and a fresh broker
    restoring the topic from the bucket reads the same."""
    tier = f"file://{tmp_path / 'tier'}"
    args = FAST_CLEANER + ["--tier-url", tier, "--tier-interval-ms", "200",
                           "--tier-orphan-grace-ms", "1000"]
    topic = topic_name("tiercompacted")
    last = {f"k{k:04}".encode(): f"v{UPDATES - KEYS + k}".encode() for k in range(KEYS)}
    for b in serving(Broker(tmp_path / "first", args).start()):
        create_compacted(b, topic, **{"remote.storage.enable": "true",
                                      "local.retention.bytes": "262144"})
        produce(producer(b), topic,
                ((f"k{i % KEYS:04}".encode(), f"v{i}".encode()) for i in range(UPDATES)))
        recs = wait_compacted(b, topic, last)
        assert [o for o, _, _ in recs] == list(range(UPDATES - KEYS, UPDATES))
        assert metric(b, "strata_tier_compaction_passes_total") > 0
        uploaded = metric(b, "strata_tier_bytes_uploaded_total")
        deadline = time.time() + 60
        while True:
            in_tier = metric(b, "strata_tier_partition_bytes", topic=topic, partition="0")
            if in_tier is not None and in_tier < uploaded / 10:
                break
            assert time.time() < deadline, f"tier holds {in_tier} of {uploaded} bytes uploaded"
            time.sleep(0.5)
    for b in serving(Broker(tmp_path / "second", args).start()):
        a = admin(b)
        a.create_topics([NewTopic(topic, 1, 1, config={
            "strata.restore": "true", "strata.tier.takeover": "true"})])[topic].result(TIMEOUT)
        restored = read_all(b, topic)
        assert {k: v for _, k, v in restored} == last
        assert [o for o, _, _ in restored] == list(range(UPDATES - KEYS, UPDATES))
