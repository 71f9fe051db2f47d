"""confluent-kafka (PyPI, bundled librdkafka 2.16) against strata.

Consumers use assign() on explicit partitions and offsets: no consumer
groups are joined and nothing is committed.
"""

import time

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)

TIMEOUT = 30


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"})


def create_topic(broker, name, partitions, config=None):
    a = admin(broker)  # keep the client alive until its futures complete
    futures = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=TIMEOUT,
    )
    futures[name].result(TIMEOUT)
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        md = a.list_topics(name, timeout=TIMEOUT)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not visible with {partitions} partitions")


def producer(broker, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    }
    conf.update(extra)
    return Producer(conf)


def consumer(broker):
    return Consumer({
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "group.id": "strata-pytest",  # librdkafka needs one for assign()
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "check.crcs": True,
        "fetch.wait.max.ms": 100,
    })


def produce_all(p, topic, records):
    """records: dicts with key, value, headers, timestamp, partition (opt).
    Returns [(partition, offset)] in input order; fails on any error."""
    results = [None] * len(records)
    errors = []

    def cb_for(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                results[i] = (msg.partition(), msg.offset())
        return cb

    for i, r in enumerate(records):
        kwargs = dict(key=r.get("key"), value=r.get("value"), headers=r.get("headers"),
                      timestamp=r.get("timestamp", 0), on_delivery=cb_for(i))
        if r.get("partition") is not None:
            kwargs["partition"] = r["partition"]
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    return results


def consume(broker, topic, ranges, timeout=120):
    """ranges: [(partition, start, end)] -> list of messages."""
    c = consumer(broker)
    try:
        c.assign([TopicPartition(topic, p, start) for p, start, end in ranges if end > start])
        nxt = {p: start for p, start, end in ranges}
        end = {p: e for p, _, e in ranges}
        out = []
        deadline = time.time() + timeout
        while any(nxt[p] < end[p] for p in nxt):
            assert time.time() < deadline, f"consume timed out: {nxt} of {end}"
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() is not None:
                    raise AssertionError(f"consumer error: {m.error()}")
                p = m.partition()
                if nxt[p] >= end[p]:
                    continue
                assert m.offset() >= nxt[p], f"partition {p}: offset {m.offset()} < {nxt[p]}"
                nxt[p] = m.offset() + 1
                out.append(m)
        return out
    finally:
        c.close()


def high_watermark(broker, topic, partition):
    c = consumer(broker)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)[1]
    finally:
        c.close()


def test_admin_create_list_describe(broker, topic_name):
    name = topic_name("py-admin")
    create_topic(broker, name, 3, {"retention.ms": "3600000"})

    a = admin(broker)
    md = a.list_topics(timeout=TIMEOUT)
    assert name in md.topics
    assert len(md.topics[name].partitions) == 3
    assert len(md.brokers) == 1

    res = ConfigResource(ResourceType.TOPIC, name)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    assert entries["retention.ms"].value == "3600000"
    src = entries["retention.ms"].source
    assert getattr(src, "value", src) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, src
    assert "cleanup.policy" in entries

    # Creating it again is TOPIC_ALREADY_EXISTS.
    fut = a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name]
    with pytest.raises(Exception) as e:
        fut.result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_roundtrip_keys_headers_timestamps(broker, topic_name, codec):
    name = topic_name(f"py-{codec}")
    create_topic(broker, name, 4)
    base = int(time.time() * 1000) - 3_600_000
    records = []
    for i in range(5000):
        headers = [("id", str(i).encode()), ("bin", bytes([0, 255, i % 256]))]
        if i % 3 == 0:
            headers.append(("null", None))
        records.append({
            "key": f"key-{i % 100}".encode(),
            "value": None if i % 499 == 0 else (f"value {i} ".encode() + bytes(range(i % 200))),
            "headers": headers,
            "timestamp": base + i,
        })
    delivered = produce_all(producer(broker, **{"compression.type": codec}), name, records)

    ranges = [(p, 0, high_watermark(broker, name, p)) for p in range(4)]
    assert sum(e for _, _, e in ranges) == len(records)
    msgs = consume(broker, name, ranges)
    assert len(msgs) == len(records)
    last_seq = {}
    for m in msgs:
        hdrs = m.headers()
        i = int(dict(hdrs)["id"])
        want = records[i]
        assert (m.partition(), m.offset()) == delivered[i]
        assert m.key() == want["key"]
        assert m.value() == want["value"]
        assert hdrs == want["headers"]
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, want["timestamp"])
        prev = last_seq.get(m.key())
        assert prev is None or i > prev, f"key {m.key()}: {i} after {prev}"
        last_seq[m.key()] = i


def test_idempotent_producer(broker, topic_name):
    name = topic_name("py-idem")
    create_topic(broker, name, 2)
    p = producer(broker, **{"enable.idempotence": True, "acks": "all",
                            "max.in.flight.requests.per.connection": 5})
    records = [{"value": f"id={i}".encode(), "partition": i % 2} for i in range(4000)]
    delivered = produce_all(p, name, records)
    for part in range(2):
        offsets = [o for (pp, o) in delivered if pp == part]
        assert offsets == list(range(2000)), f"partition {part}: offsets not dense/ordered"
        assert high_watermark(broker, name, part) == 2000
    msgs = consume(broker, name, [(0, 0, 2000), (1, 0, 2000)])
    ids = sorted(int(m.value().split(b"=")[1]) for m in msgs)
    assert ids == list(range(4000))


def test_offsets_for_times(broker, topic_name):
    name = topic_name("py-times")
    create_topic(broker, name, 1)
    base = int(time.time() * 1000) - 600_000
    records = [{"key": b"k", "value": f"r{i}".encode(), "timestamp": base + i * 1000, "partition": 0}
               for i in range(100)]
    produce_all(producer(broker), name, records)

    c = consumer(broker)
    try:
        for ts, want in [(base - 5000, 0), (base + 50_000, 50), (base + 49_001, 50),
                         (base + 99_000, 99), (base + 99_001, -1)]:
            got = c.offsets_for_times([TopicPartition(name, 0, ts)], timeout=TIMEOUT)
            assert got[0].error is None, got[0].error
            assert got[0].offset == want, f"offsets_for_times(base+{ts - base}) = {got[0].offset}, want {want}"
        start = c.offsets_for_times([TopicPartition(name, 0, base + 50_000)], timeout=TIMEOUT)[0].offset
    finally:
        c.close()
    msgs = consume(broker, name, [(0, start, 100)])
    assert [m.value() for m in msgs] == [f"r{i}".encode() for i in range(50, 100)]
    assert all(m.timestamp()[1] >= base + 50_000 for m in msgs)


def test_describe_reports_authorized_operations(broker, topic_name):
    """Without an authorizer every operation is allowed, and clients that
    ask (Metadata v8+, DescribeCluster) are told so, as Kafka does."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation

    name = topic_name("py-authops")
    create_topic(broker, name, 1)
    a = admin(broker)
    desc = a.describe_topics(
        TopicCollection([name]), request_timeout=TIMEOUT, include_authorized_operations=True
    )[name].result(TIMEOUT)
    ops = set(desc.authorized_operations or [])
    for op in (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE,
               AclOperation.DELETE, AclOperation.ALTER_CONFIGS):
        assert op in ops, (op, ops)
    cluster = a.describe_cluster(
        request_timeout=TIMEOUT, include_authorized_operations=True
    ).result(TIMEOUT)
    cops = set(cluster.authorized_operations or [])
    for op in (AclOperation.DESCRIBE, AclOperation.CREATE, AclOperation.IDEMPOTENT_WRITE):
        assert op in cops, (op, cops)
