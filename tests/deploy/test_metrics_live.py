"""Checks against the real broker binary (STRATA_BIN, default
target/debug/strata): every metric a dashboard panel or alert queries is one
its /metrics exports; the settings the deployment files pass are flags the
binary knows; the Docker HEALTHCHECK probe works against its admin port."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import stat
import subprocess
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import INFRA_DIR, ROOT, ModuleEval, dashboard_queries, hcl_literal, terminate
from metrics_catalog import metrics_in
from test_cloud_init import CLUSTER_INPUTS, SECRET, bootstrap_listeners, module_stubs, render, run_bootstrap_step
from test_infra import brokers, dockerfile_instructions

BOUND_RE = re.compile(r"^(kafka|admin) listener bound to (\S+)$")


def strata_bin() -> Path:
    path = Path(os.environ.get("STRATA_BIN", ROOT / "target" / "debug" / "strata"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: run `cargo build` first (or set STRATA_BIN)")
    return path


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    data = tmp_path_factory.mktemp("strata-data")
    log = data.parent / "strata.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [str(strata_bin()), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
             "--admin-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("STRATA_")},
        )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    bound: dict[str, str] = {}
    deadline = time.monotonic() + 60
    try:
        while len(bound) < 2:
            if proc.poll() is not None:
                pytest.fail(f"strata exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"strata did not print its listeners within 60 s:\n{log.read_text()[-4000:]}")
            m = BOUND_RE.match(line.strip())
            if m:
                bound[m.group(1)] = m.group(2)
        yield bound
    finally:
        terminate(proc)


def http_get(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()
        except OSError as e:  # not ready yet, or refused
            if time.monotonic() > deadline:
                raise AssertionError(f"GET {url} kept failing: {e}") from e
            time.sleep(0.2)


def exported_names(exposition: str) -> set[str]:
    """Series names a query can select, from the Prometheus or OpenMetrics
    text: sample names, plus what each declared family yields even before it
    has a sample (counters' _total, histograms' _bucket/_sum/_count)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            if kind == "counter":
                names |= {family if family.endswith("_total") else family + "_total"}
            elif kind == "histogram":
                names |= {family + s for s in ("_bucket", "_sum", "_count")}
            else:
                names.add(family)
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def drive_traffic(bootstrap: str) -> None:
    """Labelled families appear on /metrics only once they have a sample:
    create a topic (twice, for an error), produce, fetch, commit."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, records = "deploy-metrics", 200
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for attempt in range(2):
        try:
            admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
        except KafkaException:
            assert attempt == 1, "the first CreateTopics must succeed"
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(records):
        producer.produce(topic, key=str(i).encode(), value=b"v" * 100)
    assert producer.flush(60) == 0, "records still unacknowledged after 60 s"
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "deploy-metrics", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    got, deadline = 0, time.monotonic() + 60
    while got < records and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            got += 1
    try:  # committed offsets feed consumer-group lag, where groups exist
        consumer.commit(asynchronous=False)
    except KafkaException:
        pass
    consumer.close()
    assert got == records, f"fetched {got} of {records} records"
    # A compacted table topic that tiers: the cleaner's, tier compaction's
    # and table export's per-partition gauges (tier compaction's once the
    # tier loop has read its manifest).
    compacted = "deploy-metrics-compacted"
    admin.create_topics([NewTopic(compacted, num_partitions=1, replication_factor=1, config={
        "cleanup.policy": "compact", "remote.storage.enable": "true",
        "strata.table.enable": "true"})])[compacted].result(30)
    for i in range(records):
        producer.produce(compacted, key=str(i % 10).encode(), value=b"v" * 100)
    assert producer.flush(60) == 0, "records still unacknowledged after 60 s"


def test_dashboard_metrics_are_exported(broker):
    # Before the broker is ready /metrics answers 200 with an empty body.
    http_get(f"http://{broker['admin']}/ready", timeout=60)
    drive_traffic(broker["kafka"])
    # Some families get their first sample from a background loop (the
    # tier loop, every 5 s by default): give them a few rounds.
    deadline = time.monotonic() + 30
    while True:
        exposition = http_get(f"http://{broker['admin']}/metrics")
        exported = exported_names(exposition)
        missing: dict[str, list[str]] = {}
        for where, expr in dashboard_queries():
            for metric in sorted(metrics_in(expr)):
                if metric not in exported:
                    missing.setdefault(metric, []).append(where)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    report = "\n".join(f"  {m}  (used by {len(w)}: {w[0]}{', …' if len(w) > 1 else ''})" for m, w in sorted(missing.items()))
    assert not missing, f"{len(missing)} metrics queried by infra/ are not on /metrics:\n{report}"


def serve_flags() -> set[str]:
    out = subprocess.run([str(strata_bin()), "serve", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--([a-z][a-z0-9-]+)", out)) - {"help", "version"}


def test_cloud_init_config_keys_are_broker_flags(tmp_path):
    doc = render(tmp_path)
    config = tomllib.loads(doc["files"]["/etc/strata/strata.toml"]["content"])
    unknown = set(config) - serve_flags()
    assert not unknown, f"strata serve would refuse these keys: {sorted(unknown)}"
    env = doc["files"]["/etc/systemd/system/strata.service"]["content"]
    assert "--config /etc/strata/strata.toml" in env


@pytest.mark.parametrize("role", ["voter", "learner"])
def test_cluster_configs_pass_the_brokers_checks(tmp_path, role):
    """A voter's and a learner's strata.toml, with the strata.env the
    bootstrap writes, are a configuration strata serve accepts: it gets as
    far as serving its controller listener (then waits for the quorum, which
    is not there). Ports are 0 and the IMDS address 127.0.0.1 so that it can
    bind; the data directory and tier are moved to tmp_path."""
    voters = '"1@127.0.0.1:1,2@127.0.0.1:2,3@127.0.0.1:3"'
    node_id = "2" if role == "voter" else "4"
    doc = render(tmp_path, node_id=node_id, controller_voters=voters, controller_role=f'"{role}"',
                 kafka_port="0", admin_port="0", controller_port="0",
                 replication_factor="3", offsets_factor="3")  # fmt: skip
    files = {path: f["content"] for path, f in doc["files"].items()}
    config = tmp_path / "strata.toml"
    config.write_text(files["/etc/strata/strata.toml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATA_", "AWS_"))}
    env.update(bootstrap_listeners(tmp_path, files["/etc/strata/bootstrap.env"], ip="127.0.0.1"))
    assert ("STRATA_CONTROLLER_LISTEN" in env) == (role == "learner")
    env.update(STRATA_DATA_DIR=str(tmp_path / "data"), STRATA_TIER_URL=(tmp_path / "tier").as_uri())
    log = tmp_path / "strata.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(strata_bin()), "serve", "--config", str(config)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "serving the controller listener" not in log.read_text():
            assert proc.poll() is None, f"strata serve refused the {role}'s config:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no controller listener after 30 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
    finally:
        # Waiting for a quorum that never comes, it is killed outright.
        proc.kill()
        proc.wait()


def test_security_env_names_are_broker_settings(module, tmp_path):
    """Every STRATA_* line the module writes for the listeners' security
    (all options on) names a flag of strata serve, with a value it takes."""
    inputs = {
        **CLUSTER_INPUTS,
        "tls": {"enabled": True, "certificate_secret_arn": SECRET.format("cert"),
                "private_key_secret_arn": SECRET.format("key"), "client_ca_secret_arn": SECRET.format("ca"),
                "client_auth": "required"},
        "sasl": {"mechanisms": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
                 "plain_users_secret_arn": SECRET.format("plain"), "scram_users": {"admin": SECRET.format("admin")}},
        "authorizer": "acl", "super_users": ["User:admin"], "allow_everyone_if_no_acl_found": True,
    }  # fmt: skip
    (lines,) = ModuleEval(module, tmp_path, inputs, module_stubs(3, 3)).eval_json(["local.security_env"])
    env = dict(line.split("=", 1) for line in lines)
    flags = serve_flags()
    names = {name[len("STRATA_") :].lower().replace("_", "-") for name in env}
    assert names <= flags, f"not flags of strata serve: {sorted(names - flags)}"
    assert len(names) == 9, sorted(names)
    # And the listeners step 4 advertises.
    assert {"advertised-listeners", "listeners", "inter-broker-listener-name"} <= flags


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a broker certificate for localhost and 127.0.0.1 it signs."""
    directory.mkdir()

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=strata test CA")
    openssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    (directory / "broker.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "broker.ext", "-out", "broker.pem")  # fmt: skip
    return {name: directory / name for name in ("ca.pem", "broker.pem", "broker.key")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_secured_listeners_serve_tls_scram_and_acls(module, tmp_path):
    """The module's TLS + SCRAM + ACL settings on the real binary, the boot
    steps run as written (secrets stubbed): strata.toml's listeners, the
    strata.env step 4 writes, the files step 5 fetches, the users step 8
    creates. Then a super user logs in with SCRAM over TLS and writes, another
    user logs in but is refused, a wrong password is refused, and the brokers'
    PLAINTEXT listener (User:ANONYMOUS) may do anything."""
    from confluent_kafka import KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from test_compose_cluster import free_ports  # it imports this module

    certs = make_certificates(tmp_path / "certs")
    passwords = {"admin": "admin-secret-1", "etl": "etl-secret-2"}
    secrets = {SECRET.format(n): certs[f].read_text() for n, f in (("cert", "broker.pem"), ("key", "broker.key"))}
    secrets |= {SECRET.format(user): f"{pw}\n" for user, pw in passwords.items()}
    inputs = {
        **CLUSTER_INPUTS, "broker_count": 1, "route53_zone_id": None, "dns_domain": None,
        "tls": {"enabled": True, "certificate_secret_arn": SECRET.format("cert"),
                "private_key_secret_arn": SECRET.format("key")},
        "sasl": {"mechanisms": ["SCRAM-SHA-512"], "scram_users": {u: SECRET.format(u) for u in passwords}},
        "authorizer": "acl", "super_users": ["User:admin"],
    }  # fmt: skip
    security = ModuleEval(module, tmp_path / "module", inputs, module_stubs(1, 3)).eval_json(
        ["local.client_protocol", "local.security_env", "local.security_secrets", "local.scram_users",
         "local.scram_mechanisms"]
    )  # fmt: skip
    protocol, security_env, security_secrets, scram_users, scram_mechanisms = security
    assert protocol == "SASL_SSL"
    kafka, client, admin = free_ports(3)
    doc = render(
        tmp_path, node_id="1", kafka_port=str(kafka), admin_port=str(admin), client_port=str(client),
        client_protocol=hcl_literal(protocol), security_env=hcl_literal("".join(f"{line}\n" for line in security_env)),
        security_secrets=hcl_literal(security_secrets), scram_users=hcl_literal(scram_users),
        scram_mechanisms=hcl_literal(scram_mechanisms), extra_config="{}",
    )  # fmt: skip
    files = {path: f["content"] for path, f in doc["files"].items()}
    directory = tmp_path / "security"
    config = tmp_path / "strata.toml"
    config.write_text(files["/etc/strata/strata.toml"])
    bootstrap_env = files["/etc/strata/bootstrap.env"]
    # Secrets Manager: one file per secret, named by the ARN's last part.
    store = tmp_path / "secrets"
    store.mkdir()
    for arn, value in secrets.items():
        (store / arn.rsplit("/", 1)[1]).write_text(value)
    stubs = (
        'log() { echo "strata-bootstrap: $*" >&2; }\n'
        'retry() { local n; for n in 1 2 3 4 5; do "$@" && return 0; sleep 1; done; return 1; }\n'
        "chown() { :; }\n"  # the strata user: the test's own
        f'secret() {{ cp "{store}/${{1##*/}}" "$2"; }}\n'
    )
    step = run_bootstrap_step(5, tmp_path, bootstrap_env, stubs, {"/etc/strata/security": str(directory)})
    assert step.returncode == 0, step.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATA_", "AWS_"))}
    strata_env = bootstrap_listeners(tmp_path, bootstrap_env, ip="127.0.0.1",
                                     security_env=files["/etc/strata/security.env"].replace("/etc/strata/security", str(directory)))  # fmt: skip
    assert strata_env["STRATA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://127.0.0.1:{kafka},SASL_SSL://127.0.0.1:{client}"
    env.update(strata_env)
    env.update(STRATA_DATA_DIR=str(tmp_path / "data"), STRATA_TIER_URL=(tmp_path / "tier").as_uri())
    log = tmp_path / "strata.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(strata_bin()), "serve", "--config", str(config)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        try:
            http_get(f"http://127.0.0.1:{admin}/ready", timeout=60)
        except AssertionError:
            pytest.fail(f"strata serve did not get ready with the secured config:\n{log.read_text()[-3000:]}")
        step = run_bootstrap_step(8, tmp_path, bootstrap_env, stubs, {"/usr/local/bin/strata": str(strata_bin())})
        assert step.returncode == 0, f"{step.stderr}\n{log.read_text()[-3000:]}"

        def sasl(user, password):
            return {"bootstrap.servers": f"127.0.0.1:{client}", "security.protocol": "SASL_SSL",
                    "ssl.ca.location": str(certs["ca.pem"]), "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": user, "sasl.password": password}  # fmt: skip

        # The super user creates a topic and writes to it.
        superuser = AdminClient(sasl("admin", passwords["admin"]))
        superuser.create_topics([NewTopic("secured", num_partitions=1, replication_factor=1)])["secured"].result(30)
        producer = Producer({**sasl("admin", passwords["admin"]), "acks": "all"})
        delivered = []
        producer.produce("secured", b"ok", on_delivery=lambda err, msg: delivered.append(err))
        assert producer.flush(30) == 0 and delivered == [None]
        # etl logs in (its credential exists) but no ACL lets it write.
        producer = Producer({**sasl("etl", passwords["etl"]), "acks": "all", "message.timeout.ms": 10000})
        refused = []
        producer.produce("secured", b"no", on_delivery=lambda err, msg: refused.append(err))
        producer.flush(30)
        assert refused and refused[0] is not None and "AUTHORIZATION" in refused[0].name(), refused
        # A wrong password does not log in.
        errors = []
        wrong = AdminClient({**sasl("etl", "wrong"), "error_cb": errors.append})
        with pytest.raises(KafkaException):
            wrong.list_topics(timeout=10)
        wrong.poll(1)  # serves error_cb
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
        # The brokers' PLAINTEXT listener is User:ANONYMOUS, a super user.
        plain = AdminClient({"bootstrap.servers": f"127.0.0.1:{kafka}"})
        assert "secured" in plain.list_topics(timeout=10).topics
    finally:
        terminate(proc)
    # The files the broker read, as step 5 left them.
    for f in directory.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


def test_compose_env_names_are_broker_settings():
    compose = yaml.safe_load((INFRA_DIR / "docker-compose.yml").read_text())
    flags = serve_flags()
    for service in brokers(compose).values():
        for name in service["environment"]:
            if name.startswith("STRATA_"):
                assert name[len("STRATA_") :].lower().replace("_", "-") in flags, name
    instr = dockerfile_instructions(INFRA_DIR / "Dockerfile")
    for keyword, rest in instr:
        if keyword == "ENV":
            for name in re.findall(r"(STRATA_[A-Z_]+)=", rest):
                assert name[len("STRATA_") :].lower().replace("_", "-") in flags, name


def test_docker_healthcheck_probe_answers(broker):
    """The image's HEALTHCHECK (bash /dev/tcp, no curl) against a live /ready."""
    instr = dockerfile_instructions(INFRA_DIR / "Dockerfile")
    (health,) = [rest for k, rest in instr if k == "HEALTHCHECK"]
    cmd = json.loads(health[health.index("CMD") + 3 :].strip())
    host, port = broker["admin"].rsplit(":", 1)
    cmd = [c.replace("127.0.0.1/9644", f"{host}/{port}") for c in cmd]
    http_get(f"http://{broker['admin']}/ready")  # wait until it answers at all
    deadline = time.monotonic() + 30
    while subprocess.run(cmd, timeout=10).returncode != 0:
        assert time.monotonic() < deadline, "the HEALTHCHECK command never succeeded against /ready"
        time.sleep(0.5)
