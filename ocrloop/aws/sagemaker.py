"""SageMaker adapters: ``Training`` (training jobs), ``Registry`` (model packages), ``Hosting``
(real-time endpoint with deployment guardrails) — plain boto3, no ``sagemaker`` SDK (≈1 GB, slow
imports; DESIGN.md).

API references:
  * CreateTrainingJob: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html
  * Managed spot + checkpoints: https://docs.aws.amazon.com/sagemaker/latest/dg/model-managed-spot-training.html
  * Warm pools (not with spot): https://docs.aws.amazon.com/sagemaker/latest/dg/train-warm-pools.html
  * Metric definitions: https://docs.aws.amazon.com/sagemaker/latest/dg/training-metrics.html
  * UpdateEndpoint + DeploymentConfig: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html
  * Guardrail exclusions (KMS-enabled endpoints fall back to all-at-once):
    https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html
  * Endpoint autoscaling: https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling.html
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any, Sequence

from botocore.exceptions import ClientError

from ..ports import ObjectExists

log = logging.getLogger(__name__)

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
STAGE_KEY = "ocrloop:stage"

_BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed"}


def _is(exc: ClientError, *codes: str) -> bool:
    return exc.response.get("Error", {}).get("Code") in codes


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    response = dict(response)
    response.pop("ResponseMetadata", None)
    return response


def _not_found(exc: ClientError) -> bool:
    """SageMaker reports a missing resource as ``ResourceNotFound`` or, for endpoints and models,
    as ``ValidationException`` "Could not find …"."""
    if _is(exc, "ResourceNotFound"):
        return True
    message = exc.response.get("Error", {}).get("Message", "")
    return _is(exc, "ValidationException") and ("Could not find" in message or "does not exist" in message)


def _already_exists(exc: ClientError) -> bool:
    message = exc.response.get("Error", {}).get("Message", "")
    return _is(exc, "ResourceInUse") or (_is(exc, "ValidationException") and "already exist" in message)


# --------------------------------------------------------------------------------------------
class SageMakerTraining:
    """``Training`` port on SageMaker training jobs.

    The core (``ocrloop.handlers.start_training``) builds the CreateTrainingJob request: image,
    role, channels, hyper-parameters, ``MetricDefinitions`` (``handlers.METRIC_REGEXES``, matching
    the ``METRIC name=value`` lines the entrypoint prints), stopping condition and checkpoint URI.
    This adapter adds what only the deployment knows, without overriding the core's fields: KMS keys
    for the ML volume and the output, VPC placement and tags, and it applies the deployment's
    capacity mode, which *is* authoritative because the two modes exclude each other:

    * ``spot``: ``EnableManagedSpotTraining`` with ``MaxWaitTimeInSeconds`` ≥ the max runtime and a
      ``CheckpointConfig`` (the entrypoint resumes from ``/opt/ml/checkpoints`` after an
      interruption);
    * ``warm``: on-demand with ``KeepAlivePeriodInSeconds`` — "SageMaker Managed Warm Pools cannot be
      used with spot instances" (train-warm-pools.html, Considerations). The checkpoint config
      stays (harmless on demand).

    Args:
        client: boto3 ``sagemaker`` client.
        checkpoint_s3_prefix: ``s3://bucket/prefix/``; each job checkpoints to ``<prefix><job>/``.
        capacity: ``spot`` (``EnableManagedSpotTraining``, needs ``max_wait_s`` ≥ ``max_run_s``)
            or ``warm`` (on-demand, ``KeepAlivePeriodInSeconds`` = ``warm_pool_s``).
        max_run_s / max_wait_s: stopping condition (s).
        warm_pool_s: keep-alive of the warm pool (0–3600 s; needs a warm-pool service quota).
        volume_gb: ML storage volume (GB).
        kms_key_arn: encrypts the ML volume and the output ``model.tar.gz``.
        subnet_ids / security_group_ids: VPC placement (both or neither).
        tags: ``[{"Key", "Value"}]`` added to each job.
    """

    def __init__(self, client: Any, *, checkpoint_s3_prefix: str, capacity: str = "spot",
                 max_run_s: int = 3 * 3600, max_wait_s: int = 6 * 3600, warm_pool_s: int = 0,
                 volume_gb: int = 50, kms_key_arn: str = "", subnet_ids: Sequence[str] = (),
                 security_group_ids: Sequence[str] = (), tags: Sequence[dict[str, str]] = ()) -> None:
        if capacity not in ("spot", "warm"):
            raise ValueError(f"capacity must be 'spot' or 'warm', got {capacity!r}")
        if not checkpoint_s3_prefix.startswith("s3://"):
            raise ValueError("checkpoint_s3_prefix must be an s3:// URI")
        self._sm = client
        self.checkpoint_s3_prefix = checkpoint_s3_prefix.rstrip("/") + "/"
        self.capacity = capacity
        self.max_run_s = max_run_s
        self.max_wait_s = max_wait_s
        self.warm_pool_s = warm_pool_s
        self.volume_gb = volume_gb
        self.kms_key_arn = kms_key_arn
        self.subnet_ids = list(subnet_ids)
        self.security_group_ids = list(security_group_ids)
        self.tags = list(tags)

    def complete_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request that will be sent (pure; used by ``create_training_job`` and tests).

        Raises:
            ValueError: the request has no ``TrainingJobName``.
        """
        req = copy.deepcopy(request)
        name = req.get("TrainingJobName")
        if not name:
            raise ValueError("TrainingJobName is required")
        req.setdefault("AlgorithmSpecification", {}).setdefault("TrainingInputMode", "File")
        res = req.setdefault("ResourceConfig", {})
        res.setdefault("InstanceCount", 1)
        res.setdefault("VolumeSizeInGB", self.volume_gb)
        if self.kms_key_arn:
            res.setdefault("VolumeKmsKeyId", self.kms_key_arn)
            req.setdefault("OutputDataConfig", {}).setdefault("KmsKeyId", self.kms_key_arn)
        stop = req.setdefault("StoppingCondition", {})
        stop.setdefault("MaxRuntimeInSeconds", self.max_run_s)
        checkpoint = req.setdefault("CheckpointConfig", {"S3Uri": f"{self.checkpoint_s3_prefix}{name}/"})
        checkpoint.setdefault("LocalPath", CHECKPOINT_LOCAL_PATH)
        if self.capacity == "spot":
            req["EnableManagedSpotTraining"] = True
            res.pop("KeepAlivePeriodInSeconds", None)
            wait = max(stop.get("MaxWaitTimeInSeconds", self.max_wait_s), stop["MaxRuntimeInSeconds"])
            stop["MaxWaitTimeInSeconds"] = wait
        else:
            req["EnableManagedSpotTraining"] = False
            stop.pop("MaxWaitTimeInSeconds", None)
            if self.warm_pool_s:
                res["KeepAlivePeriodInSeconds"] = self.warm_pool_s
        if self.subnet_ids:
            req.setdefault("VpcConfig", {"Subnets": list(self.subnet_ids),
                                         "SecurityGroupIds": list(self.security_group_ids)})
        if self.tags:
            existing = {t["Key"] for t in req.get("Tags", [])}
            req["Tags"] = list(req.get("Tags", [])) + [t for t in self.tags if t["Key"] not in existing]
        return req

    def create_training_job(self, request: dict[str, Any]) -> str:
        """Start the job; returns its ARN.

        Raises:
            ObjectExists: a job with that name exists (SageMaker names are unique per account and
                region and are never reused, even after the job ends).
            ValueError: no job name.
            botocore.exceptions.ClientError: quota (``ResourceLimitExceeded``), access, validation.
        """
        req = self.complete_request(request)
        name = req["TrainingJobName"]
        try:
            existing = self._sm.describe_training_job(TrainingJobName=name)
        except ClientError as exc:
            if not _not_found(exc):
                raise
        else:
            raise ObjectExists(existing["TrainingJobArn"])
        try:
            return self._sm.create_training_job(**req)["TrainingJobArn"]
        except ClientError as exc:
            if _already_exists(exc):
                raise ObjectExists(name) from exc
            raise

    def describe_training_job(self, name: str) -> dict[str, Any]:
        """DescribeTrainingJob response (``FinalMetricDataList`` holds the parsed METRIC lines)."""
        return _strip(self._sm.describe_training_job(TrainingJobName=name))


# --------------------------------------------------------------------------------------------
class SageMakerRegistry:
    """``Registry`` port on a SageMaker model package group.

    The ``Deployed`` stage is the customer-metadata property ``ocrloop:stage`` (``STAGE_KEY``);
    UpdateModelPackage merges ``CustomerMetadataProperties`` into the existing ones.
    """

    def __init__(self, client: Any) -> None:
        self._sm = client

    def create_model_package(self, request: dict[str, Any]) -> str:
        """CreateModelPackage; returns the versioned ARN (``…:model-package/<group>/<n>``).

        Pass ``ClientToken`` in the request to make retries of the same call idempotent.
        """
        return self._sm.create_model_package(**request)["ModelPackageArn"]

    def describe_model_package(self, arn: str) -> dict[str, Any]:
        return _strip(self._sm.describe_model_package(ModelPackageName=arn))

    def list_model_packages(self, group: str, approval_status: str | None = None) -> list[dict[str, Any]]:
        """ModelPackageSummaryList entries of ``group``, newest first (all pages)."""
        kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime",
                                  "SortOrder": "Descending", "ModelPackageType": "Versioned"}
        if approval_status:
            kwargs["ModelApprovalStatus"] = approval_status
        out: list[dict[str, Any]] = []
        for page in self._sm.get_paginator("list_model_packages").paginate(**kwargs):
            out.extend(page.get("ModelPackageSummaryList", []))
        return out

    def update_model_package(self, request: dict[str, Any]) -> None:
        self._sm.update_model_package(**request)


# --------------------------------------------------------------------------------------------
class EndpointBusy(RuntimeError):
    """The endpoint is Creating/Updating/RollingBack: a second update would be refused. The Lambda
    fails, and its asynchronous retry (or the DLQ) delivers the event again later."""


class SageMakerHosting:
    """``Hosting`` port on one SageMaker real-time endpoint.

    ``deploy`` creates a ``Model`` from the model package, an endpoint config with the single
    production variant ``AllTraffic``, then either ``CreateEndpoint`` (first deployment) or
    ``UpdateEndpoint`` with the given ``DeploymentConfig`` (blue/green canary, baking period,
    auto-rollback). The configured CloudWatch alarms are always added to
    ``AutoRollbackConfiguration.Alarms``, so a caller cannot forget the guardrails.

    The endpoint config sets no ``KmsKeyId``: SageMaker excludes KMS-enabled endpoints from
    deployment guardrails (they fall back to all-at-once with no baking); instance storage of the
    instance types used here is encrypted at rest by the platform.

    Args:
        client: boto3 ``sagemaker``; runtime_client: ``sagemaker-runtime``;
        autoscaling_client: ``application-autoscaling``.
        role_arn: execution role of the models.
        instance_type / instance_count: the production variant.
        rollback_alarms: alarm names (≤ 10 in total with the caller's).
        autoscaling: ``(min, max, invocations_per_instance_per_minute)``.
    """

    def __init__(self, client: Any, runtime_client: Any, autoscaling_client: Any, *, role_arn: str,
                 instance_type: str = "ml.c5.xlarge", instance_count: int = 1,
                 variant_name: str = "AllTraffic", rollback_alarms: Sequence[str] = (),
                 autoscaling: tuple[int, int, int] = (1, 2, 60), tags: Sequence[dict[str, str]] = (),
                 delete_wait: tuple[int, int] = (15, 20)) -> None:
        self._sm = client
        self._rt = runtime_client
        self._aas = autoscaling_client
        self.role_arn = role_arn
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.variant_name = variant_name
        self.rollback_alarms = list(rollback_alarms)
        self.autoscaling = autoscaling
        self.tags = list(tags)
        self._delete_wait = delete_wait

    # names ------------------------------------------------------------------------------------
    def model_version(self, model_package_arn: str) -> str:
        """The package's ``ocrloop:version`` metadata (the training job name), else the ARN's
        version number: the same rule as ``handlers.endpoint_config_name`` and the local hosting,
        so ``on_endpoint_updated`` can verify the rollout by name."""
        described = self._sm.describe_model_package(ModelPackageName=model_package_arn)
        version = (described.get("CustomerMetadataProperties") or {}).get("ocrloop:version")
        return version or model_package_arn.rsplit("/", 1)[-1]

    @staticmethod
    def config_name(endpoint_name: str, model_version: str) -> str:
        """``<endpoint>-<model_version>`` cut to 63 characters; also the Model's name."""
        return f"{endpoint_name}-{model_version}"[:63].rstrip("-")

    def deployment_config(self, deployment_config: dict[str, Any]) -> dict[str, Any]:
        """``deployment_config`` with the configured rollback alarms merged in (pure)."""
        cfg = copy.deepcopy(deployment_config)
        auto = cfg.setdefault("AutoRollbackConfiguration", {})
        alarms = [a["AlarmName"] for a in auto.get("Alarms", [])]
        for name in self.rollback_alarms:
            if name not in alarms:
                alarms.append(name)
        if len(alarms) > 10:
            raise ValueError("AutoRollbackConfiguration allows at most 10 alarms")
        if alarms:
            auto["Alarms"] = [{"AlarmName": a} for a in alarms]
        else:
            cfg.pop("AutoRollbackConfiguration")
        return cfg

    # port -------------------------------------------------------------------------------------
    def deploy(self, endpoint_name: str, model_package_arn: str, model_data_url: str,
               deployment_config: dict[str, Any]) -> str:
        """Serve ``model_package_arn`` on ``endpoint_name``; returns the EndpointConfigName requested.

        Idempotent: Model and EndpointConfig names are derived from the package
        (``<endpoint>-<ocrloop:version>``) and reused when they exist; when the endpoint already
        has (or is moving to) that config, nothing is sent. ``model_data_url`` is informational
        here: the model package carries its own ``ModelDataUrl``. A changed instance type applies
        from the next model version on (an existing config is never rewritten).

        Raises:
            EndpointBusy: an update or rollback is in progress (retry later).
            botocore.exceptions.ClientError: validation/access errors from SageMaker.
        """
        config = self.config_name(endpoint_name, self.model_version(model_package_arn))
        self._ensure_model(config, model_package_arn)
        self._ensure_endpoint_config(config, config)
        current = self._describe_or_none(endpoint_name)
        if current is not None and current["EndpointStatus"] == "Failed":
            # "DeleteEndpoint is the only operation that can be performed on a failed endpoint"
            # (DescribeEndpoint, EndpointStatus). A failed *update* rolls back to InService, so a
            # Failed endpoint never served traffic from this config.
            log.warning("endpoint %s is Failed (%s); deleting it before re-creating",
                        endpoint_name, current.get("FailureReason"))
            self._sm.delete_endpoint(EndpointName=endpoint_name)
            delay, attempts = self._delete_wait
            self._sm.get_waiter("endpoint_deleted").wait(
                EndpointName=endpoint_name, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
            current = None
        if current is None:
            self._sm.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config, **self._tags())
            return config
        pending = (current.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
        if current["EndpointConfigName"] == config or pending == config:
            return config  # already serving, or moving to, this version
        if current["EndpointStatus"] in _BUSY:
            raise EndpointBusy(f"endpoint {endpoint_name} is {current['EndpointStatus']}")
        self._release_autoscaling_if_instance_type_changes(endpoint_name, current)
        self._sm.update_endpoint(
            EndpointName=endpoint_name,
            EndpointConfigName=config,
            RetainAllVariantProperties=False,
            DeploymentConfig=self.deployment_config(deployment_config),
        )
        return config

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any]:
        """DescribeEndpoint response. Raises ``KeyError`` when there is no such endpoint."""
        current = self._describe_or_none(endpoint_name)
        if current is None:
            raise KeyError(endpoint_name)
        return current

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        """InvokeEndpoint (payload ≤ 25 MB, 60 s); returns the JSON response body."""
        response = self._rt.invoke_endpoint(EndpointName=endpoint_name, Body=body,
                                            ContentType=content_type, Accept="application/json")
        return response["Body"].read()

    # autoscaling ------------------------------------------------------------------------------
    def resource_id(self, endpoint_name: str) -> str:
        return f"endpoint/{endpoint_name}/variant/{self.variant_name}"

    def ensure_autoscaling(self, endpoint_name: str) -> dict[str, Any]:
        """Register the variant as a scalable target with a target-tracking policy on
        ``SageMakerVariantInvocationsPerInstance``. Both calls are upserts (safe to repeat); the
        variant must exist, so this runs once the endpoint is InService.

        Returns ``{"ResourceId", "MinCapacity", "MaxCapacity", "PolicyARN"}``.
        """
        low, high, target = self.autoscaling
        rid = self.resource_id(endpoint_name)
        self._aas.register_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=rid,
            ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=low, MaxCapacity=high)
        policy = self._aas.put_scaling_policy(
            PolicyName=f"{endpoint_name}-invocations", ServiceNamespace="sagemaker", ResourceId=rid,
            ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(target),
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            })
        return {"ResourceId": rid, "MinCapacity": low, "MaxCapacity": high, "PolicyARN": policy["PolicyARN"]}

    def _release_autoscaling_if_instance_type_changes(self, endpoint_name: str, current: dict[str, Any]) -> None:
        """An update that changes the instance type of an autoscaled variant fails; deregister the
        target first (``ensure_autoscaling`` re-registers it when the endpoint is back InService).
        See "Update or delete endpoints that use auto scaling" in the SageMaker guide."""
        old = self._sm.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
        old_types = {v.get("InstanceType") for v in old.get("ProductionVariants", [])}
        if old_types == {self.instance_type}:
            return
        targets = self._aas.describe_scalable_targets(
            ServiceNamespace="sagemaker", ResourceIds=[self.resource_id(endpoint_name)],
            ScalableDimension="sagemaker:variant:DesiredInstanceCount").get("ScalableTargets", [])
        if targets:
            self._aas.deregister_scalable_target(
                ServiceNamespace="sagemaker", ResourceId=self.resource_id(endpoint_name),
                ScalableDimension="sagemaker:variant:DesiredInstanceCount")

    # helpers ----------------------------------------------------------------------------------
    def _tags(self) -> dict[str, Any]:
        return {"Tags": list(self.tags)} if self.tags else {}

    def _describe_or_none(self, endpoint_name: str) -> dict[str, Any] | None:
        try:
            return _strip(self._sm.describe_endpoint(EndpointName=endpoint_name))
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise

    def _ensure_model(self, model_name: str, model_package_arn: str) -> None:
        try:
            self._sm.create_model(ModelName=model_name, ExecutionRoleArn=self.role_arn,
                                  PrimaryContainer={"ModelPackageName": model_package_arn}, **self._tags())
        except ClientError as exc:
            if not _already_exists(exc) and not re.search(r"already exist", str(exc)):
                raise

    def _ensure_endpoint_config(self, config_name: str, model_name: str) -> None:
        try:
            self._sm.create_endpoint_config(
                EndpointConfigName=config_name,
                ProductionVariants=[{
                    "VariantName": self.variant_name,
                    "ModelName": model_name,
                    "InstanceType": self.instance_type,
                    "InitialInstanceCount": self.instance_count,
                }],
                **self._tags(),
            )
        except ClientError as exc:
            if not _already_exists(exc) and not re.search(r"already exist", str(exc)):
                raise
