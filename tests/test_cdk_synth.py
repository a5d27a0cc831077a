"""The CDK app synthesizes offline — with the pinned CLI and in process — with cdk-nag
AwsSolutions on and zero unacknowledged findings; every acknowledgment carries a specific reason."""

from __future__ import annotations

import json
import re
from collections import Counter

pytest_plugins = ["cdk_fixtures"]

STACK = "OcrLoop"
MIN_REASON = 40


def test_cli_synth_offline_with_nag(cli_synth):
    """`npx cdk synth` (aws-cdk@2.1148.1) succeeds offline; cdk-nag ran and reported nothing."""
    assert list(cli_synth.templates) == [STACK]
    resources = cli_synth.resources(STACK)
    counts = Counter(r["Type"] for r in resources.values())
    print(f"\ncdk synth (pinned CLI, overlapping the in-process synth): {cli_synth.seconds:.1f} s, "
          f"{len(resources)} resources: "
          f"{dict(counts.most_common())}")
    assert "Validation failed" not in cli_synth.output
    report = cli_synth.outdir / "validation-report.json"
    if report.exists():  # written only when a plugin reports violations
        data = json.loads(report.read_text())
        assert all(p["conclusion"] == "success" for p in data["pluginReports"]), data
    assert len(resources) > 100
    for kind in ("AWS::S3::Bucket", "AWS::Events::Rule", "AWS::Lambda::Function", "AWS::OpenSearchService::Domain",
                 "AWS::ApiGateway::RestApi", "AWS::SageMaker::ModelPackageGroup", "AWS::DynamoDB::Table",
                 "AWS::SNS::Topic", "AWS::CloudWatch::Dashboard", "AWS::KMS::Key"):
        assert counts[kind] >= 1, kind


def test_cli_and_in_process_synth_agree(cli_synth, cdk_app):
    """The CLI runs the same app: identical resources (logical ids and types). The CLI adds its
    version-reporting ``CDKMetadata``; the API Gateway deployment's logical id is a hash that also
    covers CLI-only context, so deployments are compared by count."""
    def norm(synth):
        res = synth.resources(STACK)
        ids = {k: v["Type"] for k, v in res.items()
               if v["Type"] not in ("AWS::CDK::Metadata", "AWS::ApiGateway::Deployment")}
        return ids, sum(v["Type"] == "AWS::ApiGateway::Deployment" for v in res.values())

    assert norm(cli_synth) == norm(cdk_app)
    print(f"\nin-process synth of 2 stacks with cdk-nag: {cdk_app.seconds:.1f} s")


def test_no_assets_need_docker_at_synth(cli_synth):
    """Container images are only fingerprinted: the assembly lists them with their build context,
    and every file asset is staged already (the Lambda layer was bundled locally, without Docker)."""
    assets = json.loads((cli_synth.outdir / f"{STACK}.assets.json").read_text())
    dockerfiles = sorted(a["source"]["dockerFile"] for a in assets["dockerImages"].values())
    assert dockerfiles == ["inference_image/Dockerfile", "lambdas/Dockerfile", "training_image/Dockerfile"]
    for image in assets["dockerImages"].values():
        context = cli_synth.outdir / image["source"]["directory"]
        assert (context / image["source"]["dockerFile"]).is_file()
    layer_dirs = [cli_synth.outdir / a["source"]["path"] for a in assets["files"].values()
                  if (cli_synth.outdir / a["source"]["path"] / "python").is_dir()]
    assert len(layer_dirs) == 1
    installed = {p.name for p in (layer_dirs[0] / "python").iterdir()}
    assert {"aws_lambda_powertools", "pydantic", "pydantic_core", "PIL"} <= installed
    # manylinux2014 x86_64 CPython 3.11 binaries (Lambda python3.11 runs on Amazon Linux 2, glibc 2.26).
    so = [p.name for p in (layer_dirs[0] / "python" / "pydantic_core").glob("*.so")]
    assert so and all("cpython-311-x86_64-linux-gnu" in name for name in so), so


def test_nag_acknowledgments_have_specific_reasons(cdk_app):
    """Synthesis with cdk-nag succeeded (a finding would have raised); each acknowledgment names one
    rule (IAM5 ones one finding) with a specific reason, and they are listed for review."""
    rows = []
    for stack in cdk_app.templates:
        for path, entries in cdk_app.metadata(stack).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    for rule, reason in entry["data"].items():
                        if "AwsSolutions" in rule:  # CDK itself acknowledges some cfn-lint checks
                            rows.append((stack, path, rule, reason))
    assert rows
    for stack, path, rule, reason in rows:
        assert re.search(r"AwsSolutions-[A-Z]+\d+", rule), rule
        assert len(reason) >= MIN_REASON and "TODO" not in reason, (path, rule, reason)
        if "IAM5" in rule:
            assert re.search(r"IAM5\[(Resource|Action)::.+\]", rule), rule
    by_rule = Counter(re.sub(r"\[.*\]", "", r[2]).replace("Annotation::", "") for r in rows if r[0] == STACK)
    print("\ncdk-nag acknowledgments (default stack):", dict(sorted(by_rule.items())))


def test_every_wildcard_acknowledgment_is_used(cdk_app):
    """Each IAM5 acknowledgment matches a wildcard that is really in the role's policies (no stale
    acknowledgments hiding future findings)."""
    from infra.iam import flatten

    for name, stack in cdk_app.stacks.items():
        template = cdk_app.template(name)
        wildcards: dict[str, set[str]] = {}
        for res in template["Resources"].values():
            if res["Type"] != "AWS::IAM::Policy":
                continue
            for role in res["Properties"]["Roles"]:
                role_id = role["Ref"]
                for st in res["Properties"]["PolicyDocument"]["Statement"]:
                    resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                    actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                    found = wildcards.setdefault(role_id, set())
                    found.update(f"Resource::{flatten(r)}" for r in resources if "*" in flatten(r))
                    found.update(f"Action::{a}" for a in actions if "*" in a)
        all_found = set().union(*wildcards.values())
        for path, finding, _ in stack.acknowledged:
            assert finding in all_found, (path, finding)
