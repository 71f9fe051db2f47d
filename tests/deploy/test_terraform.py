"""Static checks of terraform/: formatting, and the security invariants of the
strata-cluster module read from its parsed HCL (python-hcl2)."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

import hcl2
import yaml

from conftest import (
    EXAMPLES_DIR,
    MODULE_DIR,
    TERRAFORM_DIR,
    Console,
    ModuleEval,
    TfConfig,
    _normalise,
    hcl_literal,
    one,
    terraform_bin,
    terraform_env,
    tf_dirs,
    variable_type,
)
from test_cloud_init import CLUSTER_INPUTS, DOMAIN, module_stubs

KAFKA, CONTROLLER, ADMIN = 9092, 9093, 9644
BUCKET = "aws_s3_bucket.tier"
OPEN_CIDRS = {"0.0.0.0/0", "::/0"}


def test_terraform_fmt(tmp_path):
    proc = subprocess.run(
        [terraform_bin(), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        env=terraform_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, f"terraform fmt -check found unformatted files:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("directory", tf_dirs(), ids=lambda d: str(d.relative_to(TERRAFORM_DIR)))
def test_every_tf_file_parses(directory):
    cfg = TfConfig(directory)
    assert cfg.files, directory
    assert cfg.resources or cfg.modules, f"{directory} declares nothing"


# --- The tier bucket -------------------------------------------------------------


def _for_bucket(module, rtype):
    found = [body for body in module.of_type(rtype).values() if body.get("bucket") == f"${{{BUCKET}.id}}"]
    assert len(found) == 1, f"expected one {rtype} for {BUCKET}, found {len(found)}"
    return found[0]


def test_module_has_exactly_one_bucket(module):
    assert list(module.of_type("aws_s3_bucket")) == ["tier"]


def test_bucket_encrypted_with_kms(module):
    rule = one(_for_bucket(module, "aws_s3_bucket_server_side_encryption_configuration")["rule"])
    default = one(rule["apply_server_side_encryption_by_default"])
    assert default["sse_algorithm"] == "aws:kms"
    assert default["kms_master_key_id"] == "${local.kms_key_arn}"
    assert rule["bucket_key_enabled"] is True
    # The key is the one passed in, or one the module creates with rotation.
    assert module.locals["kms_key_arn"] == "${var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.tier[0].arn}"
    key = module.of_type("aws_kms_key")["tier"]
    assert key["enable_key_rotation"] is True
    assert key["count"] == "${var.kms_key_arn == null ? 1 : 0}"


def test_bucket_public_access_blocked(module):
    pab = _for_bucket(module, "aws_s3_bucket_public_access_block")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert pab[flag] is True, flag
    ownership = one(_for_bucket(module, "aws_s3_bucket_ownership_controls")["rule"])
    assert ownership["object_ownership"] == "BucketOwnerEnforced"


def test_bucket_versioning_is_a_choice(module):
    versioning = one(_for_bucket(module, "aws_s3_bucket_versioning")["versioning_configuration"])
    assert versioning["status"] == '${var.bucket_versioning ? "Enabled" : "Suspended"}'
    var = module.variables["bucket_versioning"]
    assert var["type"] == "bool" and var["default"] is True


def _policy_doc(module, ref):
    m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", ref)
    assert m, f"policy is not an aws_iam_policy_document: {ref}"
    return module.data[("aws_iam_policy_document", m.group(1))]


def test_bucket_policy_denies_plain_http(module):
    policy = _for_bucket(module, "aws_s3_bucket_policy")
    doc = _policy_doc(module, policy["policy"])
    tls_only = [
        s
        for s in doc["statement"]
        if s["effect"] == "Deny"
        and s["actions"] == ["s3:*"]
        and set(s["resources"]) == {f"${{{BUCKET}.arn}}", f"${{{BUCKET}.arn}}/*"}
        and one(s["principals"]) == {"type": "*", "identifiers": ["*"]}
        and any(
            c == {"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}
            for c in s.get("condition", [])
        )
    ]
    assert len(tls_only) == 1, doc["statement"]


def test_lifecycle_aborts_incomplete_multipart_uploads(module):
    lifecycle = _for_bucket(module, "aws_s3_bucket_lifecycle_configuration")
    aborts = [r for r in lifecycle["rule"] if "abort_incomplete_multipart_upload" in r]
    assert len(aborts) == 1
    rule = aborts[0]
    assert rule["status"] == "Enabled"
    # An empty filter: the rule covers the whole bucket.
    assert rule["filter"] == [{}]
    days = one(rule["abort_incomplete_multipart_upload"])["days_after_initiation"]
    assert days == "${var.abort_incomplete_multipart_upload_days}"
    assert module.variables["abort_incomplete_multipart_upload_days"]["default"] == 1


# --- Encryption elsewhere, instances ---------------------------------------------


def test_volumes_and_logs_encrypted(module):
    for name, vol in module.of_type("aws_ebs_volume").items():
        assert vol["encrypted"] is True and vol["type"] == "gp3", name
        assert vol["kms_key_id"] == "${local.kms_key_arn}", name
    broker = module.of_type("aws_instance")["broker"]
    root = one(broker["root_block_device"])
    assert root["encrypted"] is True and root["kms_key_id"] == "${local.kms_key_arn}"
    for name, group in module.of_type("aws_cloudwatch_log_group").items():
        assert group["kms_key_id"] == "${local.kms_key_arn}", name


def test_instances_private_with_imdsv2(module):
    broker = module.of_type("aws_instance")["broker"]
    assert broker["associate_public_ip_address"] is False
    metadata = one(broker["metadata_options"])
    assert metadata["http_tokens"] == "required"
    assert metadata["http_put_response_hop_limit"] == 1
    assert broker["vpc_security_group_ids"] == ["${aws_security_group.broker.id}"]
    assert broker["iam_instance_profile"] == "${aws_iam_instance_profile.broker.name}"


# --- IAM -------------------------------------------------------------------------

TIER_OBJECTS = "${aws_s3_bucket.tier.arn}/${var.tier_prefix}/*"
S3_OBJECT_ACTIONS = {
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
}


def _role_policy_statements(module):
    policies = module.of_type("aws_iam_role_policy")
    assert policies, "the broker role has no inline policy"
    statements = []
    for body in policies.values():
        assert body["role"] == "${aws_iam_role.broker.id}"
        doc = _policy_doc(module, body["policy"])
        statements.extend(doc["statement"])
        statements.extend(d["statement"]["content"][0] for d in doc.get("dynamic", []) if "statement" in d)
    return statements


def test_iam_is_scoped_to_the_bucket_prefix(module):
    statements = _role_policy_statements(module)
    sids = {s["sid"] for s in statements}
    assert {"ListTierPrefix", "ReadWriteTierObjects", "UseTierKeyThroughS3", "WriteBrokerLogs"} <= sids
    for s in statements:
        assert s["effect"] == "Allow", s
        resources = s["resources"] if isinstance(s["resources"], list) else [s["resources"]]
        assert "*" not in resources, f"{s['sid']} grants on every resource"
        for action in s["actions"]:
            assert "*" not in action, f"{s['sid']} uses a wildcard action {action}"
        if s["sid"] == "ListTierPrefix":
            assert s["actions"] == ["s3:ListBucket"] and resources == [f"${{{BUCKET}.arn}}"]
            cond = one(s["condition"])
            assert cond["variable"] == "s3:prefix" and cond["test"] == "StringLike"
            assert cond["values"] == ["${var.tier_prefix}", "${var.tier_prefix}/*"]
        elif s["sid"] == "ReadWriteTierObjects":
            assert set(s["actions"]) == S3_OBJECT_ACTIONS
            assert resources == [TIER_OBJECTS]
        elif s["sid"] == "UseTierKeyThroughS3":
            assert set(s["actions"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
            assert resources == ["${local.kms_key_arn}"]
            cond = one(s["condition"])
            assert cond["variable"] == "kms:ViaService"
            assert cond["values"] == ["s3.${local.region}.amazonaws.com"]
        elif s["sid"] == "WriteBrokerLogs":
            assert all(a.startswith("logs:") for a in s["actions"])
            assert resources == ["${aws_cloudwatch_log_group.broker.arn}:*"]
        elif s["sid"] == "DownloadStrataBinary":
            assert s["actions"] == ["s3:GetObject"] and resources == ["${local.artifact_s3_arns}"]
        elif s["sid"] == "ReadListenerSecrets":
            assert s["actions"] == ["secretsmanager:GetSecretValue"] and resources == ["${local.secret_arns}"]
        else:
            pytest.fail(f"unexpected statement {s['sid']} in the broker policy")
        # No statement but the tier ones touches the tier bucket.
        if s["sid"] not in ("ListTierPrefix", "ReadWriteTierObjects"):
            assert not any(BUCKET in r for r in resources), s["sid"]


SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/{}-AbC123"


def _dynamic_statements(module, doc_name="broker"):
    doc = module.data[("aws_iam_policy_document", doc_name)]
    return {d["statement"]["content"][0]["sid"]: d["statement"] for d in doc.get("dynamic", []) if "statement" in d}


def test_secrets_readable_only_when_given_and_only_those(module, tmp_path):
    """secretsmanager:GetSecretValue appears in the broker policy only with
    secret ARNs among the inputs, and then on exactly those ARNs."""
    statement = _dynamic_statements(module)["ReadListenerSecrets"]
    assert statement["for_each"] == "${length(local.secret_arns) > 0 ? [1] : []}"
    expressions = [ModuleEval.unwrap(statement["for_each"]), "local.secret_arns"]
    secure = {
        **CLUSTER_INPUTS,
        "tls": {
            "enabled": True,
            "certificate_secret_arn": SECRET.format("cert"),
            "private_key_secret_arn": SECRET.format("key"),
            "client_ca_secret_arn": SECRET.format("ca"),
            "client_auth": "required",
        },
        "sasl": {
            "mechanisms": ["SCRAM-SHA-512", "PLAIN"],
            "scram_users": {"etl": SECRET.format("etl"), "admin": SECRET.format("admin")},
            "plain_users_secret_arn": SECRET.format("plain"),
        },
    }
    inline = {
        **CLUSTER_INPUTS,
        "tls": {"enabled": True},
        "tls_pem": {"certificate": "-----BEGIN CERTIFICATE-----", "private_key": "-----BEGIN PRIVATE KEY-----"},
        "sasl": {"mechanisms": ["SCRAM-SHA-256"]},
    }
    results = {}
    for name, inputs in {"default": CLUSTER_INPUTS, "secure": secure, "inline": inline}.items():
        evaluator = ModuleEval(module, tmp_path / name, inputs, module_stubs(3, 3))
        results[name] = evaluator.eval_json(expressions)
        assert [m for ok, m in evaluator.preconditions() if not ok] == [], name
    assert results["default"] == [[], []]
    assert results["inline"] == [[], []], "inline PEMs need no secret"
    for_each, arns = results["secure"]
    assert for_each == [1]
    assert sorted(arns) == sorted(SECRET.format(n) for n in ("cert", "key", "ca", "plain", "etl", "admin"))
    assert len(arns) == len(set(arns))


def test_only_managed_policy_is_optional_ssm(module):
    attachments = module.of_type("aws_iam_role_policy_attachment")
    assert set(attachments) == {"ssm"}
    ssm = attachments["ssm"]
    assert ssm["policy_arn"].endswith(":iam::aws:policy/AmazonSSMManagedInstanceCore")
    assert ssm["count"] == "${var.enable_ssm ? 1 : 0}"


def test_role_only_assumable_by_ec2(module):
    role = module.of_type("aws_iam_role")["broker"]
    doc = _policy_doc(module, role["assume_role_policy"])
    statement = one(doc["statement"])
    assert statement["actions"] == ["sts:AssumeRole"]
    assert one(statement["principals"]) == {"type": "Service", "identifiers": ["ec2.amazonaws.com"]}


# --- Network ---------------------------------------------------------------------


def test_security_groups_have_no_inline_rules(module):
    for name, sg in module.of_type("aws_security_group").items():
        assert "ingress" not in sg and "egress" not in sg, f"aws_security_group.{name}: use rule resources"


def test_ingress_only_on_strata_ports_from_declared_sources(module):
    rules = module.of_type("aws_vpc_security_group_ingress_rule")
    assert rules
    port_refs = {
        "${local.kafka_port}": KAFKA,
        "${local.controller_port}": CONTROLLER,
        "${local.admin_port}": ADMIN,
        "${local.client_port}": "the clients' listener",
    }
    assert module.locals["kafka_port"] == KAFKA
    assert module.locals["controller_port"] == CONTROLLER
    assert module.locals["admin_port"] == ADMIN
    for name, rule in rules.items():
        assert rule["ip_protocol"] == "tcp", name
        assert rule["description"], name
        if rule["from_port"] == "${each.value}":
            # for_each over {name = port}: every port must be a Strata port.
            ports = set(re.findall(r"local\.(\w+_port)", rule["for_each"]))
            assert ports and all(f"${{local.{p}}}" in port_refs for p in ports), name
        else:
            assert rule["from_port"] == rule["to_port"] and rule["from_port"] in port_refs, name
        assert "cidr_ipv6" not in rule, name
        if "cidr_ipv4" in rule:
            assert rule["cidr_ipv4"] == "${each.value}", f"{name}: literal CIDR"
            assert rule["for_each"] in (
                "${toset(var.client_cidrs)}",
                "${toset(var.admin_cidrs)}",
                "${var.create_load_balancer ? toset(var.client_cidrs) : toset([])}",
            ), name
        else:
            assert rule["referenced_security_group_id"].startswith("${aws_security_group."), name
    # The controller port is open to the cluster's own members only.
    controller = [r for r in rules.values() if r["from_port"] == "${local.controller_port}"]
    assert controller and all(
        r["referenced_security_group_id"] == "${aws_security_group.broker.id}" for r in controller
    )
    # Client networks reach the clients' listener only: with TLS or SASL on,
    # 9092 (PLAINTEXT, a super user under the ACL authorizer) is the members'.
    for name, rule in rules.items():
        if "cidr_ipv4" in rule and rule["for_each"] != "${toset(var.admin_cidrs)}":
            assert rule["from_port"] == "${local.client_port}", name
    kafka = [r for r in rules.values() if r["from_port"] == "${local.kafka_port}"]
    assert kafka and all(r["referenced_security_group_id"] == "${aws_security_group.broker.id}" for r in kafka)


def test_clients_listener_port(module, tmp_path):
    """9092 for clients by default (today's single PLAINTEXT listener), else
    client_listener_port, on the brokers and the load balancer alike."""
    lb = module.of_type("aws_lb_listener")["kafka"]
    group = module.of_type("aws_lb_target_group")["kafka"]
    attachment = module.of_type("aws_lb_target_group_attachment")["kafka"]
    assert lb["port"] == group["port"] == attachment["port"] == "${local.client_port}"
    assert group["lifecycle"] == [{"create_before_destroy": True}]
    pem = {"certificate": "-----BEGIN CERTIFICATE-----", "private_key": "-----BEGIN PRIVATE KEY-----"}
    cases = [
        ({}, ["PLAINTEXT", KAFKA]),
        ({"client_listener_port": 9500}, ["PLAINTEXT", KAFKA]),  # used only once secured
        ({"tls": {"enabled": True}, "tls_pem": pem}, ["SSL", 9094]),
        ({"sasl": {"mechanisms": ["SCRAM-SHA-256"]}, "client_listener_port": 9500}, ["SASL_PLAINTEXT", 9500]),
        ({"tls": {"enabled": True}, "tls_pem": pem, "sasl": {"mechanisms": ["SCRAM-SHA-512"]}}, ["SASL_SSL", 9094]),
    ]
    for i, (inputs, expected) in enumerate(cases):
        evaluator = ModuleEval(module, tmp_path / str(i), {**CLUSTER_INPUTS, **inputs}, module_stubs(3, 3))
        assert evaluator.eval_json(["local.client_protocol", "local.client_port"]) == expected, inputs


def test_no_open_cidr_anywhere_in_ingress(module):
    for name, rule in module.of_type("aws_vpc_security_group_ingress_rule").items():
        assert not OPEN_CIDRS & set(str(v) for v in rule.values()), name
    # Defaults of the ingress CIDR variables open nothing.
    for var in ("client_cidrs", "admin_cidrs"):
        assert module.variables[var]["default"] == [], var
    # Nothing but the egress default and the validations that refuse it names it.
    allowed = {"egress_cidrs", "client_cidrs", "admin_cidrs"}
    others = [module.resources, module.data, module.locals, module.outputs]
    others += [v for n, v in module.variables.items() if n not in allowed]
    assert not any(c in s for s in _values(others) for c in OPEN_CIDRS)


def test_cidr_validation_refuses_the_internet(module, tmp_path):
    cases = [
        ("client_cidrs", '["10.0.0.0/16"]', True),
        ("client_cidrs", "[]", True),
        ("client_cidrs", '["0.0.0.0/0"]', False),
        ("client_cidrs", '["10.0.0.0/8", "0.0.0.0/0"]', False),
        ("client_cidrs", '["not-a-cidr"]', False),
        ("admin_cidrs", '["192.168.1.0/24"]', True),
        ("admin_cidrs", '["0.0.0.0/0"]', False),
    ]
    assert _validations(module, tmp_path, cases) == [ok for _, _, ok in cases]


def test_other_validations(module, tmp_path):
    cases = [
        ("name", '"prod-east"', True),
        ("name", '"Prod"', False),
        ("name", '"a-name-that-is-much-too-long-for-it"', False),
        ("tier_prefix", '"strata"', True),
        ("tier_prefix", '"a/b.c_d-e"', True),
        ("tier_prefix", '"/strata"', False),
        ("tier_prefix", '"strata/"', False),
        ("tier_prefix", '"a//b"', False),
        ("kms_key_arn", "null", True),
        ("kms_key_arn", '"arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"', True),
        ("kms_key_arn", '"alias/strata"', False),
        ("strata_artifact_url", '"s3://my-artifacts/strata/0.1.0/strata"', True),
        ("strata_artifact_url", '"https://example.com/strata"', True),
        ("strata_artifact_url", '"http://example.com/strata"', False),
        ("strata_artifact_url", "\"https://example.com/st'rata\"", False),
        ("strata_artifact_sha256", '"' + "ab" * 32 + '"', True),
        ("strata_artifact_sha256", '"abc"', False),
        ("broker_count", "3", True),
        ("broker_count", "0", False),
        ("broker_count", "1.5", False),
        ("data_volume_iops", "2000", False),
        ("data_volume_throughput_mibps", "1001", False),
        ("log_retention_days", "365", True),
        ("log_retention_days", "100", False),
        ("extra_config", '{"log-segment-bytes" = "536870912"}', True),
        ("extra_config", '{"tier-url" = "\\"s3://x/y\\""}', False),
        ("extra_config", '{"Bad_Key" = "1"}', False),
        ("subnet_ids", "[]", False),
        ("subnet_ids", '["subnet-0a1b"]', True),
        ("dns_domain", '"kafka.internal.example.com"', True),
        ("dns_domain", '"example.com."', False),
        ("default_replication_factor", "null", True),
        ("default_replication_factor", "3", True),
        ("default_replication_factor", "0", False),
        ("default_replication_factor", "1.5", False),
        ("offsets_topic_replication_factor", "null", True),
        ("offsets_topic_replication_factor", "3", True),
        ("offsets_topic_replication_factor", "0", False),
        ("extra_config", '{"controller-quorum-voters" = "\\"1@a:9093\\""}', False),
        ("extra_config", '{"default-replication-factor" = "2"}', False),
    ]
    assert _validations(module, tmp_path, cases) == [ok for _, _, ok in cases]


def test_security_validations(module, tmp_path):
    arn = '"arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-key-AbC123"'
    cert = '"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"'
    key = '"-----BEGIN EC PRIVATE KEY-----\\nMHcC\\n-----END EC PRIVATE KEY-----\\n"'
    cases = [
        ("tls", "{}", True),
        ("tls", '{ enabled = true, client_auth = "required" }', True),
        ("tls", '{ client_auth = "requested" }', True),
        ("tls", '{ client_auth = "sometimes" }', False),
        ("tls", '{ client_auth = "REQUIRED" }', False),
        ("tls", f"{{ enabled = true, certificate_secret_arn = {arn}, private_key_secret_arn = {arn} }}", True),
        ("tls", '{ private_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/key" }', False),
        ("tls", '{ certificate_secret_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/cert" }', False),
        ("tls", '{ client_ca_secret_arn = "strata/ca" }', False),
        ("tls_pem", "{}", True),
        ("tls_pem", f"{{ certificate = {cert}, private_key = {key}, client_ca = {cert} }}", True),
        ("tls_pem", f"{{ certificate = {key} }}", False),
        ("tls_pem", f"{{ private_key = {cert} }}", False),
        ("tls_pem", '{ client_ca = "not a PEM" }', False),
        ("sasl", "{}", True),
        ("sasl", '{ mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] }', True),
        ("sasl", '{ mechanisms = ["GSSAPI"] }', False),
        ("sasl", '{ mechanisms = ["scram-sha-512"] }', False),
        ("sasl", '{ mechanisms = ["SCRAM-SHA-512", "SCRAM-SHA-512"] }', False),
        ("sasl", f'{{ mechanisms = ["SCRAM-SHA-512"], scram_users = {{ admin = {arn}, "etl.batch@acme" = {arn} }} }}', True),
        ("sasl", f'{{ scram_users = {{ "bad user" = {arn} }} }}', False),
        ("sasl", f'{{ scram_users = {{ "a;b" = {arn} }} }}', False),
        ("sasl", '{ scram_users = { admin = "hunter2" } }', False),
        ("sasl", f"{{ mechanisms = [\"PLAIN\"], plain_users_secret_arn = {arn} }}", True),
        ("sasl", '{ plain_users_secret_arn = "arn:aws:s3:::bucket/users.toml" }', False),
        ("client_listener_port", "9094", True),
        ("client_listener_port", "19094", True),
        ("client_listener_port", "9092", False),
        ("client_listener_port", "9093", False),
        ("client_listener_port", "9644", False),
        ("client_listener_port", "80", False),
        ("client_listener_port", "70000", False),
        ("client_listener_port", "9094.5", False),
        ("authorizer", '"none"', True),
        ("authorizer", '"acl"', True),
        ("authorizer", '"ACL"', False),
        ("authorizer", '"simple"', False),
        ("super_users", "[]", True),
        ("super_users", '["User:admin", "User:CN=ops,OU=eng,O=Example"]', True),
        ("super_users", '["admin"]', False),
        ("super_users", '["Group:ops"]', False),
        ("super_users", '["User:a;User:b"]', False),
        ("super_users", '["User:alice smith"]', False),
        ("extra_config", '{"authorizer" = "\\"acl\\""}', False),
        ("extra_config", '{"listeners" = "\\"SSL://0.0.0.0:9094\\""}', False),
        ("extra_config", '{"ssl-key-file" = "\\"/tmp/k\\""}', False),
        ("extra_config", '{"sasl-failed-authentication-delay-ms" = "500"}', True),
    ]
    assert _validations(module, tmp_path, cases) == [ok for _, _, ok in cases]


def _validations(module, tmp_path, cases):
    """Evaluates each variable's validation conditions with terraform console,
    the variable replaced by the case's value converted to the variable's
    type (optional object attributes take their defaults)."""
    variables, expressions = {}, []
    for i, (var, value, _) in enumerate(cases):
        conditions = [v["condition"] for v in module.variables[var].get("validation", [])]
        assert conditions, f"variable {var} has no validation"
        variables[f"v{i}"] = (variable_type(module, var), value)
        exprs = [re.sub(rf"\bvar\.{var}\b", f"var.v{i}", c[2:-1]) for c in conditions]
        expressions.append(" && ".join(f"({e})" for e in exprs))
    return Console(tmp_path, variables=variables).eval_json(expressions)


def test_variables_documented_typed_and_validated(module):
    for name, var in module.variables.items():
        assert var.get("description", "").strip(), f"variable {name} has no description"
        assert var.get("type"), f"variable {name} has no type"
    must_validate = {
        "name", "vpc_id", "subnet_ids", "broker_count", "instance_type", "architecture", "ami_id",
        "data_volume_size_gib", "data_volume_iops", "data_volume_throughput_mibps",
        "strata_artifact_url", "strata_artifact_sha256", "num_partitions", "extra_config",
        "bucket_name", "tier_prefix", "kms_key_arn", "abort_incomplete_multipart_upload_days",
        "client_cidrs", "admin_cidrs", "egress_cidrs", "dns_domain", "log_retention_days",
        "default_replication_factor", "offsets_topic_replication_factor",
        "tls", "tls_pem", "sasl", "client_listener_port", "authorizer", "super_users",
    }  # fmt: skip
    missing = sorted(v for v in must_validate if not module.variables[v].get("validation"))
    assert not missing, f"variables without validation: {missing}"


def test_security_defaults_keep_one_plaintext_listener(module):
    """Off by default: no TLS, no SASL, no authorizer, no super users."""
    variables = module.variables
    assert variables["tls"]["default"] == {} and variables["tls_pem"]["default"] == {}
    assert variables["sasl"]["default"] == {}
    assert "enabled = optional(bool, false)" in variables["tls"]["type"]
    assert 'client_auth = optional(string, "none")' in variables["tls"]["type"]
    assert "mechanisms = optional(list(string), [])" in variables["sasl"]["type"]
    assert variables["authorizer"]["default"] == "none"
    assert variables["super_users"]["default"] == []
    assert variables["allow_everyone_if_no_acl_found"]["default"] is False
    assert variables["client_listener_port"]["default"] == 9094
    # Inline PEMs are sensitive; the rest feeds counts and for_each, which
    # cannot take sensitive values, and holds no secret (ARNs at most).
    assert variables["tls_pem"].get("sensitive") is True
    for name in ("tls", "sasl", "authorizer", "super_users", "client_listener_port"):
        assert not variables[name].get("sensitive"), name
    for name in ("tls", "tls_pem", "sasl"):
        assert variables[name].get("nullable") is False, name


def test_outputs(module):
    required = ("bootstrap_servers", "bucket_name", "bucket_arn", "tier_url", "broker_addresses", "controller_quorum_voters",
                "client_security_protocol")  # fmt: skip
    for name in required:
        assert name in module.outputs, name
    for name, out in module.outputs.items():
        assert out.get("description", "").strip(), f"output {name} has no description"
        # Nothing derived from the PEMs or the secrets is an output.
        value = str(out["value"])
        assert not re.search(r"tls_pem|secret|local\.security_|var\.tls\b|var\.sasl\b", value), name
        assert not out.get("sensitive"), name


def test_client_bootstrap_outputs(module, tmp_path):
    """bootstrap_servers and broker_addresses name the clients' listener."""
    pem = {"certificate": "-----BEGIN CERTIFICATE-----", "private_key": "-----BEGIN PRIVATE KEY-----"}
    stubs = {**module_stubs(3, 3), "aws_lb.bootstrap": [{"dns_name": "prod-nlb.elb.amazonaws.com"}]}
    stubs["aws_instance.broker"] = [{"private_ip": f"10.0.0.{i + 1}"} for i in range(3)]
    outputs = ["bootstrap_servers", "broker_addresses", "client_security_protocol"]
    expressions = [ModuleEval.unwrap(module.outputs[o]["value"]) for o in outputs]
    secure = {"tls": {"enabled": True}, "tls_pem": pem, "sasl": {"mechanisms": ["SCRAM-SHA-512"]}}
    cases = [
        ({}, f"bootstrap.{DOMAIN}:9092", 9092, "PLAINTEXT"),
        (secure, f"bootstrap.{DOMAIN}:9094", 9094, "SASL_SSL"),
        ({**secure, "client_listener_port": 19094, "dns_domain": None, "route53_zone_id": None},
         "prod-nlb.elb.amazonaws.com:19094", 19094, "SASL_SSL"),
        ({**secure, "dns_domain": None, "route53_zone_id": None, "create_load_balancer": False},
         "10.0.0.1:9094,10.0.0.2:9094,10.0.0.3:9094", 9094, "SASL_SSL"),
    ]  # fmt: skip
    for i, (inputs, bootstrap, port, protocol) in enumerate(cases):
        evaluator = ModuleEval(module, tmp_path / str(i), {**CLUSTER_INPUTS, **inputs}, stubs)
        got_bootstrap, addresses, got_protocol = evaluator.eval_json(expressions)
        assert (got_bootstrap, got_protocol) == (bootstrap, protocol), inputs
        assert all(a.endswith(f":{port}") for a in addresses) and len(addresses) == 3, addresses


# --- References (what `terraform validate` would catch, without providers) -------

META_ARGS = {"source", "version", "count", "for_each", "providers", "depends_on"}


def _values(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _values(v)
    elif isinstance(node, list):
        for v in node:
            yield from _values(v)
    elif isinstance(node, str):
        yield node


def _all_expressions(cfg: TfConfig):
    blocks = [cfg.resources, cfg.data, cfg.variables, cfg.outputs, cfg.locals, cfg.modules]
    return [s for b in blocks for s in _values(b)]


def test_module_references_resolve(module):
    exprs = "\n".join(_all_expressions(module))
    for var in set(re.findall(r"\bvar\.(\w+)", exprs)):
        assert var in module.variables, f"var.{var} is not declared"
    for local in set(re.findall(r"\blocal\.(\w+)", exprs)):
        assert local in module.locals, f"local.{local} is not declared"
    for dtype, name in set(re.findall(r"\bdata\.(aws_\w+)\.(\w+)", exprs)):
        assert (dtype, name) in module.data, f"data.{dtype}.{name} is not declared"
    for rtype, name in set(re.findall(r"(?<![.\w])(aws_\w+)\.(\w+)", exprs)):
        assert (rtype, name) in module.resources, f"{rtype}.{name} is not declared"


def test_examples_call_the_module_correctly(module, examples):
    assert set(examples) == {"aws", "localstack"}
    required = {n for n, v in module.variables.items() if "default" not in v}
    for name, example in examples.items():
        calls = [m for m in example.modules.values() if m["source"] == "../../modules/strata-cluster"]
        assert len(calls) == 1, f"examples/{name} must call the module once"
        args = set(calls[0]) - META_ARGS
        assert not args - set(module.variables), f"examples/{name}: unknown inputs {args - set(module.variables)}"
        assert required <= args, f"examples/{name}: missing inputs {required - args}"
        for out in re.findall(r"\bmodule\.strata\.(\w+)", "\n".join(_all_expressions(example))):
            assert out in module.outputs, f"examples/{name} reads missing output {out}"
        for block in example.terraform:
            providers = one(block["required_providers"])
            assert providers["aws"]["source"] == "hashicorp/aws"
        for var in set(re.findall(r"\bvar\.(\w+)", "\n".join(_all_expressions(example)))):
            assert var in example.variables, f"examples/{name}: var.{var} is not declared"


def test_localstack_example_points_at_localstack(examples):
    providers = dict(examples["localstack"].providers)
    aws = providers["aws"]
    endpoints = one(aws["endpoints"])
    for service in ("s3", "iam", "kms", "ec2", "elbv2", "logs", "sts", "ssm", "route53"):
        assert endpoints.get(service) == "${var.localstack_endpoint}", service
    assert aws["s3_use_path_style"] is True
    assert examples["localstack"].variables["localstack_endpoint"]["default"] == "http://localhost:4566"


# --- Preconditions and the examples, evaluated with the module's own expressions --


_PEM = {"certificate": "-----BEGIN CERTIFICATE-----", "private_key": "-----BEGIN PRIVATE KEY-----"}
_TLS_ARNS = {"enabled": True, "certificate_secret_arn": SECRET.format("cert"), "private_key_secret_arn": SECRET.format("key")}
_SCRAM = {"mechanisms": ["SCRAM-SHA-512"], "scram_users": {"admin": SECRET.format("admin")}}
SECURITY_PRECONDITION_CASES = [
    ({**CLUSTER_INPUTS, "tls": _TLS_ARNS}, True),
    ({**CLUSTER_INPUTS, "tls": {"enabled": True}, "tls_pem": _PEM}, True),
    ({**CLUSTER_INPUTS, "tls": {"enabled": True}}, False),  # no certificate
    ({**CLUSTER_INPUTS, "tls": {"enabled": True}, "tls_pem": {"certificate": _PEM["certificate"]}}, False),  # no key
    ({**CLUSTER_INPUTS, "tls": _TLS_ARNS, "tls_pem": _PEM}, False),  # two sources
    ({**CLUSTER_INPUTS, "tls": {**_TLS_ARNS, "enabled": False}}, False),  # given, not used
    ({**CLUSTER_INPUTS, "tls_pem": _PEM}, False),
    ({**CLUSTER_INPUTS, "tls": {"client_auth": "required"}}, False),
    ({**CLUSTER_INPUTS, "tls": {**_TLS_ARNS, "client_auth": "required"}}, False),  # no client CA
    ({**CLUSTER_INPUTS, "tls": {**_TLS_ARNS, "client_auth": "required", "client_ca_secret_arn": SECRET.format("ca")}}, True),
    ({**CLUSTER_INPUTS, "tls": {**_TLS_ARNS, "client_auth": "requested"}, "tls_pem": {"client_ca": _PEM["certificate"]}}, True),
    ({**CLUSTER_INPUTS, "tls": {**_TLS_ARNS, "client_ca_secret_arn": SECRET.format("ca")},
      "tls_pem": {"client_ca": _PEM["certificate"]}}, False),  # two sources
    ({**CLUSTER_INPUTS, "sasl": _SCRAM}, True),  # SASL_PLAINTEXT
    ({**CLUSTER_INPUTS, "sasl": {"mechanisms": ["PLAIN"]}}, False),  # no users file
    ({**CLUSTER_INPUTS, "sasl": {"mechanisms": ["PLAIN"], "plain_users_secret_arn": SECRET.format("plain")}}, True),
    ({**CLUSTER_INPUTS, "sasl": {"mechanisms": ["SCRAM-SHA-256"], "plain_users_secret_arn": SECRET.format("plain")}}, False),
    ({**CLUSTER_INPUTS, "sasl": {"mechanisms": ["PLAIN"], "plain_users_secret_arn": SECRET.format("plain"),
                                 "scram_users": {"admin": SECRET.format("admin")}}}, False),  # no SCRAM mechanism
    ({**CLUSTER_INPUTS, "tls": _TLS_ARNS, "sasl": _SCRAM, "authorizer": "acl", "super_users": ["User:admin"]}, True),
    ({**CLUSTER_INPUTS, "sasl": _SCRAM, "authorizer": "acl"}, True),
    ({**CLUSTER_INPUTS, "authorizer": "acl"}, False),  # every client would be User:ANONYMOUS
    ({**CLUSTER_INPUTS, "tls": _TLS_ARNS, "authorizer": "acl"}, False),  # so would TLS clients without certificates
    ({**CLUSTER_INPUTS, "tls": {**_TLS_ARNS, "client_auth": "requested", "client_ca_secret_arn": SECRET.format("ca")},
      "authorizer": "acl"}, False),
    ({**CLUSTER_INPUTS, "tls": {**_TLS_ARNS, "client_auth": "required", "client_ca_secret_arn": SECRET.format("ca")},
      "authorizer": "acl", "super_users": ["User:CN=ops,O=Example"]}, True),
    ({**CLUSTER_INPUTS, "sasl": _SCRAM, "super_users": ["User:admin"]}, False),  # super users without the authorizer
    ({**CLUSTER_INPUTS, "sasl": _SCRAM, "allow_everyone_if_no_acl_found": True}, False),
    ({**CLUSTER_INPUTS, "sasl": _SCRAM, "authorizer": "acl", "allow_everyone_if_no_acl_found": True}, True),
]  # fmt: skip


def test_broker_preconditions(module, tmp_path):
    base = dict(CLUSTER_INPUTS)
    alone = {**base, "broker_count": 1, "route53_zone_id": None, "dns_domain": None}
    cases = [
        ({**base}, True),  # three brokers, the default, with their zone
        ({**base, "broker_count": 5, "default_replication_factor": 5}, True),
        (alone, True),
        ({**base, "route53_zone_id": None, "dns_domain": None}, False),  # a cluster needs names
        ({**base, "broker_count": 2, "route53_zone_id": None}, False),
        ({**base, "dns_domain": None}, False),  # a zone and its domain go together
        ({**alone, "dns_domain": DOMAIN}, False),
        ({**alone, "route53_zone_id": "Z0123456789ABCDEFGHIJ", "dns_domain": DOMAIN}, True),
        ({**base, "default_replication_factor": 4}, False),  # more replicas than brokers
        ({**alone, "default_replication_factor": 1}, True),
        *SECURITY_PRECONDITION_CASES,
    ]
    for i, (inputs, ok) in enumerate(cases):
        count = inputs.get("broker_count", 3)
        results = ModuleEval(module, tmp_path / str(i), inputs, module_stubs(count, 3)).preconditions()
        failed = [message for holds, message in results if not holds]
        assert (not failed) == ok, f"case {i} {inputs}: {failed or 'every precondition holds'}"


def test_aws_example_is_a_valid_three_broker_cluster(module, examples, tmp_path):
    """The aws example with terraform.tfvars.example: each input passes the
    module's validations and preconditions, and three brokers share one
    voter list."""
    example = examples["aws"]
    tfvars = _normalise(hcl2.load((EXAMPLES_DIR / "aws" / "terraform.tfvars.example").open()))
    required = {n for n, v in example.variables.items() if "default" not in v}
    assert required <= set(tfvars), f"terraform.tfvars.example lacks {required - set(tfvars)}"
    (call,) = example.modules.values()
    inputs = {}
    for arg, value in call.items():
        if arg in META_ARGS:
            continue
        ref = re.fullmatch(r"\$\{var\.(\w+)\}", value) if isinstance(value, str) else None
        if ref:
            value = tfvars.get(ref.group(1), example.variables[ref.group(1)].get("default"))
        assert "${" not in str(value), f"{arg} = {value}: not a literal or an example variable"
        inputs[arg] = value
    assert inputs["broker_count"] == 3
    cases = [(n, hcl_literal(v), True) for n, v in inputs.items() if module.variables[n].get("validation")]
    assert _validations(module, tmp_path / "validations", cases) == [True] * len(cases), cases
    evaluator = ModuleEval(module, tmp_path / "module", inputs, module_stubs(3, len(inputs["subnet_ids"])))
    assert [m for ok, m in evaluator.preconditions() if not ok] == []
    voters = set()
    for i, text in enumerate(evaluator.user_data()):
        doc = yaml.safe_load(text)
        config = tomllib.loads(next(f["content"] for f in doc["write_files"] if f["path"] == "/etc/strata/strata.toml"))
        assert config["node-id"] == i + 1
        voters.add(config["controller-quorum-voters"])
    domain = tfvars["dns_domain"]
    assert voters == {f"1@broker-1.{domain}:9093,2@broker-2.{domain}:9093,3@broker-3.{domain}:9093"}


def test_localstack_example_is_a_named_cluster(module, examples):
    example = examples["localstack"]
    (call,) = example.modules.values()
    assert call["broker_count"] == 3
    # The precondition for several brokers: a zone and its domain.
    zone = example.of_type("aws_route53_zone")["cluster"]
    assert call["route53_zone_id"] == "${aws_route53_zone.cluster.zone_id}"
    assert zone["name"] == call["dns_domain"] == "${local.dns_domain}"
    assert one(zone["vpc"])["vpc_id"] == "${data.aws_vpc.default.id}", "a private zone of the brokers' VPC"
    # The zone id is known only after apply; the module's record counts must
    # not depend on it, or planning fails ("count ... cannot be determined").
    for name, record in module.of_type("aws_route53_record").items():
        counted = set(re.findall(r"local\.(\w+)", record["count"]))
        assert "route53_zone_id" not in record["count"] + "".join(str(module.locals[c]) for c in counted), name


def test_templatefile_inputs_match_template(module):
    """brokers.tf passes exactly the names the cloud-init template uses."""
    text = (MODULE_DIR / "brokers.tf").read_text()
    call = re.search(r"templatefile\([^,]+,\s*\{(.*?)\n\s*\}\)\)", text, re.S)
    assert call
    passed = set(re.findall(r"^\s*(\w+)\s*=", call.group(1), re.M))
    template = (MODULE_DIR / "templates" / "cloud-init.yaml.tftpl").read_text()
    used = set(re.findall(r"\$\{\s*(?:indent\(\d+,\s*)?(\w+)", template))
    used |= set(re.findall(r"%\{\s*for\s+\w+,\s*\w+\s+in\s+(\w+)", template))
    used |= set(re.findall(r"%\{\s*if\s+(\w+)", template))
    used |= set(re.findall(r"=\s*([a-z_]+)\s*$", template, re.M))  # inside jsonencode({...})
    loop_vars = {v for pair in re.findall(r"%\{\s*for\s+(\w+),\s*(\w+)\s+in", template) for v in pair}
    used -= {"jsonencode", "indent"} | loop_vars
    assert passed == used, f"passed but unused: {passed - used}; used but not passed: {used - passed}"


def test_no_provider_or_backend_credentials_in_module(module):
    assert not module.providers, "a reusable module declares no provider block"
    text = module.text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert EXAMPLES_DIR.is_dir()


def test_deploy_guide_documents_every_variable_and_output(module):
    guide = (TERRAFORM_DIR.parent / "docs" / "deploy.md").read_text()
    for name in list(module.variables) + list(module.outputs):
        assert f"`{name}`" in guide, f"docs/deploy.md does not mention `{name}`"
