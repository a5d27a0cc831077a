"""Registry: the SageMaker model package group of the recognition model, and permissions on it.

``on_training_completed`` registers each candidate as a version (Approved / PendingManualApproval /
Rejected, metrics and lineage in ``CustomerMetadataProperties``); approving a version (console, API
or auto-approve) emits the Model Package State Change that ``on_model_approved`` deploys, and
rejecting the serving version redeploys the last Approved one.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from .iam import Policies, arn
from .params import Params


class Registry(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, policies: Policies) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.policies = policies
        group = params.names.model_package_group
        self.group = sagemaker.CfnModelPackageGroup(
            self, "Group", model_package_group_name=group,
            model_package_group_description="ocrloop: PaddleOCR recognition model versions for engineering drawings")
        # The versions are created at run time; CloudFormation cannot delete a group that still has
        # them, and their lineage is data: keep the group unless the data goes too.
        self.group.apply_removal_policy(cdk.RemovalPolicy.RETAIN if params.retain_data else cdk.RemovalPolicy.DESTROY)
        self.group_arn = arn(stack, "sagemaker", f"model-package-group/{group}")
        self.package_arns = arn(stack, "sagemaker", f"model-package/{group}/*")

    def grant_read(self, role: iam.Role) -> None:
        self.policies.allow(role, ["sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup"],
                            [self.package_arns, self.group_arn],
                            why="Model package versions are numbered by the registry at run time.")
        self.policies.allow(role, ["sagemaker:ListModelPackages"], ["*"],
                            why="sagemaker:ListModelPackages has no resource-level permissions (Service "
                                "Authorization Reference: no resource type); the call filters by group name.")

    def grant_write(self, role: iam.Role) -> None:
        self.policies.allow(role, ["sagemaker:CreateModelPackage", "sagemaker:UpdateModelPackage", "sagemaker:AddTags"],
                            [self.group_arn, self.package_arns],
                            why="Model package versions are numbered by the registry at run time.")
