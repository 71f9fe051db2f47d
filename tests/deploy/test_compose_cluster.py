"""The three brokers of infra/docker-compose.yml, run as processes with the
environment compose gives them (the image's ENV, then the service's), since
Docker does not run here. In compose they share one network namespace, as
processes on one host do, so the only changes are free port numbers in place
of the fixed ones (each moved the same way in every setting), listeners on
127.0.0.1 instead of 0.0.0.0, a data directory each, and a shared file://
tier in place of MinIO. What is checked: the voter list makes one quorum,
clients reach every broker at its advertised address, followers reach their
leaders there (a record acknowledged with acks=all is read back after its
leader stops), and each broker's healthcheck asks its own /ready."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from conftest import INFRA_DIR, terminate
from test_infra import brokers, dockerfile_instructions, parse_voters
from test_metrics_live import http_get, strata_bin

RECORDS = 300
PARTITIONS = 3


def image_env() -> dict[str, str]:
    env = {}
    for keyword, rest in dockerfile_instructions(INFRA_DIR / "Dockerfile"):
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def unescape(value: str) -> str:
    """What compose passes on: `$$` is a literal `$`."""
    return value.replace("$$", "$")


class Cluster:
    def __init__(self, tmp: Path):
        compose = yaml.safe_load((INFRA_DIR / "docker-compose.yml").read_text())
        self.services = brokers(compose)
        settings = [
            {**image_env(), **{k: str(v) for k, v in svc["environment"].items()}} for svc in self.services.values()
        ]
        ports = sorted({int(p) for env in settings for v in env.values() for p in re.findall(r":(\d{4,5})\b", v)})
        # AWS_ENDPOINT_URL names MinIO's port, which nothing here uses.
        moved = dict(zip(ports, free_ports(len(ports))))
        self.tier = tmp / "tier"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("STRATA_", "AWS_"))}
        self.env: dict[str, dict[str, str]] = {}
        for (name, _), env in zip(self.services.items(), settings):
            env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
            for key in ("STRATA_LISTEN", "STRATA_ADMIN_LISTEN", "STRATA_ADVERTISED_LISTENER",
                        "STRATA_CONTROLLER_LISTEN", "STRATA_CONTROLLER_QUORUM_VOTERS"):  # fmt: skip
                env[key] = re.sub(r":(\d{4,5})\b", lambda m: f":{moved[int(m.group(1))]}", env[key])
                env[key] = env[key].replace("0.0.0.0", "127.0.0.1")
            env["STRATA_DATA_DIR"] = str(tmp / name)
            env["STRATA_TIER_URL"] = self.tier.as_uri()
            self.env[name] = {**base, **env}
        self.logs = {name: tmp / f"{name}.log" for name in self.services}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self):
        self.tier.mkdir()
        for name, env in self.env.items():
            with self.logs[name].open("w") as log:
                self.procs[name] = subprocess.Popen(
                    [str(strata_bin()), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
                )

    def stop(self, name: str):
        terminate(self.procs[name])

    def setting(self, name: str, key: str) -> str:
        return self.env[name][key]

    def bootstrap(self, names=None) -> str:
        return ",".join(self.setting(n, "STRATA_ADVERTISED_LISTENER") for n in names or self.services)

    def healthy(self, name: str) -> bool:
        """The service's healthcheck command, run with the broker's environment."""
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        return subprocess.run([unescape(t) for t in test[1:]], env=self.env[name], timeout=10).returncode == 0

    def errors(self) -> list[str]:
        return [
            f"{name}: {line}"
            for name, path in self.logs.items()
            for line in path.read_text().splitlines()
            if '"level":"ERROR"' in line
        ]

    def tails(self) -> str:
        return "\n".join(f"--- {name}\n{path.read_text()[-3000:]}" for name, path in self.logs.items())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("compose-cluster"))
    c.start()
    try:
        for name in c.services:
            admin = c.setting(name, "STRATA_ADMIN_LISTEN")
            try:
                http_get(f"http://{admin}/ready", timeout=120)
            except AssertionError as e:
                pytest.fail(f"{name} never became ready: {e}\n{c.tails()}")
        yield c
    finally:
        for name in c.services:
            c.stop(name)


def test_the_voter_list_makes_one_cluster(cluster):
    from confluent_kafka.admin import AdminClient

    # With the ports moved, still one voter list naming every controller listener.
    voters = [parse_voters(cluster.setting(n, "STRATA_CONTROLLER_QUORUM_VOTERS")) for n in cluster.services]
    controllers = {int(cluster.setting(n, "STRATA_NODE_ID")): cluster.setting(n, "STRATA_CONTROLLER_LISTEN")
                   for n in cluster.services}  # fmt: skip
    for v in voters:
        assert {node_id: f"{host}:{port}" for node_id, (host, port) in v.items()} == controllers
    md = AdminClient({"bootstrap.servers": cluster.bootstrap()}).list_topics(timeout=30)
    advertised = {int(cluster.setting(n, "STRATA_NODE_ID")): cluster.setting(n, "STRATA_ADVERTISED_LISTENER")
                  for n in cluster.services}  # fmt: skip
    assert {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()} == advertised
    for name in cluster.services:
        assert cluster.healthy(name), f"{name}'s healthcheck fails against its ready broker"


def test_replicated_records_outlive_their_leader(cluster):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "compose-replicated"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    # No replication factor: the broker's default, min(3, running brokers).
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)])[topic].result(30)
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, value=str(i).encode(), partition=i % PARTITIONS)
    assert producer.flush(60) == 0, "records still unacknowledged after 60 s"
    partitions = admin.list_topics(topic, timeout=30).topics[topic].partitions
    assert {p: sorted(m.replicas) for p, m in partitions.items()} == {p: [1, 2, 3] for p in range(PARTITIONS)}
    assert {p: sorted(m.isrs) for p, m in partitions.items()} == {p: [1, 2, 3] for p in range(PARTITIONS)}

    # Stop the leader of partition 0: its followers took every record from
    # it at its advertised address, so the new leader serves them all.
    node = {int(cluster.setting(n, "STRATA_NODE_ID")): n for n in cluster.services}
    stopped = node[partitions[0].leader]
    cluster.stop(stopped)
    assert not cluster.healthy(stopped), f"{stopped}'s healthcheck passes with {stopped} stopped"
    rest = [n for n in cluster.services if n != stopped]
    for name in rest:
        assert cluster.healthy(name), f"{name}'s healthcheck fails once {stopped} stopped"
    consumer = Consumer(
        {"bootstrap.servers": cluster.bootstrap(rest), "group.id": "compose-check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got: set[int] = set()
    deadline = time.monotonic() + 60
    while len(got) < RECORDS and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            got.add(int(msg.value()))
    consumer.close()
    assert got == set(range(RECORDS)), f"read {len(got)} of {RECORDS} records after stopping {stopped}"
    assert not cluster.errors(), "\n".join(cluster.errors())
