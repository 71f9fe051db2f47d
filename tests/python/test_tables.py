"""Topics as tables: confluent-kafka produces keyed JSON records with
headers to a topic with strata.table.enable=true that tiers to file://;
once its segments are in the tier, DuckDB and pyarrow read the Parquet
files beside the tier and return exactly the produced rows (partitions,
offsets, timestamps, keys, values, headers), each file under the UTC day of
its rows. A kill -9 during export, repeated, leaves no duplicate or missing
offset. `strata table backfill` adds the history tiered before the switch
was on, `strata table status` counts the table, and retention
(`strata.table.retention.ms`, or the tier's) removes files.
"""

import datetime
import json
import os
import pathlib
import re
import subprocess
import time
import urllib.request
import uuid

import duckdb
import pytest
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, serving, strata_bin

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
    """n records: JSON values, three headers (two with one key), a null value every 50th, half
    of them stamped a day earlier; returns {(partition, offset): row}."""
    p = Producer({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4",
                  "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    sent = {}
    now = int(time.time() * 1000)

    for i in range(first, first + n):
        key = f"user-{i % 97}".encode()
        value = None if i % 50 == 0 else json.dumps({"id": i, "name": f"n{i}"}).encode()
        ts = now - DAY_MS if i % 2 else now
        # Two headers share a key, as Kafka allows: the table keeps both.
        headers = [("source", b"test"), ("seq", str(i).encode()), ("source", b"again")]

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


def wait_rows(read, sent, where, timeout=120):
    """Waits until `read()` returns as many rows as `sent`, then checks they
    are exactly `sent` (the readers fail at once on an offset seen twice)."""
    deadline = time.time() + timeout
    while True:
        got = read()
        if len(got) == len(sent):
            break
        assert time.time() < deadline, f"{len(got)} of {len(sent)} rows in {where}"
        time.sleep(0.5)
    assert got == sent


def wait_table_holds(tier_root, topic, sent):
    """Waits until the table's files hold exactly `sent`."""
    wait_rows(lambda: read_pyarrow(tier_root, topic), sent, "the table")


def iceberg_table(tier_root, topic):
    """The topic's Iceberg table, through pyiceberg, from the version the
    hint names."""
    from pyiceberg.table import StaticTable
    meta = table_dir(tier_root, topic) / "metadata"
    version = int((meta / "version-hint.text").read_text())
    return StaticTable.from_metadata(f"file://{meta}/v{version}.metadata.json")


def read_iceberg(tier_root, topic):
    """{(partition, offset): (key, value, ts, headers)} from pyiceberg's
    scan of the current snapshot; fails on an offset seen twice."""
    rows = {}
    for r in iceberg_table(tier_root, topic).scan().to_arrow().to_pylist():
        key = (r["partition"], r["offset"])
        assert key not in rows, f"offset {key} twice in the iceberg table"
        ts = int(r["timestamp"].timestamp() * 1000)
        headers = [(h["key"], h["value"]) for h in r["headers"]]
        rows[key] = (r["key"], r["value"], ts, headers)
    return rows


def wait_iceberg(tier_root, topic, sent):
    """Waits until the Iceberg table holds exactly `sent`."""
    hint = table_dir(tier_root, topic) / "metadata" / "version-hint.text"
    wait_rows(lambda: read_iceberg(tier_root, topic) if hint.exists() else {}, sent,
              "the iceberg table")


def iceberg_matches_files(tier_root, topic):
    """Whether pyiceberg's scan returns exactly the rows of every Parquet
    file (once no export is running, every file is committed)."""
    return read_iceberg(tier_root, topic) == read_pyarrow(tier_root, topic)


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
        # The Iceberg metadata is not Parquet: directory readers skip it.
        hive = ds.dataset(table_dir(tier, topic), format="parquet", partitioning="hive",
                          ignore_prefixes=[".", "_", "metadata"]).to_table()
        assert hive.num_rows == len(sent)
        # pyiceberg reads the same rows from the Iceberg table.
        wait_iceberg(tier, topic, sent)
        assert metric(b, "strata_table_iceberg_commits_total") >= 1
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
        wait_table_holds(tier, topic, sent)
        # Every kill left the Iceberg table whole: it ends with every row once.
        wait_iceberg(tier, topic, sent)
        b.stop()
        assert not b.error_lines(), b.error_lines()
    except BaseException:
        print(b.log_tail())
        raise
    finally:
        b.kill()


def table_cli(b, tier, *args):
    """`strata table ...` with the broker's tier settings; its JSON."""
    out = subprocess.run(
        [str(strata_bin()), "table", *args, "--output", "json",
         "--tier-url", f"file://{tier}", "--data-dir", str(b.workdir / "cli")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def file_ranges(tier_root, topic):
    """(dt, from, to) of every table file, from its name."""
    out = []
    for f in files_of(tier_root, topic):
        lo, hi = f.stem.split("-")
        out.append((f.parent.parent.name.removeprefix("dt="), int(lo), int(hi)))
    return out


def alter(b, topic, **configs):
    from confluent_kafka.admin import ConfigResource, ConfigEntry, AlterConfigOpType
    a = AdminClient({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4"})
    r = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    for f in a.incremental_alter_configs([r]).values():
        f.result(TIMEOUT)


def low_watermark(b, topic):
    """The topic's partition 0 log start offset, from `strata tier status`."""
    out = subprocess.run(
        [str(strata_bin()), "tier", "status", topic, "--output", "json", "-b", b.bootstrap],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return next(r["log_start_offset"] for r in json.loads(out.stdout)
                if r["topic"] == topic and r["partition"] == 0)


def yesterday(day):
    return (datetime.date.fromisoformat(day) - datetime.timedelta(days=1)).isoformat()


def wait_for(what, check, timeout=120):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.time() < deadline, what
        time.sleep(0.3)


def test_backfill_status_and_retention_of_a_table(tmp_path, topic_name):
    tier = tmp_path / "tier"
    topic = topic_name("tablelife")
    for b in serving(Broker(tmp_path / "b", ARGS + ["--tier-url", f"file://{tier}"]).start()):
        # History first, tiered and gone from local disk, before the switch.
        a = AdminClient({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4"})
        a.create_topics([NewTopic(topic, 1, 1, config={
            "remote.storage.enable": "true", "segment.bytes": "65536", "segment.ms": "500",
            "local.retention.ms": "0"})])[topic].result(TIMEOUT)
        sent = produce(b, topic, 2000)
        first_segment = b.data_dir / f"{topic}-0" / f"{0:020}.log"
        assert first_segment.exists()
        wait_for("history tiered and trimmed locally", lambda: not first_segment.exists())
        alter(b, topic, strata_table_enable="true")
        sent.update(produce(b, topic, 2000, first=2000))
        status = wait_for("the leader's first exports", lambda: [
            p for p in table_cli(b, tier, "status", topic)["partitions"]
            if p["exported_to"] is not None and p["lag_segments"] == 0])[0]
        start = status["first_offset"]
        assert start > 0, status
        assert min(o for _, o in read_pyarrow(tier, topic)) == start
        # Backfill: the history below the table's start, from the tier.
        done = table_cli(b, tier, "backfill", topic)["partitions"][0]
        assert done["rows"] == start and done["replaced_files"] == 0, done
        exported = table_cli(b, tier, "status", topic)["partitions"][0]["exported_to"]
        got = read_pyarrow(tier, topic)
        assert {k for k in sent if k[1] < exported} <= set(got)
        # A second backfill replaces the first's files: still each offset once.
        again = table_cli(b, tier, "backfill", topic)["partitions"][0]
        assert again["rows"] == start and again["replaced_files"] == done["files"], again
        got = read_pyarrow(tier, topic)
        assert all(sent[k] == row for k, row in got.items())
        # Status agrees with the files (compared until no export runs
        # between the two reads).
        def status_agrees():
            status = table_cli(b, tier, "status", topic)["partitions"][0]
            assert status["first_offset"] == 0, status
            return (status["rows"], status["files"]) == (
                len(read_pyarrow(tier, topic)), len(files_of(tier, topic)))

        wait_for("table status agrees with the files", status_agrees)
        # The Iceberg table holds the same rows, backfill included, and
        # status reports its snapshot.
        wait_for("the iceberg table holds the files' rows", lambda: iceberg_matches_files(tier, topic))
        assert table_cli(b, tier, "status", topic)["iceberg"]["rows"] == len(read_pyarrow(tier, topic))

        # Switched off, the table stops and local retention no longer waits
        # for it; switched on again, it goes on from its checkpoint, reading
        # what local disk no longer has from the tier.
        alter(b, topic, strata_table_enable="false")
        paused = table_cli(b, tier, "status", topic)["partitions"][0]["exported_to"]
        sent.update(produce(b, topic, 2000, first=4000))
        gone = b.data_dir / f"{topic}-0" / f"{paused:020}.log"
        wait_for("segments trimmed locally while the table is off", lambda: not gone.exists())
        alter(b, topic, strata_table_enable="true")
        wait_for("the table past the pause", lambda: table_cli(
            b, tier, "status", topic)["partitions"][0]["exported_to"] > paused)
        assert re.search(r"segments exported as parquet.*from_tier=[1-9]", b.logs())
        exported = table_cli(b, tier, "status", topic)["partitions"][0]["exported_to"]
        got = read_pyarrow(tier, topic)
        assert {k for k in sent if k[1] < exported} <= set(got)
        assert all(sent[k] == row for k, row in got.items())

        # By time: the days that ended go, today's stay, whatever the tier
        # keeps.
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        assert {d for d, _, _ in file_ranges(tier, topic)} == {today, yesterday(today)}
        alter(b, topic, strata_table_retention_ms="0")
        wait_for("yesterday's files removed", lambda: {
            d for d, _, _ in file_ranges(tier, topic)} == {today})
        removed = metric(b, "strata_table_retention_removed_files_total")
        assert removed > 0
        wait_for("the iceberg table without yesterday", lambda: iceberg_matches_files(tier, topic))

        # Kept forever while the tier trims all but its newest segments.
        before = file_ranges(tier, topic)
        alter(b, topic, strata_table_retention_ms="-1", retention_bytes="1")
        low = wait_for("tier retention", lambda: low_watermark(b, topic))
        time.sleep(1)  # several table retention rounds
        assert set(before) <= set(file_ranges(tier, topic))
        # Following the tier: the files below its start go; the rows it
        # keeps stay.
        alter(b, topic, strata_table_retention_ms="-2")
        wait_for("files below the tier's start removed", lambda: all(
            hi > low for _, _, hi in file_ranges(tier, topic)))
        assert metric(b, "strata_table_retention_removed_files_total") > removed
        got = read_pyarrow(tier, topic)
        assert {k for k in sent if k[1] >= low and sent[k][2] > time.time() * 1000 - DAY_MS / 2} \
            <= set(got), "a row the tier keeps left the table"
        wait_for("the iceberg table follows the tier", lambda: iceberg_matches_files(tier, topic))
        assert metric(b, "strata_table_export_errors_total") == 0

        # Deleting the topic deletes its table.
        a.delete_topics([topic])[topic].result(TIMEOUT)
        wait_for("the table deleted", lambda: not any(table_dir(tier, topic).rglob("*.*")))


def test_json_values_project_into_typed_columns(tmp_path, topic_name):
    """...in a table store of its own (--table-url)."""
    tier = tmp_path / "tier"
    lake = tmp_path / "lake"
    topic = topic_name("tabletyped")
    schema = '{"id": "int64", "name": "utf8", "score": "float64", "ok": "bool"}'
    args = ARGS + ["--tier-url", f"file://{tier}", "--table-url", f"file://{lake}"]
    for b in serving(Broker(tmp_path / "b", args).start()):
        a = AdminClient({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4"})
        # A schema that shadows a table column, or names an unknown type, is
        # refused with the key named.
        for bad in ['{"offset": "int64"}', '{"id": "int128"}', "id int64"]:
            f = a.create_topics([NewTopic(topic, 1, 1, config={
                "strata.table.enable": "true", "strata.table.value.format": "json",
                "strata.table.value.schema": bad})])[topic]
            try:
                f.result(TIMEOUT)
                raise AssertionError(f"schema {bad!r} accepted")
            except Exception as e:  # noqa: BLE001 - the KafkaException of the refusal
                assert "strata.table.value.schema" in str(e), e
        a.create_topics([NewTopic(topic, 1, 1, config={
            "strata.table.enable": "true", "remote.storage.enable": "true",
            "segment.bytes": "65536", "segment.ms": "500",
            "strata.table.value.format": "json", "strata.table.value.schema": schema,
        })])[topic].result(TIMEOUT)
        p = Producer({"bootstrap.servers": b.bootstrap, "broker.address.family": "v4",
                      "acks": "all", "linger.ms": 5})
        values = []
        for i in range(1200):
            if i % 100 == 1:
                v = b"{not json"
            elif i % 100 == 2:
                v = json.dumps({"id": f"n{i}", "name": f"n{i}"}).encode()
            elif i % 100 == 3:
                v = None
            else:
                v = json.dumps({"id": i, "name": f"n{i}", "score": i / 4, "ok": i % 2 == 0,
                                "extra": {"nested": [i]}}).encode()
            values.append(v)
            p.produce(topic, key=str(i).encode(), value=v)
            p.poll(0)
        assert p.flush(60) == 0
        # Everything but the active segment is exported: wait for it.
        wait_exported(b, 1000)
        assert not (tier / "tables").exists()
        glob = str(table_dir(lake, topic) / "**" / "*.parquet")
        rows = duckdb.connect().execute(
            "select \"offset\", id, name, score, ok, value_error from read_parquet(?) "
            "order by \"offset\"", [glob]).fetchall()
        assert len(rows) >= 1000
        for off, id_, name, score, ok, error in rows:
            i = off
            if i % 100 == 1:
                assert (id_, name, score, ok) == (None, None, None, None)
                assert error.startswith("not JSON"), error
            elif i % 100 == 2:
                assert (id_, name) == (None, f"n{i}")
                assert error == 'field "id": expected int64, got a string'
            elif i % 100 == 3:
                assert (id_, name, score, ok, error) == (None, None, None, None, None)
            else:
                assert (id_, name, score, ok, error) == (i, f"n{i}", i / 4, i % 2 == 0, None)
        # The typed columns are typed: DuckDB sums and filters them as such.
        total = duckdb.connect().execute(
            "select sum(id), count(*) filter (where ok) from read_parquet(?)", [glob]).fetchone()
        assert total[0] == sum(r[1] for r in rows if r[1] is not None)
        assert total[1] == sum(1 for r in rows if r[4])
        assert metric(b, "strata_table_export_errors_total") == 0
        # The CLI finds the table where the broker's settings put it (the
        # last segment may still be exported meanwhile: compare until both
        # agree).
        def status_rows():
            out = subprocess.run(
                [str(strata_bin()), "table", "status", topic, "--output", "json",
                 "--tier-url", f"file://{tier}", "--table-url", f"file://{lake}",
                 "--data-dir", str(b.workdir / "cli")],
                capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)["partitions"][0]["rows"]

        wait_for("table status counts the rows DuckDB reads", lambda: status_rows() == duckdb.connect(
        ).execute("select count(*) from read_parquet(?)", [glob]).fetchone()[0] >= 1000)

        # pyiceberg reads the same typed columns from the Iceberg table.
        columns = ("offset", "id", "name", "score", "ok", "value_error")

        def iceberg_typed():
            scan = iceberg_table(lake, topic).scan(selected_fields=columns).to_arrow()
            files = duckdb.connect().execute(
                f"select {', '.join(chr(34) + c + chr(34) for c in columns)} "
                "from read_parquet(?) order by \"offset\"", [glob]).fetchall()
            return sorted(tuple(r[c] for c in columns) for r in scan.to_pylist()) == files

        wait_for("pyiceberg reads the typed columns", iceberg_typed)
        schema = iceberg_table(lake, topic).schema()
        assert str(schema.find_field("id").field_type) == "long"
        assert str(schema.find_field("ok").field_type) == "boolean"


def test_a_table_exported_before_progress_moved_to_the_store_goes_on_without_doubling(
        tmp_path, topic_name):
    """A table whose files have the older names (`<base offset>.parquet`)
    and whose progress is only in the leader's local checkpoint: the export
    goes on after it, and no offset is written twice."""
    tier = tmp_path / "tier"
    topic = topic_name("tableold")
    b = Broker(tmp_path / "b", ARGS + ["--tier-url", f"file://{tier}"])
    try:
        b.start()
        create_table_topic(b, topic, partitions=1)
        sent = produce(b, topic, 1500)
        wait_exported(b, 1)
        b.stop()
        # The older layout: no checkpoint object, files named by base.
        (table_dir(tier, topic) / "_strata" / "partition=0.json").unlink()
        for f in files_of(tier, topic):
            f.rename(f.with_name(f"{int(f.stem.split('-')[0]):020}.parquet"))
        old = len(read_pyarrow(tier, topic))
        assert old > 0
        b.start()
        sent.update(produce(b, topic, 1500, first=1500))
        wait_table_holds(tier, topic, sent)
        # The Iceberg table holds both layouts' files, each row once.
        wait_iceberg(tier, topic, sent)
        b.stop()
        assert not b.error_lines(), b.error_lines()
    except BaseException:
        print(b.log_tail())
        raise
    finally:
        b.kill()


def test_pyiceberg_reads_a_table_on_s3(tmp_path, topic_name, monkeypatch):
    """A table topic tiered to LocalStack S3: pyiceberg, reading the
    metadata and files from the bucket, returns exactly the produced rows."""
    endpoint = os.environ.get("STRATA_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.skip("needs LocalStack: run under localstack/with-s3.sh (tests/run.sh does)")
    from pyarrow import fs
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    s3 = fs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test",
                         region="us-east-1", allow_bucket_creation=True,
                         scheme="https" if endpoint.startswith("https") else "http")
    bucket = f"tables-{uuid.uuid4().hex[:12]}"
    s3.create_dir(bucket)
    topic = topic_name("tables3")
    args = ARGS + ["--tier-url", f"s3://{bucket}/strata", "--tier-s3-endpoint", endpoint]
    for b in serving(Broker(tmp_path / "b", args).start()):
        create_table_topic(b, topic)
        sent = produce(b, topic, 2000)
        wait_exported(b, len(sent))
        meta = f"{bucket}/strata/tables/{topic}/metadata"

        def iceberg_rows():
            from pyiceberg.table import StaticTable
            try:
                with s3.open_input_stream(f"{meta}/version-hint.text") as f:
                    version = int(f.read().decode())
            except FileNotFoundError:
                return {}
            table = StaticTable.from_metadata(f"s3://{meta}/v{version}.metadata.json", properties={
                "s3.endpoint": endpoint, "s3.access-key-id": "test",
                "s3.secret-access-key": "test", "s3.region": "us-east-1"})
            rows = {}
            for r in table.scan().to_arrow().to_pylist():
                key = (r["partition"], r["offset"])
                assert key not in rows, f"offset {key} twice in the iceberg table"
                headers = [(h["key"], h["value"]) for h in r["headers"]]
                rows[key] = (r["key"], r["value"], int(r["timestamp"].timestamp() * 1000), headers)
            return rows

        wait_rows(iceberg_rows, sent, "the iceberg table on S3")
        assert metric(b, "strata_table_export_errors_total") == 0
