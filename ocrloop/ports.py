"""Ports: the interfaces the loop's core logic calls. Two implementations each (DESIGN.md):
``ocrloop.local`` (embedded default) and ``ocrloop.aws`` (boto3 / opensearch-py).

Request and response dicts mirror the SageMaker API shapes (CreateTrainingJob,
DescribeTrainingJob, CreateModelPackage, DescribeEndpoint …) so the core reads one shape everywhere.
Standard library only: Lambda code imports this.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence


class ObjectExists(Exception):
    """Raised by ``BlobStore.put(..., if_absent=True)`` when the key already holds an object."""


class BlobStore(Protocol):
    """Versioned object store (S3 bucket with versioning / a local folder).

    URIs are ``s3://bucket/key`` on AWS and ``file:///abs/path`` locally.
    """

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        """Store ``data`` (bytes) under ``key``; returns the new version id.

        Raises:
            ObjectExists: ``if_absent`` and the key exists (immutable dataset versions use this).
        """

    def get(self, key: str) -> bytes:
        """Latest version's bytes. Raises ``KeyError`` if absent."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""

    def uri(self, key: str) -> str:
        """Address other services use (``s3://…`` or ``file://…``)."""


class EventBus(Protocol):
    def put_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish events (EventBridge envelope: version, id, detail-type, source, account, time,
        region, resources, detail)."""


class Labeling(Protocol):
    def create_labeling_job(self, request: dict[str, Any]) -> str:
        """CreateLabelingJob request shape; returns LabelingJobArn."""

    def describe_labeling_job(self, name: str) -> dict[str, Any]:
        """DescribeLabelingJob response shape (LabelingJobStatus, LabelingJobOutput, Tags …)."""


class Training(Protocol):
    def create_training_job(self, request: dict[str, Any]) -> str:
        """CreateTrainingJob request shape; returns TrainingJobArn. Idempotent on the name:
        a second call with the same TrainingJobName raises ``ObjectExists``."""

    def describe_training_job(self, name: str) -> dict[str, Any]:
        """DescribeTrainingJob response shape (TrainingJobStatus, ModelArtifacts,
        FinalMetricDataList, HyperParameters, FailureReason …)."""


class Registry(Protocol):
    """Model Registry (model package group). States: PendingManualApproval, Approved, Rejected;
    ``Deployed`` is the customer-metadata stage ``ocrloop:stage`` set after a verified rollout."""

    def create_model_package(self, request: dict[str, Any]) -> str:
        """CreateModelPackage request shape; returns ModelPackageArn."""

    def describe_model_package(self, arn: str) -> dict[str, Any]: ...

    def list_model_packages(self, group: str, approval_status: str | None = None) -> list[dict[str, Any]]:
        """ModelPackageSummaryList entries, newest first."""

    def update_model_package(self, request: dict[str, Any]) -> None:
        """UpdateModelPackage request shape (ModelApprovalStatus, CustomerMetadataProperties …)."""


class Hosting(Protocol):
    def deploy(self, endpoint_name: str, model_package_arn: str, model_data_url: str,
               deployment_config: dict[str, Any]) -> str:
        """Create the endpoint, or blue/green-update it to a new endpoint config serving the model
        package; returns the EndpointConfigName requested. ``deployment_config`` is SageMaker's
        DeploymentConfig (BlueGreenUpdatePolicy + AutoRollbackConfiguration)."""

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any]:
        """DescribeEndpoint response shape (EndpointStatus, EndpointConfigName, ProductionVariants)."""

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        """InvokeEndpoint; returns the response body (JSON bytes)."""


class VectorIndex(Protocol):
    def upsert(self, ids: Sequence[str], vectors: Any, metadata: Sequence[dict[str, Any]]) -> None:
        """Add or replace drawings; ``vectors`` float32 [N, D], L2-normalised."""

    def delete(self, ids: Iterable[str]) -> None: ...

    def search(self, vector: Any, k: int = 10, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Top-k ``{"id", "score", "metadata"}``, best first; ``vector`` float32 [D]."""

    def count(self) -> int: ...
