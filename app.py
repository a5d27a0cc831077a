#!/usr/bin/env python3
"""CDK app: ``npx cdk synth`` / ``npx cdk deploy`` (CLI pinned by scripts/setup_cdk.sh).

Context (``cdk.json`` or ``-c``):
    ocrloop   deployment parameters (``infra.params.Params``), a JSON object
    account   AWS account id of the stack (default: ``CDK_DEFAULT_ACCOUNT``, else environment-agnostic)
    region    AWS region (default: ``CDK_DEFAULT_REGION``, else ``us-east-1``)
    nag       ``false`` to skip cdk-nag (default on: synthesis fails on unacknowledged findings)

Synthesis is offline (no lookups) and needs no Docker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.params import CONTEXT_KEY, Params  # noqa: E402
from infra.stack import OcrLoopStack  # noqa: E402


def build(app: cdk.App) -> OcrLoopStack:
    """Add the stack (and cdk-nag) to ``app`` from its context; returns the stack."""
    params = Params.from_context(app.node.try_get_context(CONTEXT_KEY))
    account = app.node.try_get_context("account") or os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = app.node.try_get_context("region") or os.environ.get("CDK_DEFAULT_REGION") or "us-east-1"
    stack = OcrLoopStack(app, f"{params.prefix}-stack".replace("ocrloop-stack", "OcrLoop"), params=params,
                         env=cdk.Environment(account=account, region=region))
    if str(app.node.try_get_context("nag")).lower() != "false":
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> None:
    app = cdk.App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
