"""Powertools parser models of the events the Lambdas receive.

Each Lambda validates its event against one of these before calling the core handler, so a
malformed or unexpected event fails fast with a ``pydantic.ValidationError`` (the Lambda errors, the
event lands in the DLQ after the retries) instead of failing deep in the core.

Shapes are the documented examples:
  * S3 ``Object Created`` via EventBridge: powertools' ``S3EventNotificationEventBridgeModel``
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html);
  * SageMaker Training Job / Endpoint / Model Package state changes
    (https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html):
    the detail mirrors the Describe* response;
  * Ground Truth Labeling Job State Change: ``detail`` has only ``LabelingJobStatus``, the job ARN is
    ``resources[0]`` (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-monitor-cloud-watch.html).

Detail models allow extra fields (SageMaker adds fields over time); only what ocrloop reads is
declared. Timestamps stay as given (the examples mix ISO strings and epoch milliseconds).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from aws_lambda_powertools.utilities.parser.models import (
    EventBridgeModel,
    S3EventNotificationEventBridgeModel,
)
from pydantic import BaseModel, ConfigDict, Field

from .. import config


class _Detail(BaseModel):
    model_config = ConfigDict(extra="allow")


class LabelingJobDetail(_Detail):
    LabelingJobStatus: Literal["Initializing", "InProgress", "Completed", "Failed", "Stopping", "Stopped"]


class LabelingJobStateChange(EventBridgeModel):
    detail_type: Literal["SageMaker Ground Truth Labeling Job State Change"] = Field(alias="detail-type")
    source: Literal["aws.sagemaker"]
    resources: list[str] = Field(min_length=1)
    detail: LabelingJobDetail


class MetricData(_Detail):
    MetricName: str
    Value: float


class TrainingJobDetail(_Detail):
    TrainingJobName: str
    TrainingJobArn: str
    TrainingJobStatus: Literal["InProgress", "Completed", "Failed", "Stopping", "Stopped"]
    FailureReason: Optional[str] = None
    HyperParameters: Optional[dict[str, str]] = None
    ModelArtifacts: Optional[dict[str, Any]] = None
    FinalMetricDataList: Optional[list[MetricData]] = None


class TrainingJobStateChange(EventBridgeModel):
    detail_type: Literal["SageMaker Training Job State Change"] = Field(alias="detail-type")
    source: Literal["aws.sagemaker"]
    detail: TrainingJobDetail


class ModelPackageDetail(_Detail):
    ModelPackageGroupName: str
    ModelPackageArn: str
    ModelPackageVersion: Optional[int] = None
    ModelApprovalStatus: Literal["Approved", "Rejected", "PendingManualApproval"]
    ModelPackageStatus: Optional[str] = None
    InferenceSpecification: Optional[dict[str, Any]] = None
    CustomerMetadataProperties: Optional[dict[str, str]] = None


class ModelPackageStateChange(EventBridgeModel):
    detail_type: Literal["SageMaker Model Package State Change"] = Field(alias="detail-type")
    source: Literal["aws.sagemaker"]
    detail: ModelPackageDetail


class EndpointDetail(_Detail):
    EndpointName: str
    EndpointArn: str
    EndpointConfigName: Optional[str] = None
    # The documented example spells the status IN_SERVICE; DescribeEndpoint says InService.
    EndpointStatus: str
    ProductionVariants: Optional[list[dict[str, Any]]] = None
    FailureReason: Optional[str] = None


class EndpointStateChange(EventBridgeModel):
    detail_type: Literal["SageMaker Endpoint State Change"] = Field(alias="detail-type")
    source: Literal["aws.sagemaker"]
    detail: EndpointDetail


class ObjectCreated(S3EventNotificationEventBridgeModel):
    detail_type: Literal["Object Created"] = Field(alias="detail-type")
    source: Literal["aws.s3"]


#: Handler name → the model its events must satisfy.
MODELS: dict[str, type[EventBridgeModel]] = {
    config.START_LABELING: ObjectCreated,
    config.INDEX_DRAWING: ObjectCreated,
    config.ON_LABELING_COMPLETED: LabelingJobStateChange,
    config.ON_TRAINING_COMPLETED: TrainingJobStateChange,
    config.ON_MODEL_APPROVED: ModelPackageStateChange,
    config.ON_ENDPOINT_UPDATED: EndpointStateChange,
}

#: Detail-type → model (for code that receives several kinds).
BY_DETAIL_TYPE: dict[str, type[EventBridgeModel]] = {
    config.DT_OBJECT_CREATED: ObjectCreated,
    config.DT_LABELING_JOB: LabelingJobStateChange,
    config.DT_TRAINING_JOB: TrainingJobStateChange,
    config.DT_MODEL_PACKAGE: ModelPackageStateChange,
    config.DT_ENDPOINT: EndpointStateChange,
}
