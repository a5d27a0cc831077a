"""Deployment parameters, read from CDK context (``cdk.json`` → ``context``, or ``-c key=value``).

Every key has a default; unknown keys under ``ocrloop`` raise, so a typo never deploys silently with
a default. ``loop`` overrides ``ocrloop.config.LoopConfig`` fields (the same config the embedded
runtime reads), e.g. ``-c ocrloop='{"loop": {"replay_ratio": 4, "auto_approve": false}}'``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ocrloop.config import LoopConfig, Names
from ocrloop.aws.settings import TRAINING_CAPACITY

CONTEXT_KEY = "ocrloop"


@dataclasses.dataclass(frozen=True)
class Params:
    """
    Attributes:
        prefix: resource-name prefix; bucket names derive from it and are global, so pick one
            unique to your organisation (``acme-ocrloop``). 3–20 lowercase letters, digits, dashes.
        loop: loop behaviour (replay ratio, gate thresholds, auto-approve, canary size and bake …).
        workteam_arn: private Ground Truth workteam (create it first; see infra/DEPLOY.md).
        training_instance_type: GPU instance of training jobs.
        training_capacity: ``spot`` (managed spot + checkpoints) or ``warm`` (on-demand + warm pool).
        warm_pool_s: warm-pool keep-alive in seconds when ``training_capacity`` is ``warm`` (≤ 3600).
        training_max_run_s / training_max_wait_s: stopping condition of training jobs (s).
        inference_instance_type / inference_instance_count: the endpoint's production variant.
        autoscaling_max: upper bound of the variant's instance count (lower bound: the count).
        autoscaling_invocations_per_instance: target of the target-tracking policy (per minute).
        latency_alarm_us: ModelLatency average that trips the rollback alarm (µs).
        use_vpc: place OpenSearch and the functions that reach it in a VPC (private subnets, one NAT
            gateway) instead of a public endpoint guarded by IAM + fine-grained access control.
        opensearch_instance_type / opensearch_nodes / opensearch_volume_gb: the search domain.
        opensearch_dedicated_masters: add 3 dedicated master nodes (production clusters).
        embedding_dim: vector width of the drawing embedder (1024 for the default ResNet-50 one).
        api_rate_limit / api_burst_limit: API Gateway stage throttling (requests/s, burst).
        alarm_email: optional e-mail subscribed to the SNS topic.
        log_retention_days: CloudWatch Logs retention of every function and the API access log.
        retain_data: keep buckets, the key and the search domain on ``cdk destroy``.
    """

    prefix: str = "ocrloop"
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(canary_bake_s=600.0))
    workteam_arn: str = ""
    training_instance_type: str = "ml.g5.xlarge"
    training_capacity: str = "spot"
    warm_pool_s: int = 0
    training_max_run_s: int = 4 * 3600
    training_max_wait_s: int = 8 * 3600
    inference_instance_type: str = "ml.c5.xlarge"
    inference_instance_count: int = 1
    autoscaling_max: int = 2
    autoscaling_invocations_per_instance: int = 60
    latency_alarm_us: int = 5_000_000
    use_vpc: bool = False
    opensearch_instance_type: str = "t3.medium.search"
    opensearch_nodes: int = 2
    opensearch_volume_gb: int = 20
    opensearch_dedicated_masters: bool = False
    embedding_dim: int = 1024
    api_rate_limit: int = 20
    api_burst_limit: int = 40
    alarm_email: str = ""
    log_retention_days: int = 90
    retain_data: bool = True

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"[a-z][a-z0-9-]{1,18}[a-z0-9]", self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: 3-20 lowercase letters, digits or dashes")
        if self.training_capacity not in TRAINING_CAPACITY:
            raise ValueError(f"training_capacity must be one of {TRAINING_CAPACITY}")
        if self.training_capacity == "spot" and self.warm_pool_s:
            raise ValueError("warm_pool_s needs training_capacity=warm: SageMaker warm pools cannot use spot")
        if not 0 <= self.warm_pool_s <= 3600:
            raise ValueError("warm_pool_s must be within 0..3600")
        if self.autoscaling_max < self.inference_instance_count:
            raise ValueError("autoscaling_max must be >= inference_instance_count")
        if not 1 <= self.loop.canary_percent <= 100:
            raise ValueError("loop.canary_percent must be within 1..100")
        if not 0 <= self.loop.canary_bake_s <= 3600:
            raise ValueError("loop.canary_bake_s must be within 0..3600 (SageMaker WaitIntervalInSeconds)")

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    @classmethod
    def from_context(cls, raw: Any) -> "Params":
        """From the ``ocrloop`` context value (a dict, or a JSON string given with ``-c``).

        Raises:
            ValueError: unknown keys or invalid values.
        """
        if raw is None:
            return cls()
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"unknown ocrloop context keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        defaults = cls()
        for key, value in data.items():
            if key == "loop":
                merged = dict(defaults.loop.to_dict(), **(json.loads(value) if isinstance(value, str) else value))
                kwargs[key] = LoopConfig.from_mapping(merged)
                continue
            typ = type(getattr(defaults, key))
            if typ is bool and isinstance(value, str):
                value = value.lower() in ("1", "true", "yes")
            kwargs[key] = typ(value)
        return cls(**kwargs)
