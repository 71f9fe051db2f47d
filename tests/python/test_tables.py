"""Topics as tables: confluent-kafka produces keyed JSON records with
headers to a topic with strata.table.enable=true that tiers to file://;
once its segments are in the tier, DuckDB and pyarrow read the Parquet
files beside the tier and return exactly the produced rows (partitions,
offsets, timestamps, keys, values, headers), each file under the UTC day of
its rows. A kill -9 during export, repeated, leaves no duplicate or missing
offset.
"""

import datetime
import json
import pathlib
import re
import time
import urllib.request

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, serving

TIMEOUT = 30
DAY_MS = 86_400_000
ARGS = ["--tier-interval-ms", "200", "--log-retention-check-interval-ms", "200"]


def metric(b, name):
    with urllib.request.urlopen(f"http://{b.admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        m = re.match(r"^(\w+) (\S+)$", line)
        if m and m.group(1) == name:
            return float(m.group(2))
    return None


def export_lag(b, topic):
    """strata_table_export_lag_segments per partition of `topic`."""
    with urllib.request.urlopen(f"http://{b.admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        rf'^strata_table_export_lag_segments{{topic="{re.escape(topic)}",partition="(\d+)"}} (\S+)$',
        text, re.M)}


def create_table_topic(b, topic, partitions=2):
    a = AdminClient({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4"})
    a.create_topics([NewTopic(topic, partitions, 1, config={
        "strata.table.enable": "true",
        "remote.storage.enable": "true",
        "segment.bytes": "65536",
        "segment.ms": "500",
    })])[topic].result(TIMEOUT)


def produce(b, topic, n, first=0):
    """n records: JSON values, two headers, a null value every 50th, half
    of them stamped a day earlier; returns {(partition, offset): row}."""
    p = Producer({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4",
                  "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    sent = {}
    now = int(time.time() * 1000)

    for i in range(first, first + n):
        key = f"user-{i % 97}".encode()
        value = None if i % 50 == 0 else json.dumps({"id": i, "name": f"n{i}"}).encode()
        ts = now - DAY_MS if i % 2 else now
        headers = [("source", b"test"), ("seq", str(i).encode())]

        def done(err, msg, key=key, value=value, ts=ts, headers=headers):
            assert err is None, err
            sent[(msg.partition(), msg.offset())] = (key, value, ts, headers)

        while True:
            try:
                p.produce(topic, key=key, value=value, timestamp=ts, headers=headers,
                          on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0
    return sent


def table_dir(tier_root, topic):
    return pathlib.Path(tier_root) / "tables" / topic


def files_of(tier_root, topic):
    return sorted(table_dir(tier_root, topic).rglob("*.parquet"))


def wait_exported(b, rows, timeout=120):
    deadline = time.time() + timeout
    while True:
        got = metric(b, "strata_table_export_rows_total") or 0
        if got >= rows:
            return got
        assert time.time() < deadline, f"{got} of {rows} rows exported"
        time.sleep(0.3)


def read_pyarrow(tier_root, topic):
    """{(partition, offset): (key, value, ts, headers)} from every file,
    checking each file's rows against its dt= and partition= directories."""
    rows = {}
    for f in files_of(tier_root, topic):
        dt = f.parent.parent.name.removeprefix("dt=")
        part = int(f.parent.name.removeprefix("partition="))
        t = pq.read_table(f)
        assert t.schema.field("timestamp").type.tz == "UTC"
        for r in t.to_pylist():
            assert r["partition"] == part, f
            day = r["timestamp"].astimezone(datetime.timezone.utc).date().isoformat()
            assert day == dt, (f, r["offset"])
            key = (r["partition"], r["offset"])
            assert key not in rows, f"offset {key} twice"
            ts = int(r["timestamp"].timestamp() * 1000)
            headers = [(h["key"], h["value"]) for h in r["headers"]]
            rows[key] = (r["key"], r["value"], ts, headers)
    return rows


def test_a_table_topic_reads_back_in_duckdb_and_pyarrow(tmp_path, topic_name):
    tier = tmp_path / "tier"
    topic = topic_name("table")
    for b in serving(Broker(tmp_path / "b", ARGS + ["--tier-url", f"file://{tier}"]).start()):
        create_table_topic(b, topic)
        sent = produce(b, topic, 3000)
        wait_exported(b, len(sent))
        got = read_pyarrow(tier, topic)
        assert got == sent
        # Two UTC days (records stamped a day apart), both partitions.
        days = {f.parent.parent.name for f in files_of(tier, topic)}
        assert len(days) == 2, days
        # DuckDB over the whole table: the same rows, and a JSON query on
        # the values.
        glob = str(table_dir(tier, topic) / "**" / "*.parquet")
        con = duckdb.connect()
        count, offsets, parts = con.execute(
            "select count(*), count(distinct (partition, \"offset\")), count(distinct partition) "
            "from read_parquet(?, hive_partitioning = false)", [glob]).fetchone()
        assert (count, offsets, parts) == (len(sent), len(sent), 2)
        ids = con.execute(
            "select sum(cast(json_extract(decode(value), '$.id') as bigint)) "
            "from read_parquet(?, hive_partitioning = false) where value is not null",
            [glob]).fetchone()[0]
        assert ids == sum(i for i in range(3000) if i % 50 != 0)
        rows = con.execute(
            "select partition, \"offset\", key, value, epoch_ms(timestamp), "
            "list_transform(headers, lambda h: [h.key, decode(h.value)]) "
            "from read_parquet(?, hive_partitioning = false)", [glob]).fetchall()
        for part, off, key, value, ts, headers in rows:
            want = sent[(part, off)]
            assert (key, value, ts) == want[:3], (part, off)
            assert [(k, v.encode()) for k, v in headers] == want[3]
        # Hive-style partitioning: engines that read dt= and partition= from
        # the paths agree with the columns.
        per_dir = con.execute(
            "select count(*) filter (where cast(dt as varchar) = strftime(timestamp, '%Y-%m-%d')), "
            "count(*) from read_parquet(?, hive_partitioning = true)", [glob]).fetchone()
        assert per_dir == (len(sent), len(sent))
        hive = ds.dataset(table_dir(tier, topic), format="parquet", partitioning="hive").to_table()
        assert hive.num_rows == len(sent)
        assert metric(b, "strata_table_export_errors_total") == 0
        assert export_lag(b, topic) == {0: 0.0, 1: 0.0}


def test_kill9_during_export_leaves_no_duplicate_or_missing_offset(tmp_path, topic_name):
    tier = tmp_path / "tier"
    topic = topic_name("tablekill")
    b = Broker(tmp_path / "b", ARGS + ["--tier-url", f"file://{tier}"])
    sent = {}
    try:
        b.start()
        create_table_topic(b, topic, partitions=1)
        for cycle in range(10):
            sent.update(produce(b, topic, 1500, first=cycle * 1500))
            time.sleep(0.05 * cycle)
            b.kill()
            b.start()
        # After the last restart everything is exported once.
        deadline = time.time() + 120
        while True:
            got = read_pyarrow(tier, topic)  # fails on a duplicate offset
            if len(got) == len(sent):
                break
            assert time.time() < deadline, f"{len(got)} of {len(sent)} rows in the table"
            time.sleep(0.5)
        assert got == sent
        b.stop()
        assert not b.error_lines(), b.error_lines()
    except BaseException:
        print(b.log_tail())
        raise
    finally:
        b.kill()
