"""checkov over terraform/ and infra/: zero failed checks, and every skip is
an inline `#checkov:skip=CKV_...:reason` that checkov actually applied.

checkov runs from its own venv (tests/deploy/requirements-checkov.txt);
CHECKOV names the binary, default .venv-checkov/bin/checkov.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import INFRA_DIR, MODULE_DIR, ROOT, TERRAFORM_DIR

SKIP_RE = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def checkov_bin() -> str:
    path = os.environ.get("CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    if not Path(path).exists():
        pytest.fail(
            f"checkov not found at {path}: python3 -m venv .venv-checkov && "
            ".venv-checkov/bin/pip install -r tests/deploy/requirements-checkov.txt"
        )
    return path


def run_checkov(directory: Path, framework: str) -> dict:
    proc = subprocess.run(
        [
            checkov_bin(), "-d", str(directory), "--framework", framework,
            "--output", "json", "--compact", "--skip-download",
        ],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert proc.returncode in (0, 1), f"checkov crashed:\n{proc.stderr[-4000:]}"
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert len(reports) == 1 and reports[0]["check_type"] == framework, proc.stdout[:2000]
    return reports[0]


def inline_skips(directory: Path, pattern: str) -> list[tuple[Path, str, str]]:
    found = []
    for path in directory.rglob(pattern):
        for m in SKIP_RE.finditer(path.read_text()):
            found.append((path, m.group(1), (m.group(2) or "").strip()))
    return found


@pytest.mark.parametrize(
    "directory,framework,pattern",
    [(TERRAFORM_DIR, "terraform", "*.tf"), (INFRA_DIR, "dockerfile", "Dockerfile*")],
    ids=["terraform", "dockerfile"],
)
def test_checkov_passes(directory, framework, pattern):
    report = run_checkov(directory, framework)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']} — {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in report["results"]["failed_checks"]
    ]
    print(f"checkov {framework}: {summary}")
    assert summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 0, summary
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)

    # Every skip has a reason, and every inline skip was used by checkov (a
    # stale skip would hide a check that no longer applies, or a typo).
    written = inline_skips(directory, pattern)
    for path, check, reason in written:
        assert len(reason) >= 20, f"{path}: skip of {check} needs a reason"
    applied = {c["check_id"] for c in report["results"]["skipped_checks"]}
    for c in report["results"]["skipped_checks"]:
        assert c["check_result"].get("suppress_comment", "").strip(), f"{c['check_id']} skipped without a reason"
    unused = sorted({check for _, check, _ in written} - applied)
    assert not unused, f"inline skips checkov never applied: {unused}"


SECURED_CALL = """
module "strata" {
  source                 = "./modules/strata-cluster"
  name                   = "prod"
  vpc_id                 = "vpc-0123456789abcdef0"
  subnet_ids             = ["subnet-0a", "subnet-0b", "subnet-0c"]
  strata_artifact_url    = "s3://acme-artifacts/strata/0.1.0/strata"
  strata_artifact_sha256 = "abababababababababababababababababababababababababababababababab"
  route53_zone_id        = "Z0123456789ABCDEFGHIJ"
  dns_domain             = "kafka.internal.example.com"
  client_cidrs           = ["10.0.0.0/16"]

  tls = {
    enabled                = true
    certificate_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-cert-AbC123"
    private_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-key-AbC123"
  }
  sasl = {
    mechanisms  = ["SCRAM-SHA-512"]
    scram_users = { admin = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/admin-AbC123" }
  }
  authorizer  = "acl"
  super_users = ["User:admin"]
}
"""


def test_checkov_passes_with_listener_security(tmp_path):
    """The module called with TLS, SCRAM users and the ACL authorizer (the
    secrets statement of the broker policy, the clients' port in the security
    groups and the load balancer): still no failed check."""
    shutil.copytree(MODULE_DIR, tmp_path / "modules" / "strata-cluster")
    (tmp_path / "main.tf").write_text(SECURED_CALL)
    report = run_checkov(tmp_path, "terraform")
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['check_name']} — {c['resource']}" for c in report["results"]["failed_checks"]]
    assert summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 0, summary
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    # The module was evaluated with these inputs: its resources are in the report.
    resources = {c["resource"] for c in report["results"]["passed_checks"]}
    assert any(r.startswith("module.strata.aws_iam_role_policy") for r in resources), sorted(resources)[:20]
