"""IAM helpers: explicit inline policies, and a cdk-nag acknowledgment with a reason for every
wildcard they contain.

Roles here get no AWS managed policies (cdk-nag AwsSolutions-IAM4). Statements name their resources;
where a resource needs a wildcard — an object key space (``bucket/*``), a name prefix of resources
the loop creates at run time (``training-job/ocrloop-*``) or an API without resource-level
permissions (``Resource: *``) — the statement is added with ``allow(..., why=...)``. ``finalize``
then acknowledges exactly the cdk-nag findings those wildcards produce (``AwsSolutions-IAM5[Resource::
<flattened ARN>]``), each with its reason, so a new wildcard without a reason fails synthesis.

The flattening mirrors cdk-nag's ``flattenCfnReference``: ``Ref`` → ``<Name>``, ``Fn::GetAtt`` →
``<Logical.Attr>``, ``Fn::Join`` concatenated.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct


def flatten(value: Any) -> str:
    """cdk-nag's ``flattenCfnReference`` in Python (for resolved CloudFormation values)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if isinstance(value, dict):
        if "Fn::Join" in value:
            delimiter, items = value["Fn::Join"]
            return delimiter.join(flatten(i) for i in items)
        if "Fn::Sub" in value:
            return flatten(value["Fn::Sub"])
        if "Fn::GetAtt" in value:
            resource, attribute = value["Fn::GetAtt"]
            return f"<{flatten(resource)}.{flatten(attribute)}>"
        if "Fn::ImportValue" in value:
            return flatten(value["Fn::ImportValue"])
        if "Ref" in value:
            return f"<{flatten(value['Ref'])}>"
    return json.dumps(value, separators=(",", ":"))


def ack(scope: Construct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``scope`` (and its children) with a specific reason."""
    if len(reason) < 20:
        raise ValueError(f"acknowledgment of {rule} needs a specific reason, got {reason!r}")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


class Policies:
    """Collects statements per role and acknowledges their wildcards at ``finalize``."""

    def __init__(self) -> None:
        self._pending: list[tuple[iam.Role, iam.PolicyStatement, str | None]] = []

    def role(self, scope: Construct, construct_id: str, service: str, description: str) -> iam.Role:
        """A role assumable by ``service`` (e.g. ``lambda.amazonaws.com``), no managed policies."""
        return iam.Role(scope, construct_id, assumed_by=iam.ServicePrincipal(service), description=description)

    def allow(self, role: iam.Role, actions: Sequence[str], resources: Sequence[str], *,
              why: str | None = None, conditions: dict[str, Any] | None = None) -> iam.PolicyStatement:
        """Add an Allow statement to ``role``'s inline policy.

        Args:
            why: required when a resource or action contains ``*``: why the wildcard is needed
                (recorded as the cdk-nag acknowledgment reason).
        """
        statement = iam.PolicyStatement(actions=list(actions), resources=list(resources), conditions=conditions)
        role.add_to_policy(statement)
        self._pending.append((role, statement, why))
        return statement

    def finalize(self, stack: cdk.Stack) -> list[tuple[str, str, str]]:
        """Acknowledge every wildcard finding; returns ``(role path, finding, reason)`` rows.

        Raises:
            ValueError: a wildcard statement was added without ``why``.
        """
        rows: list[tuple[str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for role, statement, why in self._pending:
            resolved = stack.resolve(statement.to_statement_json())
            resources = resolved.get("Resource", [])
            actions = resolved.get("Action", [])
            findings = [f"Resource::{flatten(r)}" for r in (resources if isinstance(resources, list) else [resources])
                        if "*" in flatten(r)]
            findings += [f"Action::{a}" for a in (actions if isinstance(actions, list) else [actions]) if "*" in a]
            if findings and not why:
                raise ValueError(f"wildcard in {role.node.path}: {findings} needs a reason (why=...)")
            for finding in findings:
                key = (role.node.path, finding)
                if key in seen:
                    continue
                seen.add(key)
                ack(role, f"AwsSolutions-IAM5[{finding}]", why or "")
                rows.append((role.node.path, finding, why or ""))
        return rows


def arn(stack: cdk.Stack, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
    """``arn:<partition>:<service>:<region>:<account>:<resource>`` of this stack's environment."""
    return cdk.Fn.join(":", ["arn", cdk.Aws.PARTITION, service, stack.region if region else "",
                             stack.account if account else "", resource])


def s3_arns(buckets: Iterable[str], objects: bool = True) -> list[str]:
    """Bucket ARNs (and ``bucket/*`` object ARNs) of literal bucket names."""
    out = []
    for b in buckets:
        out.append(cdk.Fn.join("", ["arn:", cdk.Aws.PARTITION, f":s3:::{b}"]))
        if objects:
            out.append(cdk.Fn.join("", ["arn:", cdk.Aws.PARTITION, f":s3:::{b}/*"]))
    return out
