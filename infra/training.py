"""Training: the training and inference container images, and the SageMaker execution role.

Both images are ``DockerImageAsset``s built by ``cdk deploy`` from the repository root with their
Dockerfiles (``training_image/Dockerfile``, ``inference_image/Dockerfile``, written alongside the
entrypoints the local runtime runs); the build context is limited to what those Dockerfiles copy.
Synthesis only fingerprints the context, so it needs no Docker. A GPU training instance type
(``ml.g*``/``ml.p*``) builds the training image with Paddle's CUDA wheel.

The execution role is used by training jobs and by the endpoint's models. It reads the datasets
bucket and the models bucket (parent model), writes ``training-output/`` and ``checkpoints/`` of the
models bucket, uses the stack key for data, ML volumes and outputs, pulls the two images, and writes
its logs and metrics under ``/aws/sagemaker/``.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from . import packaging
from .data import Data
from .iam import Policies, arn
from .params import Params

#: The pinned versions both images install as pip constraints (``scripts/lock.sh``).
LOCK = "scripts/requirements.lock"
#: Build contexts: what each Dockerfile COPYs from the repository root (README.md is optional
#: there: ``COPY pyproject.toml README.md* …``).
TRAINING_CONTEXT = ("ocrloop", "training_image", "pyproject.toml", "README.md", LOCK)
INFERENCE_CONTEXT = ("ocrloop", "inference_image", "pyproject.toml", "README.md", LOCK)


#: Paddle's CUDA wheels come from Paddle's package index (training_image/Dockerfile build args).
GPU_BUILD_ARGS = {"PADDLE_SPEC": "paddlepaddle-gpu==3.3.1",
                  "PADDLE_INDEX": "https://www.paddlepaddle.org.cn/packages/stable/cu126/"}


def is_gpu(instance_type: str) -> bool:
    """``ml.g5.xlarge``, ``ml.p4d.24xlarge`` … (SageMaker GPU families are g* and p*)."""
    family = instance_type.removeprefix("ml.").split(".", 1)[0]
    return family[:1] in ("g", "p")


def image_asset(scope: Construct, construct_id: str, dockerfile: str, context: tuple[str, ...],
                build_args: dict[str, str] | None = None) -> ecr_assets.DockerImageAsset:
    path = packaging.ROOT / dockerfile
    if not path.exists():
        raise FileNotFoundError(f"{dockerfile} is missing: the CDK app builds it as a container image asset")
    entries = tuple(e for e in context if (packaging.ROOT / e).exists())
    return ecr_assets.DockerImageAsset(
        scope, construct_id,
        directory=str(packaging.stage(entries, ignore=packaging.IMAGE_IGNORE)),
        file=dockerfile,
        build_args=build_args or None,
        platform=ecr_assets.Platform.LINUX_AMD64,
    )


class Training(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, data: Data, policies: Policies) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.training_image = image_asset(self, "TrainingImage", "training_image/Dockerfile", TRAINING_CONTEXT,
                                          GPU_BUILD_ARGS if is_gpu(params.training_instance_type) else None)
        self.inference_image = image_asset(self, "InferenceImage", "inference_image/Dockerfile", INFERENCE_CONTEXT)

        role = policies.role(self, "SageMakerRole", "sagemaker.amazonaws.com",
                             "ocrloop SageMaker execution role: training jobs and endpoint models")
        self.role = role
        d, m = data.datasets, data.models
        policies.allow(role, ["s3:ListBucket", "s3:GetBucketLocation"], [d.bucket_arn, m.bucket_arn])
        policies.allow(role, ["s3:GetObject"], [d.arn_for_objects("*"), m.arn_for_objects("*")],
                       why="Training channels (datasets/training/<job>/…) and the parent model "
                           "(models/training-output/<job>/…) are keyed by run-time job names.")
        policies.allow(role, ["s3:PutObject", "s3:AbortMultipartUpload"],
                       [m.arn_for_objects("training-output/*"), m.arn_for_objects("checkpoints/*")],
                       why="Each job writes model.tar.gz and spot checkpoints under its own run-time name.")
        policies.allow(role, ["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:DescribeKey"], [data.key.key_arn])
        policies.allow(role, ["kms:CreateGrant"], [data.key.key_arn],
                       conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}})
        repos = sorted({self.training_image.repository.repository_arn, self.inference_image.repository.repository_arn},
                       key=str)
        policies.allow(role, ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                       repos)
        policies.allow(role, ["ecr:GetAuthorizationToken"], ["*"],
                       why="ecr:GetAuthorizationToken has no resource-level permissions (Service Authorization "
                           "Reference: resource types none); image pulls are scoped to the asset repository.")
        log_groups = [arn(stack, "logs", "log-group:/aws/sagemaker/TrainingJobs:*"),
                      arn(stack, "logs", f"log-group:/aws/sagemaker/Endpoints/{params.names.endpoint_name}:*")]
        policies.allow(role, ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                       log_groups,
                       why="SageMaker writes one log stream per job/instance into these log groups; stream "
                           "names are created at run time.")
        policies.allow(role, ["cloudwatch:PutMetricData"], ["*"],
                       why="cloudwatch:PutMetricData has no resource-level permissions; limited to SageMaker "
                           "namespaces by the cloudwatch:namespace condition.",
                       conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}})
        if params.use_vpc:
            policies.allow(role, ["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                                  "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission",
                                  "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                                  "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"], ["*"],
                           why="SageMaker attaches training containers to the VPC; the ec2 Describe* calls have no "
                               "resource-level permissions and the ENI ids are created at run time.")
        self.repository_arns = repos
