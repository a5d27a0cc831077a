"""Labeling: the Ground Truth custom task (worker template + pre-/post-annotation Lambdas) and the
role Ground Truth assumes for ocrloop's labeling jobs.

The worker template (``infra/assets/labeling_template.liquid.html``, crowd-html + Liquid) is an
S3 asset; its ``s3://`` URI goes to the loop functions as ``UiTemplateS3Uri``. The labeling role reads
the drawings (raw bucket) and the template, reads and writes the labeling bucket (manifests, worker
output, consolidation payloads), and invokes only the two task Lambdas — function names without
"SageMaker" in them need that explicit ``lambda:InvokeFunction``
(https://docs.aws.amazon.com/sagemaker/latest/dg/sms-custom-templates-step3.html).

Labeling jobs themselves are created at run time by ``start_labeling`` (CreateLabelingJob).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from . import packaging
from .data import Data
from .functions import FunctionFactory
from .iam import Policies, arn
from .params import Params

TEMPLATE = packaging.ROOT / "infra" / "assets" / "labeling_template.liquid.html"


class Labeling(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, data: Data, policies: Policies,
                 functions: FunctionFactory) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.template = s3_assets.Asset(self, "Template", path=str(TEMPLATE))
        self.template_uri = self.template.s3_object_url

        self.pre, _ = functions.make(
            self, "PreAnnotation", name="gt-pre-annotation", handler="lambdas.gt_pre_annotation.handler",
            description="Ground Truth pre-annotation: the serving model's lines become the task input",
            timeout_s=30, memory_mb=256)
        self.consolidation, consolidation_role = functions.make(
            self, "Consolidation", name="gt-consolidation", handler="lambdas.gt_consolidation.handler",
            description="Ground Truth annotation consolidation: worker polygons + transcriptions → ocr-labels",
            timeout_s=300, memory_mb=512)
        policies.allow(consolidation_role, ["s3:GetObject"], [data.labeling.arn_for_objects("*")],
                       why="Ground Truth writes each consolidation payload under the job's run-time output prefix.")
        policies.allow(consolidation_role, ["kms:Decrypt"], [data.key.key_arn])

        role = policies.role(self, "Role", "sagemaker.amazonaws.com", "Role Ground Truth assumes for ocrloop labeling jobs")
        self.role = role
        policies.allow(role, ["s3:ListBucket", "s3:GetBucketLocation"], [data.raw.bucket_arn, data.labeling.bucket_arn])
        policies.allow(role, ["s3:GetObject"], [data.raw.arn_for_objects("drawings/*")],
                       why="Workers see any drawing uploaded under drawings/; keys are the users' file names.")
        policies.allow(role, ["s3:GetObject", "s3:PutObject"], [data.labeling.arn_for_objects("*")],
                       why="Input manifests (jobs/<job>/) and Ground Truth output (output/<job>/…) are keyed by "
                           "run-time job names.")
        policies.allow(role, ["s3:GetObject"], [
            cdk.Fn.join("", ["arn:", cdk.Aws.PARTITION, ":s3:::", self.template.s3_bucket_name, "/",
                             self.template.s3_object_key])])
        policies.allow(role, ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"], [data.key.key_arn])
        policies.allow(role, ["lambda:InvokeFunction"], [self.pre.function_arn, self.consolidation.function_arn])
        policies.allow(role, ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                       [arn(stack, "logs", "log-group:/aws/sagemaker/LabelingJobs:*")],
                       why="Ground Truth writes one log stream per labeling job, named at run time.")
        policies.allow(role, ["cloudwatch:PutMetricData"], ["*"],
                       why="cloudwatch:PutMetricData has no resource-level permissions; limited to SageMaker "
                           "namespaces by the cloudwatch:namespace condition.",
                       conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}})
