"""kafkajs (a client with its own implementation of the protocol, from npm;
tests/run.sh installs it into tests/node) over SASL/SCRAM: SCRAM-SHA-256 and
SCRAM-SHA-512 users created with `strata user create`, a producer and a
consumer group, and a wrong password refused."""

import json
import pathlib
import shutil
import subprocess
import uuid

import pytest

from conftest import Broker, serving, strata_bin

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "node"


def kafkajs(*args):
    node = shutil.which("node")
    assert node, "node is required: install Node.js (tests/run.sh checks for it)"
    assert (NODE_DIR / "node_modules" / "kafkajs").is_dir(), \
        "kafkajs is not installed: bash tests/run.sh runs npm ci in tests/node"
    return subprocess.run([node, str(NODE_DIR / "scram.js"), *map(str, args)],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def scram_broker(tmp_path):
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker", extra_args=[
        "--listeners", "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "--sasl-enabled-mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512",
    ]).start()
    yield from serving(b)


@pytest.mark.parametrize("mechanism", ["scram-sha-256", "scram-sha-512"])
def test_kafkajs_produces_and_consumes_in_a_group_over_scram(scram_broker, mechanism):
    user = f"js-{mechanism[-3:]}"
    subprocess.run([strata_bin(), "user", "create", user, "--password", "js-secret",
                    "--mechanism", mechanism.upper(), "--bootstrap", scram_broker.bootstrap],
                   check=True, capture_output=True, timeout=60)
    topic = f"kafkajs-{uuid.uuid4().hex[:8]}"
    subprocess.run([strata_bin(), "topic", "create", topic, "--partitions", "1",
                    "--bootstrap", scram_broker.bootstrap],
                   check=True, capture_output=True, timeout=60)
    addr = scram_broker.listeners["SASL_PLAINTEXT"]
    r = kafkajs(addr, mechanism, user, "js-secret", topic, 50)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["produced"] == 50
    assert out["consumed"] == [[f"k{i}", f"v{i}"] for i in range(50)]

    r = kafkajs(addr, mechanism, user, "wrong", topic, 1)
    assert r.returncode == 2, r.stdout + r.stderr
    refused = json.loads(r.stdout.strip().splitlines()[-1])
    assert refused["error"] == "KafkaJSSASLAuthenticationError", refused
    assert "SASL authentication failed" in scram_broker.logs()


def test_kafkajs_transactions_commit_abort_and_send_offsets(broker):
    """kafkajs' own transactional producer: a commit, an abort, and a commit
    with sendOffsets; its read_committed consumer sees exactly the two
    committed transactions, and the offset committed in the transaction is
    the group's."""
    node = shutil.which("node")
    assert node, "node is required: install Node.js (tests/run.sh checks for it)"
    topic = f"kafkajs-txn-{uuid.uuid4().hex[:8]}"
    subprocess.run([strata_bin(), "topic", "create", topic, "--partitions", "1",
                    "--bootstrap", broker.bootstrap],
                   check=True, capture_output=True, timeout=60)
    r = subprocess.run([node, str(NODE_DIR / "txn.js"), broker.bootstrap, topic,
                        f"js-{uuid.uuid4().hex[:6]}"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    expected = [f"c{i}" for i in range(20)] + [f"d{i}" for i in range(20)]
    assert out["consumed"] == expected
    committed = {p["partition"]: p["offset"] for t in out["offsets"] for p in t["partitions"]}
    assert committed == {0: "7"}
