"""The set of ports one handler invocation works with.

``ocrloop.local.runtime.LocalRuntime`` builds one from folders and processes; ``ocrloop.aws.runtime``
builds one from boto3 clients and environment variables set by the CDK app. Handlers
(``ocrloop.handlers``) take ``(event, runtime)`` and nothing else. Standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .config import LoopConfig, Names
from .ports import BlobStore, EventBus, Hosting, Labeling, Registry, Training, VectorIndex


@dataclasses.dataclass
class Runtime:
    """Ports and settings for the loop.

    Attributes:
        names / config: shared names and loop settings (``ocrloop.config``).
        raw, labeling_store, datasets, models: the four blob stores (buckets).
        training_image: image URI (AWS) or entrypoint path (local) for CreateTrainingJob.
        inference_image: image URI (AWS) or server path (local) registered with each model package.
        training_instance_type: e.g. ``ml.g5.xlarge`` (AWS) / ``local``.
        role_arn: SageMaker execution role ARN (AWS) / a placeholder ARN locally.
        workteam_arn: Ground Truth workteam ARN.
        labeling_ui_template_uri / pre_annotation_lambda_arn / consolidation_lambda_arn:
            the custom Ground Truth task (AWS); local labeling ignores them.
        notify: ``notify(subject, message)``: SNS topic on AWS, log locally.
        embed_drawing: optional ``embed_drawing(drawing_id, image_bytes, metadata)`` used to refresh
            the vector index (None where the index is refreshed by a separate indexer).
    """

    names: Names
    config: LoopConfig
    raw: BlobStore
    labeling_store: BlobStore
    datasets: BlobStore
    models: BlobStore
    bus: EventBus
    labeling: Labeling
    training: Training
    registry: Registry
    hosting: Hosting
    index: VectorIndex | None = None
    training_image: str = "training_image/train.py"
    inference_image: str = "inference_image/serve.py"
    training_instance_type: str = "local"
    role_arn: str = "arn:aws:iam::000000000000:role/ocrloop-sagemaker"
    workteam_arn: str = "arn:aws:sagemaker:us-east-1:000000000000:workteam/private-crowd/ocrloop"
    labeling_ui_template_uri: str = ""
    pre_annotation_lambda_arn: str = ""
    consolidation_lambda_arn: str = ""
    notify: Callable[[str, str], None] = lambda subject, message: None
    refresh_index: Callable[["Runtime", dict[str, Any]], dict[str, Any]] | None = None
