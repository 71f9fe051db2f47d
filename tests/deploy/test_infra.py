"""Static checks of infra/: Dockerfile, docker-compose, Prometheus, Grafana
and the systemd unit. Docker cannot run here, so the files are parsed and
cross-checked against each other and against the metric catalog."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import DASHBOARDS_DIR, INFRA_DIR, MODULE_DIR, ROOT, dashboard_queries
from metrics_catalog import CATALOG, HISTOGRAM, TARGET_LABELS, labels_in, metrics_in, series_names

KAFKA, ADMIN = 9092, 9644


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((INFRA_DIR / "docker-compose.yml").read_text())


# --- Dockerfile ------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_multi_stage_small_non_root():
    instr = dockerfile_instructions(INFRA_DIR / "Dockerfile")
    froms = [rest for k, rest in instr if k == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert froms[0].startswith("rust:") and froms[0].endswith(" AS build")
    assert re.match(r"debian:\$\{DEBIAN_RELEASE\}-slim\b", froms[-1]), "runtime on a slim base"
    for image in froms:
        assert ":latest" not in image
    final = instr[max(i for i, (k, _) in enumerate(instr) if k == "FROM") :]
    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage runs as a non-root user"
    assert any(k == "COPY" and rest.startswith("--from=build ") for k, rest in final)
    # Only the binary and CA certificates make it into the runtime image.
    runtime_run = " ".join(rest for k, rest in final if k == "RUN")
    assert "--no-install-recommends ca-certificates" in runtime_run
    assert "rm -rf /var/lib/apt/lists/*" in runtime_run
    exposed = {int(p) for k, rest in final if k == "EXPOSE" for p in rest.split()}
    assert {KAFKA, ADMIN} <= exposed
    assert any(k == "HEALTHCHECK" and "/ready" in rest for k, rest in final)
    entry = [json.loads(rest) for k, rest in final if k == "ENTRYPOINT"]
    cmd = [json.loads(rest) for k, rest in final if k == "CMD"]
    assert entry == [["/usr/local/bin/strata"]] and cmd == [["serve"]]
    # Every path the build copies exists.
    build = instr[: [i for i, (k, _) in enumerate(instr) if k == "FROM"][1]]
    for k, rest in build:
        if k == "COPY" and not rest.startswith("--"):
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: missing"


def test_dockerignore_keeps_the_context_small():
    ignore = (INFRA_DIR / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*", "ignore everything by default"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"Cargo.toml", "Cargo.lock", "src", "tiering"}


# --- docker-compose --------------------------------------------------------------


NET = "strata-net"


def brokers(compose) -> dict[str, dict]:
    """The broker services, by name: those built from infra/Dockerfile."""
    found = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert found, "no broker service builds infra/Dockerfile"
    return found


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def parse_voters(voters: str) -> dict[int, tuple[str, int]]:
    parsed = {}
    for item in voters.split(","):
        node_id, _, address = item.strip().partition("@")
        assert int(node_id) not in parsed, f"node id {node_id} twice in {voters}"
        parsed[int(node_id)] = host_port(address)
    return parsed


def test_compose_services(compose):
    services = compose["services"]
    assert {NET, "strata-1", "strata-2", "strata-3", "minio", "minio-init", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        if "image" in svc and "build" not in svc:
            image = svc["image"]
            assert re.search(r":[^/]+$", image) and not image.endswith(":latest"), f"{name}: pin {image}"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish {port} on loopback only"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA_DIR / source).exists(), f"{name}: mounts missing {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
        mode = svc.get("network_mode")
        if mode is not None:
            # Compose refuses ports or networks on a service in another's namespace.
            assert mode.startswith("service:") and mode[len("service:") :] in services, f"{name}: {mode}"
            assert "ports" not in svc and "networks" not in svc, f"{name} publishes through {mode}"


def test_compose_brokers_use_the_s3_service(compose):
    services = compose["services"]
    for name, strata in brokers(compose).items():
        build = strata["build"]
        assert (INFRA_DIR / build["context"] / build["dockerfile"]).resolve() == (INFRA_DIR / "Dockerfile").resolve()
        env = strata["environment"]
        tier = re.fullmatch(r"s3://([a-z0-9.-]+)/(.+)", env["STRATA_TIER_URL"])
        assert tier, env["STRATA_TIER_URL"]
        # minio-init creates that bucket before the broker starts.
        assert services["minio-init"]["entrypoint"][-1] == f"local/{tier.group(1)}", name
        assert strata["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", name
        endpoint = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", env["AWS_ENDPOINT_URL"])
        assert endpoint and endpoint.group(1) in services, name
        assert env["AWS_ALLOW_HTTP"] == "true", "object_store refuses http:// endpoints without it"
        minio_env = services["minio"]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"], name
    # One tier for the cluster: the same bucket and prefix on every broker.
    tiers = {svc["environment"]["STRATA_TIER_URL"] for svc in brokers(compose).values()}
    assert len(tiers) == 1, tiers


def test_compose_three_brokers_form_one_cluster(compose):
    services = compose["services"]
    nodes = {int(svc["environment"]["STRATA_NODE_ID"]): (name, svc) for name, svc in brokers(compose).items()}
    assert sorted(nodes) == [1, 2, 3], "node ids 1, 2 and 3, each once"
    # The same voter list on every broker, naming each broker's controller listener.
    voter_lists = {svc["environment"]["STRATA_CONTROLLER_QUORUM_VOTERS"] for _, svc in nodes.values()}
    assert len(voter_lists) == 1, f"the brokers disagree on the voters: {voter_lists}"
    voters = parse_voters(voter_lists.pop())
    assert sorted(voters) == sorted(nodes)
    used_ports: list[int] = []
    published = {p.split(":", 1)[1] for p in services[NET]["ports"]}
    image_dir = "/var/lib/strata"
    volumes = []
    for node_id, (name, svc) in nodes.items():
        env = svc["environment"]
        # All brokers live in the namespace of strata-net, so loopback
        # addresses reach one another and each needs ports of its own.
        assert svc["network_mode"] == f"service:{NET}", name
        controller = host_port(env["STRATA_CONTROLLER_LISTEN"])
        assert voters[node_id] == controller and controller[0] == "127.0.0.1", (name, controller)
        kafka = host_port(env["STRATA_LISTEN"])
        admin = host_port(env["STRATA_ADMIN_LISTEN"])
        # Published ports reach the namespace's external interface, so the
        # client listeners bind every address.
        assert kafka[0] == "0.0.0.0" and admin[0] == "0.0.0.0", name
        # Other brokers (followers fetch from the leader there) and clients
        # on the host both reach the advertised address.
        assert env["STRATA_ADVERTISED_LISTENER"] == f"127.0.0.1:{kafka[1]}", name
        assert {f"{kafka[1]}:{kafka[1]}", f"{admin[1]}:{admin[1]}"} <= published, f"{name}: not published"
        used_ports += [kafka[1], admin[1], controller[1]]
        (volume,) = svc["volumes"]
        source, target = volume.split(":")[:2]
        assert target == image_dir, name
        volumes.append(source)
        # The healthcheck asks this broker's admin port, not the image's 9644.
        health = " ".join(svc["healthcheck"]["test"])
        assert "/ready" in health and "$${STRATA_ADMIN_LISTEN##*:}" in health, name
        assert svc["depends_on"][NET]["condition"] == "service_started", name
    assert len(used_ports) == len(set(used_ports)), f"brokers share a port: {sorted(used_ports)}"
    assert len(volumes) == len(set(volumes)), f"brokers share a data volume: {volumes}"
    assert {KAFKA, ADMIN} <= set(used_ports), "broker 1 keeps the usual ports"
    # strata-net publishes the brokers' client and admin ports and nothing else.
    assert len(published) == 2 * len(nodes)
    # Dockerfile's STRATA_DATA_DIR is the directory each volume is mounted on.
    env = dict(re.findall(r"(STRATA_\w+)=(\S+)", (INFRA_DIR / "Dockerfile").read_text()))
    assert env["STRATA_DATA_DIR"] == image_dir


def test_prometheus_scrapes_every_broker(compose):
    prom = yaml.safe_load((INFRA_DIR / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "strata")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [host_port(t) for sc in job["static_configs"] for t in sc["targets"]]
    names = {NET, *compose["services"][NET]["networks"]["default"]["aliases"]}
    assert all(host in names for host, _ in targets), f"{targets}: not names of {NET}"
    admin_ports = sorted(host_port(b["environment"]["STRATA_ADMIN_LISTEN"])[1] for b in brokers(compose).values())
    assert sorted(port for _, port in targets) == admin_ports, "one target per broker, at its admin port"
    # strata-2:9744 is broker strata-2's admin port: the names read as the brokers they scrape.
    admin_of = {name: host_port(b["environment"]["STRATA_ADMIN_LISTEN"])[1] for name, b in brokers(compose).items()}
    for host, port in targets:
        assert admin_of.get(host) == port, f"target {host}:{port} is not broker {host}'s admin port"
    assert set(brokers(compose)) <= set(compose["services"]["prometheus"]["depends_on"])
    mounts = {v.split(":")[1] for v in compose["services"]["prometheus"]["volumes"]}
    for rule_file in prom["rule_files"]:
        assert rule_file in mounts, f"{rule_file} is not mounted into prometheus"


def test_grafana_provisioning(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("."))
    ds = yaml.safe_load((INFRA_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((INFRA_DIR / "grafana/provisioning/dashboards/strata.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboards"] == path
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/") and (DASHBOARDS_DIR / Path(home).name).exists()


# --- Dashboard -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard():
    return json.loads((DASHBOARDS_DIR / "strata.json").read_text())


def test_dashboard_structure(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for p in dashboard["panels"]:
        grid = p["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"panel {p['title']} queries nothing"
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}"
            # Every panel honours the broker selector.
            for metric in metrics_in(t["expr"]):
                assert re.search(rf'{metric}\{{[^}}]*instance=~"\$instance"', t["expr"]), (p["title"], metric)


def test_dashboard_covers_the_issue(dashboard):
    """Throughput, latency, lag, tiering lag and cache each have a panel."""
    used = set().union(*(metrics_in(e) for _, e in dashboard_queries()))
    for metric in (
        "strata_topic_bytes_in_total",
        "strata_topic_bytes_out_total",
        "strata_request_duration_seconds_bucket",
        "strata_consumer_group_lag",
        "strata_tier_copy_lag_bytes",
        "strata_tier_cache_hits_total",
        "strata_tier_cache_misses_total",
        "strata_tier_cache_size_bytes",
        "strata_tier_request_duration_seconds_bucket",
    ):
        assert metric in used, f"no panel shows {metric}"
    # And every exported metric appears somewhere.
    families = {series_names()[m] for m in used if m in series_names()}
    assert families == set(CATALOG), f"metrics no panel shows: {set(CATALOG) - families}"


def test_queries_use_catalog_metrics_and_labels():
    names = series_names()
    queries = dashboard_queries()
    assert len(queries) > 30
    for where, expr in queries:
        used = metrics_in(expr)
        unknown = used - set(names)
        assert not unknown, f"{where}: {sorted(unknown)} is not exported by /metrics"
        allowed = set(TARGET_LABELS)
        for metric in used:
            kind, labels = CATALOG[names[metric]]
            allowed |= labels
            if kind == HISTOGRAM and metric.endswith("_bucket"):
                allowed.add("le")
        bad = labels_in(expr) - allowed
        assert not bad, f"{where}: labels {sorted(bad)} are not on {sorted(used)}"
        # Counters are read as rates, never as raw totals.
        for metric in used:
            if metric.endswith(("_total", "_bucket", "_sum", "_count")) and where.startswith("strata.json: panel"):
                assert re.search(rf"(rate|increase)\([^()]*{metric}", expr), f"{where}: {metric} without rate()"


def test_alert_rules_parse():
    alerts = yaml.safe_load((INFRA_DIR / "prometheus" / "alerts.yml").read_text())
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    assert rules
    for r in rules:
        assert r["alert"] and r["expr"] and r["labels"]["severity"] in ("warning", "critical")


# --- systemd ---------------------------------------------------------------------

UNIT = INFRA_DIR / "systemd" / "strata.service"


def test_systemd_unit_is_the_one_terraform_installs():
    assert UNIT.read_bytes() == (MODULE_DIR / "files" / "strata.service").read_bytes(), (
        "terraform/modules/strata-cluster/files/strata.service must be a copy of infra/systemd/strata.service"
    )


def test_systemd_unit_contents():
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["ExecStart"] == "/usr/local/bin/strata serve --config /etc/strata/strata.toml"
    assert service["User"] == "strata" and service["Group"] == "strata"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert service["ReadWritePaths"] == "/var/lib/strata"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert int(service["LimitNOFILE"]) >= 65536
    assert unit["Unit"]["RequiresMountsFor"] == "/var/lib/strata"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart's binary exists; point it at one that does.
    unit = tmp_path / "strata.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/strata", "/bin/true"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if str(unit) in line]
    assert proc.returncode == 0 and not complaints, "\n".join(complaints) or proc.stderr
