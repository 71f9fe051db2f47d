"""Shared helpers for the deployment checks (terraform/, infra/).

Terraform's providers cannot be downloaded where these tests run, so nothing
here calls `terraform init`. HCL is parsed with python-hcl2; expressions that
need Terraform's own functions (variable validations, the cloud-init
template) are evaluated with `terraform console` in a scratch directory that
declares no provider, which needs no init.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "terraform"
MODULE_DIR = TERRAFORM_DIR / "modules" / "strata-cluster"
EXAMPLES_DIR = TERRAFORM_DIR / "examples"
INFRA_DIR = ROOT / "infra"


def terraform_bin() -> str:
    found = os.environ.get("TERRAFORM") or shutil.which("terraform")
    if not found:
        pytest.fail("terraform is not on PATH (set TERRAFORM=/path/to/terraform)")
    return found


def terraform_env(tmp: Path) -> dict[str, str]:
    """An environment that reads no user CLI config and phones nowhere."""
    cfg = tmp / "terraformrc"
    cfg.write_text("")
    env = dict(os.environ)
    env.update(TF_CLI_CONFIG_FILE=str(cfg), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1")
    return env


def _unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def _normalise(node):
    """python-hcl2 8 keeps the quotes of string literals and labels and marks
    blocks with __is_block__; strip both so tests compare plain values."""
    if isinstance(node, dict):
        return {
            _unquote(k): _normalise(v)
            for k, v in node.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return _unquote(node)


class TfConfig:
    """The blocks of one Terraform module (all .tf files of a directory)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files = sorted(directory.glob("*.tf"))
        self.resources: dict[tuple[str, str], dict] = {}
        self.data: dict[tuple[str, str], dict] = {}
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: dict[str, object] = {}
        self.modules: dict[str, dict] = {}
        self.terraform: list[dict] = []
        self.providers: list[tuple[str, dict]] = []
        for path in self.files:
            with path.open() as f:
                doc = _normalise(hcl2.load(f))
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        self.resources[(rtype, name)] = body
            for block in doc.get("data", []):
                for dtype, named in block.items():
                    for name, body in named.items():
                        self.data[(dtype, name)] = body
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("output", []):
                self.outputs.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("module", []):
                self.modules.update(block)
            self.terraform.extend(doc.get("terraform", []))
            for block in doc.get("provider", []):
                self.providers.extend(block.items())

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def text(self) -> str:
        return "\n".join(p.read_text() for p in self.files)


def tf_dirs() -> list[Path]:
    """Every directory under terraform/ that holds .tf files."""
    return sorted({p.parent for p in TERRAFORM_DIR.rglob("*.tf") if ".terraform" not in p.parts})


def one(block):
    """A nested block parsed as a one-element list, as python-hcl2 returns it."""
    assert isinstance(block, list) and len(block) == 1, block
    return block[0]


class Console:
    """Evaluates expressions with `terraform console` in a directory that
    declares only the given locals (no provider, so no init). Piped input is
    read as one expression, so all of them go into one local.

    `variables` ({name: (type, value as HCL)}) are declared as typed input
    variables and set in terraform.tfvars, so that Terraform converts each
    value to its type as it does for a module's inputs (an object's optional
    attributes get their defaults)."""

    def __init__(self, tmp: Path, locals_hcl: str = "", variables: dict[str, tuple[str, str]] | None = None):
        self.tmp = tmp
        self.dir = tmp / "console"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.locals_hcl = locals_hcl
        self.variables = variables or {}

    def eval_json(self, expressions: list[str]) -> list[object]:
        joined = ",\n".join(f"    {e}" for e in expressions)
        declared = "".join(
            f'variable "{name}" {{\n  type    = {type_}\n  default = null\n}}\n'
            for name, (type_, _) in self.variables.items()
        )
        (self.dir / "main.tf").write_text(
            f"{declared}locals {{\n{self.locals_hcl}\n  results__ = [\n{joined}\n  ]\n}}\n"
        )
        (self.dir / "terraform.tfvars").write_text(
            "".join(f"{name} = {value}\n" for name, (_, value) in self.variables.items())
        )
        proc = subprocess.run(
            [terraform_bin(), "console", "-no-color"],
            cwd=self.dir,
            input="jsonencode(local.results__)\n",
            capture_output=True,
            text=True,
            env=terraform_env(self.tmp),
            timeout=120,
        )
        assert proc.returncode == 0, f"terraform console failed:\n{proc.stderr}\n{proc.stdout}"
        results = json.loads(json.loads(proc.stdout))
        assert len(results) == len(expressions), proc.stdout
        return results


def hcl_literal(value) -> str:
    """A Python value (as python-hcl2 or a test gives it) as an HCL literal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value).replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list):
        return "[" + ", ".join(hcl_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {hcl_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no HCL literal for {value!r}")


def variable_type(module: TfConfig, name: str) -> str:
    """A module variable's type constraint as HCL, e.g. list(string)."""
    declared = module.variables[name].get("type")
    assert declared, f"variable {name} has no type"
    return declared[2:-1] if declared.startswith("${") and declared.endswith("}") else declared


class ModuleEval:
    """Evaluates the strata-cluster module's own expressions for given inputs
    with `terraform console`, no provider: its variables become typed input
    variables with the inputs (else their defaults), converted to their types
    as Terraform converts a module's inputs, and the data sources and resource
    attributes those expressions read become locals with stand-in values
    (`stubs`, keyed like "aws_ebs_volume.data" or "data.aws_region.current").
    Only the module's locals an expression needs are copied, rewritten."""

    def __init__(self, module: TfConfig, tmp: Path, inputs: dict, stubs: dict):
        self.module = module
        self.tmp = tmp
        self.stubs = stubs
        missing = [n for n, v in module.variables.items() if "default" not in v and n not in inputs]
        assert not missing, f"required module inputs missing: {missing}"
        unknown = set(inputs) - set(module.variables)
        assert not unknown, f"not inputs of the module: {unknown}"
        self.vars = {n: inputs.get(n, v.get("default")) for n, v in module.variables.items()}

    @staticmethod
    def rewrite(text: str, index: int | None = None) -> str:
        text = re.sub(r"\bvar\.(\w+)", r"local.var__\1", text)
        text = re.sub(r"\bdata\.(aws_\w+)\.(\w+)", r"local.data__\1__\2", text)
        text = re.sub(r"(?<![.\w])(aws_\w+)\.(\w+)", r"local.res__\1__\2", text)
        text = re.sub(r"\bpath\.module\b", "local.path__module", text)
        if index is not None:
            text = re.sub(r"\bcount\.index\b", str(index), text)
        return text

    def _locals_hcl(self, expressions: list[str]) -> str:
        needed: set[str] = set()
        todo = [n for e in expressions for n in re.findall(r"\blocal\.(\w+)", e)]
        while todo:
            name = todo.pop()
            if name not in needed:
                assert name in self.module.locals, f"local.{name} is not declared"
                needed.add(name)
                todo += re.findall(r"\blocal\.(\w+)", str(self.module.locals[name]))
        texts = expressions + [str(self.module.locals[n]) for n in needed]
        refs = {f"data.{t}.{n}" for text in texts for t, n in re.findall(r"\bdata\.(aws_\w+)\.(\w+)", text)}
        refs |= {f"{t}.{n}" for text in texts for t, n in re.findall(r"(?<![.\w])(aws_\w+)\.(\w+)", text)}
        unstubbed = refs - set(self.stubs)
        assert not unstubbed, f"give these a stand-in value: {sorted(unstubbed)}"
        lines = [f"  var__{n} = var.{n}" for n in self.vars]
        lines += [f"  {self.rewrite(k).removeprefix('local.')} = {hcl_literal(self.stubs[k])}" for k in sorted(refs)]
        lines.append(f"  path__module = {hcl_literal(self.module.directory.as_posix())}")
        for name in sorted(needed):
            lines.append(f"  {name} = {self.expression(self.module.locals[name])}")
        return "\n".join(lines)

    @classmethod
    def expression(cls, value) -> str:
        """A local's value as python-hcl2 gives it, as HCL again, rewritten.
        A string is a template: "${expr}" alone yields expr's own value; maps
        and lists hold such strings."""
        if isinstance(value, str):
            return f'"{cls.rewrite(value)}"'
        if isinstance(value, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {cls.expression(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(cls.expression(v) for v in value) + "]"
        return hcl_literal(value)

    def variables(self) -> dict[str, tuple[str, str]]:
        """The module's variables, typed as it declares them, with the inputs."""
        return {n: (variable_type(self.module, n), hcl_literal(v)) for n, v in self.vars.items()}

    def eval_json(self, expressions: list[str]) -> list[object]:
        """Each expression in the module's own syntax (var., local., data.,
        resource references), count.index already replaced."""
        rewritten = [self.rewrite(e) for e in expressions]
        return Console(self.tmp, self._locals_hcl(expressions), self.variables()).eval_json(rewritten)

    @staticmethod
    def unwrap(template: str) -> str:
        """The expression of a "${expr}" attribute as python-hcl2 gives it."""
        assert template.startswith("${") and template.endswith("}"), template
        return template[2:-1]

    def user_data(self) -> list[str]:
        """The cloud-init text each aws_instance.broker boots with, as EC2
        receives it (base64 of gzip), decoded."""
        import base64
        import gzip

        expr = self.unwrap(self.module.resources[("aws_instance", "broker")]["user_data_base64"])
        count = self.vars["broker_count"]
        encoded = self.eval_json([re.sub(r"\bcount\.index\b", str(i), expr) for i in range(count)])
        return [gzip.decompress(base64.b64decode(e)).decode() for e in encoded]

    def preconditions(self) -> list[tuple[bool, str]]:
        """(holds, error_message) for each precondition of aws_instance.broker."""
        lifecycle = self.module.resources[("aws_instance", "broker")]["lifecycle"]
        conditions = [c for block in lifecycle for c in block.get("precondition", [])]
        results = self.eval_json([self.unwrap(c["condition"]) for c in conditions])
        return [(bool(ok), c["error_message"]) for ok, c in zip(results, conditions)]


@pytest.fixture(scope="session")
def module() -> TfConfig:
    return TfConfig(MODULE_DIR)


@pytest.fixture(scope="session")
def examples() -> dict[str, TfConfig]:
    return {d.name: TfConfig(d) for d in sorted(EXAMPLES_DIR.iterdir()) if d.is_dir()}


DASHBOARDS_DIR = INFRA_DIR / "grafana" / "dashboards"
ALERTS_FILE = INFRA_DIR / "prometheus" / "alerts.yml"


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and template-variable query of
    every dashboard under infra/grafana/dashboards, and every alert rule."""
    import yaml

    from metrics_catalog import label_values_query

    found = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dash = json.loads(path.read_text())
        panels = list(dash["panels"])
        for p in dash["panels"]:
            panels.extend(p.get("panels", []))  # collapsed rows nest theirs
        for p in panels:
            for t in p.get("targets", []):
                found.append((f"{path.name}: panel {p['title']!r} {t['refId']}", t["expr"]))
        for v in dash.get("templating", {}).get("list", []):
            if v["type"] == "query":
                query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                lv = label_values_query(query)
                found.append((f"{path.name}: variable {v['name']}", f"{lv[0]}{{{lv[1]}!=\"\"}}" if lv else query))
    for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            found.append((f"alerts.yml: {rule['alert']}", str(rule["expr"])))
    return found


def terminate(proc, timeout: float = 60):
    """SIGTERM, then SIGKILL if it is still running after `timeout` s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
