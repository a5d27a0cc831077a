"""The single source of truth for names, event patterns and defaults.

Both the CDK app (``infra/``) and the embedded runtime (``ocrloop.local``) read this module, so a rule
deployed on EventBridge and the in-process bus match exactly the same events.

Event shapes follow the AWS documentation "Amazon SageMaker events in EventBridge"
(https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html) and
"Amazon S3 Event Notifications with EventBridge"
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html).

This module imports nothing beyond the standard library: it is loaded by Lambda functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

PROJECT = "ocrloop"

# --- EventBridge detail-types (source aws.sagemaker / aws.s3) ---------------------------------
DT_OBJECT_CREATED = "Object Created"
DT_LABELING_JOB = "SageMaker Ground Truth Labeling Job State Change"
DT_TRAINING_JOB = "SageMaker Training Job State Change"
DT_MODEL_PACKAGE = "SageMaker Model Package State Change"
DT_ENDPOINT = "SageMaker Endpoint State Change"

# --- Handler names: one EventBridge rule per transition ---------------------------------------
START_LABELING = "start_labeling"
ON_LABELING_COMPLETED = "on_labeling_completed"
ON_TRAINING_COMPLETED = "on_training_completed"
ON_MODEL_APPROVED = "on_model_approved"
ON_ENDPOINT_UPDATED = "on_endpoint_updated"
INDEX_DRAWING = "index_drawing"


def _drawing_created(raw_bucket: str) -> dict[str, Any]:
    return {
        "source": ["aws.s3"],
        "detail-type": [DT_OBJECT_CREATED],
        "detail": {
            "bucket": {"name": [raw_bucket]},
            "object": {"key": [{"prefix": "drawings/"}]},
        },
    }


def event_patterns(
    raw_bucket: str,
    model_package_group: str,
    endpoint_name: str,
    training_job_prefix: str = f"{PROJECT}-",
    labeling_job_prefix: str = f"{PROJECT}-",
) -> dict[str, dict[str, Any]]:
    """EventBridge event patterns, one per handler.

    The same dicts are given to ``aws_events.Rule(event_pattern=...)`` by the CDK app and to the
    local in-process bus (``ocrloop.local.bus``), which implements EventBridge's matching rules for
    the subset used here (exact values, ``prefix``, ``anything-but``) per
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-content-based-filtering.html.

    Args:
        raw_bucket: bucket (or local folder name) that receives new drawings.
        model_package_group: SageMaker model package group name.
        endpoint_name: the serving endpoint name.
        training_job_prefix / labeling_job_prefix: only jobs ocrloop started match.

    Returns:
        ``{handler_name: pattern}``.
    """
    return {
        START_LABELING: _drawing_created(raw_bucket),
        # The indexer embeds every new drawing (same S3 event, its own rule and target).
        INDEX_DRAWING: _drawing_created(raw_bucket),
        ON_LABELING_COMPLETED: {
            "source": ["aws.sagemaker"],
            "detail-type": [DT_LABELING_JOB],
            # The Labeling Job State Change detail carries only LabelingJobStatus; the job ARN is
            # resources[0]. Name filtering happens in the handler.
            "detail": {"LabelingJobStatus": ["Completed"]},
        },
        ON_TRAINING_COMPLETED: {
            "source": ["aws.sagemaker"],
            "detail-type": [DT_TRAINING_JOB],
            "detail": {
                "TrainingJobName": [{"prefix": training_job_prefix}],
                "TrainingJobStatus": ["Completed", "Failed", "Stopped"],
            },
        },
        ON_MODEL_APPROVED: {
            "source": ["aws.sagemaker"],
            "detail-type": [DT_MODEL_PACKAGE],
            "detail": {
                "ModelPackageGroupName": [model_package_group],
                "ModelApprovalStatus": ["Approved", "Rejected"],
            },
        },
        ON_ENDPOINT_UPDATED: {
            "source": ["aws.sagemaker"],
            "detail-type": [DT_ENDPOINT],
            "detail": {
                "EndpointName": [endpoint_name],
                # The documented example shows IN_SERVICE; the API enum is InService.
                "EndpointStatus": ["InService", "IN_SERVICE", "Failed", "FAILED"],
            },
        },
    }


FREEZE_CHOICES = ("none", "backbone", "backbone_neck")
"""Training job ``freeze`` choices (``ocrloop.model.continual``, ``ocrloop.model.train``)."""
DISTILL_ROWS = ("replay", "known", "all")
"""Training job ``distill_rows`` choices (``ocrloop.model.train.Hyperparameters``). Defined here,
in the core config, so a bad ``LoopConfig`` value is refused when the config is read, not when a
training job starts; the training code imports them from here."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Tunable behaviour of the loop; identical defaults on AWS and locally.

    Attributes:
        new_ratio / replay_ratio: training-manifest mix by sample count (default 7 : 3).
        base_pool_share: share of the replay part drawn from the base general-text pool
            (the rest comes from earlier dataset versions; all of it when there are none).
        holdout_fraction: fraction of each labeling batch's *drawings* kept out of training as the
            new-domain holdout (split by drawing, never by line, so no drawing leaks).
        seed: seed for every random choice (splits, replay draws).
        learning_rate: fine-tune LR of the trained layers. With the backbone frozen (``freeze``)
            8e-5 and a 10× head LR (``head_lr_mult``) is the measured recipe (bench/continual.py);
            a full-network fine-tune (``freeze="none"``) wants 2e-5..5e-5, and 5e-4 destroys the
            pretrained model (measured, see DESIGN.md "Facts").
        max_steps / batch_size: training budget of one training job.
        freeze / head_lr_mult / distill_alpha / distill_temperature / distill_rows: the training
            job's continual-learning recipe (``ocrloop.model.train.Hyperparameters``): PP-LCNetV3
            backbone frozen (its features computed once per line on ONNX Runtime), SVTR neck and
            CTC head trained, the head at ``head_lr_mult`` × LR, distillation from the champion
            (Hinton et al. 2015) with weight α and temperature T on replay lines and new lines it
            can read. Every batch keeps the manifest's replay share (``replay_ratio``), drawn
            character-balanced. Measured in bench/continual.py (320 steps, 2,000 new + 857 replay
            lines): held-out symbol lines 1.5 → 96.5 % of 200 and 97.2 % of 1,000 fresh ones (98.7 %
            ignoring spaces), old-domain accuracy +0.25 pts (v0 99.5 %), new-domain 93.3 % at
            ≤ 18 % of the CPU of full retraining (which reached 92.6 % at best); in the demo (240
            steps) held-out drawings 54.5 → 85.5–88.3 % (four runs), old domain never below v0 (98.1–100 %). ``distill_alpha`` 0 turns distillation off.
        gate_min_new_gain: candidate must beat the champion on the new-domain holdout by at least
            this many points of line accuracy (0 = must not be worse and must improve something).
        gate_max_old_drop: max allowed drop (points of line accuracy) on the old-domain set.
        gate_require_improvement: also require a strict gain in line or character accuracy on the
            new-domain holdout (off only for smoke runs that exercise the rollout path).
        gate_check_classes: also fail on a per-character-class recall regression
            (``ocrloop.gate.class_regressions``) when the metrics carry ``char_recall``.
        gate_min_class_support: occurrences a character class needs in a set to be checked.
        gate_max_class_recall_drop: max allowed recall drop (points) of any checked class.
        gate_max_det_hmean_drop: when the job fine-tuned detection, max allowed drop (points) of
            detection hmean (ICDAR 2015 IoU ≥ 0.5) on the held-out drawings vs the champion's det.
        gate_max_det_read_drop: when the job fine-tuned detection, max allowed drop (points) of the
            share of held-out lines read exactly by the serving engine with the candidate det vs
            the champion's det (same rec model for both).
        det_steps: detection fine-tuning steps per training job (0: detection is not trained; the
            candidate keeps the champion's det model). Needs det labels in the dataset version.
        det_batch_size / det_crop_px / det_learning_rate: detection batch (random crops), crop
            side (px, multiple of 32) and peak LR (warmup + cosine, like rec). The defaults are a
            CPU budget (≈1.5 s a step on 2 cores, ≈25 s a job with export and evaluation); on a
            GPU instance raise ``det_steps`` and use 640 px crops.
        det_label_pad: annotators' boxes are grown by this × their short side on each side before
            det training (glyph-tight boxes teach the detector to cut glyphs off the crops).
            Measured on 12 unseen corpus sheets (602 lines; 30 steps × 2 × 640 px on 5 sheets):
            pad 0 → hmean 60 → 94 % but lines read 97.2 → 83.9 %; 0.12 → 86 %, 95.2 %;
            0.18 → 79 %, 96.7 %; 0.25 → 59 %, 96.3 %.
        auto_approve: register as Approved when the gate passes (else PendingManualApproval).
        canary_percent: share of traffic the green fleet takes during the canary step.
        canary_bake_s: baking period after the canary before full shift (seconds).
        labeling_batch_size: drawings per labeling job.
    """

    new_ratio: int = 7
    replay_ratio: int = 3
    base_pool_share: float = 0.5
    holdout_fraction: float = 0.3
    seed: int = 17
    learning_rate: float = 8e-5
    max_steps: int = 240
    batch_size: int = 16
    freeze: str = "backbone"
    head_lr_mult: float = 10.0
    distill_alpha: float = 1.0
    distill_temperature: float = 2.0
    distill_rows: str = "known"
    gate_min_new_gain: float = 0.0
    gate_max_old_drop: float = 1.0
    gate_require_improvement: bool = True
    gate_check_classes: bool = True
    gate_min_class_support: int = 20
    gate_max_class_recall_drop: float = 10.0
    gate_max_det_hmean_drop: float = 1.0
    gate_max_det_read_drop: float = 1.0
    det_steps: int = 8
    det_batch_size: int = 2
    det_crop_px: int = 320
    det_learning_rate: float = 1e-4
    det_label_pad: float = 0.18
    auto_approve: bool = True
    canary_percent: int = 10
    canary_bake_s: float = 2.0
    labeling_batch_size: int = 8

    FREEZE_CHOICES = FREEZE_CHOICES
    DISTILL_ROWS = DISTILL_ROWS

    def __post_init__(self) -> None:
        if self.freeze not in self.FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {self.FREEZE_CHOICES}, got {self.freeze!r}")
        if self.distill_rows not in self.DISTILL_ROWS:
            raise ValueError(f"distill_rows must be one of {self.DISTILL_ROWS}, got {self.distill_rows!r}")
        if self.head_lr_mult <= 0 or self.distill_alpha < 0 or self.distill_temperature <= 0:
            raise ValueError("head_lr_mult > 0, distill_alpha >= 0 and distill_temperature > 0 required")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "LoopConfig":
        """Build from a dict (CDK context, JSON file, env); unknown keys raise ``ValueError``."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"unknown loop config keys: {sorted(unknown)}")
        kwargs = {}
        for key, value in data.items():
            typ = type(getattr(cls(), key))
            if typ is bool and isinstance(value, str):
                value = value.lower() in ("1", "true", "yes")
            kwargs[key] = typ(value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def rec_hyperparameters(self) -> dict[str, Any]:
        """The rec training recipe as training-job hyperparameters (``ocrloop.model.train.Hyperparameters``
        field names): budget, LR schedule (warmup a tenth of the steps), frozen layers, the
        character-balanced sampler at the manifest's replay share and distillation. The job-specific
        keys (``model_version``, ``parent_version``, ``dataset_versions``, det, gate) are the
        caller's. Used by the start-training handler and by ``bench/finetuned_sheets.py``, so a
        benchmarked fine-tune is the one the loop runs."""
        return {
            "max_steps": self.max_steps, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "warmup_steps": max(1, self.max_steps // 10),
            "seed": self.seed, "freeze_bn": "true", "checkpoint_every": max(5, self.max_steps // 4),
            "freeze": self.freeze, "head_lr_mult": self.head_lr_mult, "sampler": "balanced",
            "replay_fraction": round(self.replay_ratio / (self.new_ratio + self.replay_ratio), 6),
            "distill_alpha": self.distill_alpha, "distill_temperature": self.distill_temperature,
            "distill_rows": self.distill_rows,
        }


@dataclasses.dataclass(frozen=True)
class Names:
    """Resource names shared by the CDK app and the local runtime."""

    prefix: str = PROJECT

    @property
    def raw_bucket(self) -> str:
        return f"{self.prefix}-raw"

    @property
    def labeling_bucket(self) -> str:
        return f"{self.prefix}-labeling"

    @property
    def datasets_bucket(self) -> str:
        return f"{self.prefix}-datasets"

    @property
    def models_bucket(self) -> str:
        return f"{self.prefix}-models"

    @property
    def model_package_group(self) -> str:
        return f"{self.prefix}-rec"

    @property
    def endpoint_name(self) -> str:
        return f"{self.prefix}-ocr"

    @property
    def variant_name(self) -> str:
        # Same production variant name across updates (blue/green keeps it).
        return "AllTraffic"

    @property
    def index_alias(self) -> str:
        return f"{self.prefix}-drawings"

    def patterns(self) -> dict[str, dict[str, Any]]:
        return event_patterns(self.raw_bucket, self.model_package_group, self.endpoint_name)


def cache_dir() -> Path:
    """Where rebuilt-at-run-time artefacts live (weights, fetched drawings): never in git.

    ``$OCRLOOP_CACHE`` or ``~/.cache/ocrloop``.
    """
    path = Path(os.environ.get("OCRLOOP_CACHE", Path.home() / ".cache" / PROJECT))
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_config(path: str | os.PathLike[str] | None) -> LoopConfig:
    """Read a JSON loop config file (``None`` → defaults)."""
    if path is None:
        return LoopConfig()
    return LoopConfig.from_mapping(json.loads(Path(path).read_text()))
