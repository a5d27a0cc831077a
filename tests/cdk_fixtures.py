"""Session-scoped CDK synthesis fixtures for ``tests/test_cdk_*.py``.

Use from a test module with ``pytest_plugins = ["cdk_fixtures"]`` (``tests/`` is on ``sys.path``).

* ``cdk_app`` — one in-process synthesis (``aws_cdk`` via jsii) of an app holding two stacks with
  cdk-nag AwsSolutions on: the default deployment (``cdk.json`` context, prefix ``ocrloop``) and a
  VPC variant (prefix ``ocrloopvpc``, ``use_vpc``). A policy-validation failure (an unacknowledged
  cdk-nag finding) raises during synthesis, so the fixture existing at all means zero findings.
* ``cli_synth`` — ``npx cdk synth`` with the pinned CLI (``scripts/setup_cdk.sh``), offline
  (version check and telemetry off, fixed account/region, no lookups), timed.

Both write into temporary folders; nothing touches ``cdk.out/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"
REGION = "us-east-1"
PINNED_CLI = "2.1148.1"
VPC_PREFIX = "ocrloopvpc"


@dataclasses.dataclass
class Synth:
    """One synthesized cloud assembly."""

    outdir: Path
    seconds: float
    templates: dict[str, dict[str, Any]]
    stacks: dict[str, Any] = dataclasses.field(default_factory=dict)
    output: str = ""

    def template(self, stack: str) -> dict[str, Any]:
        return self.templates[stack]

    def resources(self, stack: str, type_: str | None = None) -> dict[str, dict[str, Any]]:
        res = self.templates[stack]["Resources"]
        return {k: v for k, v in res.items() if type_ is None or v["Type"] == type_}

    def metadata(self, stack: str) -> dict[str, list[dict[str, Any]]]:
        manifest = json.loads((self.outdir / "manifest.json").read_text())
        art = manifest["artifacts"][stack]
        if "metadata" in art:
            return art["metadata"]
        return json.loads((self.outdir / f"{stack}.metadata.json").read_text())


def _context(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    context.update(account=ACCOUNT, region=REGION)
    context.update(extra or {})
    return context


def _templates(outdir: Path) -> dict[str, dict[str, Any]]:
    manifest = json.loads((outdir / "manifest.json").read_text())
    out = {}
    for name, art in manifest["artifacts"].items():
        if art["type"] == "aws:cloudformation:stack":
            out[name] = json.loads((outdir / art["properties"]["templateFile"]).read_text())
    return out


@pytest.fixture(scope="session")
def cdk_app(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    # The CLI synth runs in its own processes (node + python): start it now so both synths overlap.
    if cli_available():
        _start_cli(tmp_path_factory)
    import aws_cdk as cdk

    import app as cdk_app_module
    from infra.params import CONTEXT_KEY, Params
    from infra.stack import OcrLoopStack

    outdir = tmp_path_factory.mktemp("cdk-inprocess")
    context = _context()
    started = time.monotonic()
    app = cdk.App(outdir=str(outdir), context=context)
    default_stack = cdk_app_module.build(app)
    vpc_params = dataclasses.replace(Params.from_context(context[CONTEXT_KEY]), prefix=VPC_PREFIX, use_vpc=True,
                                     training_capacity="warm", warm_pool_s=1800)
    vpc_stack = OcrLoopStack(app, "OcrLoopVpc", params=vpc_params, env=cdk.Environment(account=ACCOUNT, region=REGION))
    app.synth()
    seconds = time.monotonic() - started
    synth = Synth(outdir, seconds, _templates(outdir),
                  stacks={default_stack.stack_name: default_stack, vpc_stack.stack_name: vpc_stack})
    return synth


def cli_available() -> bool:
    package = ROOT / "node_modules" / "aws-cdk" / "package.json"
    return package.exists() and json.loads(package.read_text()).get("version") == PINNED_CLI


_CLI: dict[str, Any] = {}


def _start_cli(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start ``npx cdk synth`` (pinned CLI, offline) in the background once per session."""
    if _CLI:
        return
    outdir = tmp_path_factory.mktemp("cdk-cli")
    env = dict(os.environ, CDK_DISABLE_VERSION_CHECK="1", CDK_DISABLE_CLI_TELEMETRY="true",
               OCRLOOP_PYTHON=sys.executable, CI="true")
    env.pop("CDK_DEFAULT_ACCOUNT", None)
    npx = shutil.which("npx")
    assert npx, "npx (Node.js) is required for the CLI synth"
    cmd = [npx, "--no-install", "cdk", "synth", "--no-notices", "--quiet", "--output", str(outdir),
           "-c", f"account={ACCOUNT}", "-c", f"region={REGION}"]
    log = outdir.parent / f"{outdir.name}.log"
    handle = log.open("w")
    _CLI.update(outdir=outdir, log=log, handle=handle, started=time.monotonic(),
                proc=subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT))


@pytest.fixture(scope="session")
def cli_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    if not cli_available():
        pytest.fail(f"pinned CDK CLI aws-cdk@{PINNED_CLI} not installed: run scripts/setup_cdk.sh")
    _start_cli(tmp_path_factory)
    proc = _CLI["proc"]
    try:
        returncode = proc.wait(timeout=600)
    finally:
        _CLI["handle"].close()
    seconds = time.monotonic() - _CLI["started"]
    output = _CLI["log"].read_text()
    assert returncode == 0, f"cdk synth failed ({returncode}):\n{output[-6000:]}"
    return Synth(_CLI["outdir"], seconds, _templates(_CLI["outdir"]), output=output)
