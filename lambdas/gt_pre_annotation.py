"""Lambda: Ground Truth pre-annotation (``PreHumanTaskLambdaArn``) of ocrloop's custom task.

Ground Truth invokes it once per data object with ``{"version", "labelingJobArn", "dataObject"}``
(the manifest line); the answer's ``taskInput`` feeds the Liquid template. Logic:
``ocrloop.aws.groundtruth.pre_annotation``.
"""

from __future__ import annotations

from typing import Any

from ocrloop.aws.groundtruth import pre_annotation


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return pre_annotation(event)
