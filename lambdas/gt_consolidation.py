"""Lambda: Ground Truth annotation consolidation (``AnnotationConsolidationLambdaArn``).

Ground Truth invokes it with the ``payload.s3Uri`` of a batch of worker submissions (written to the
labeling bucket); it returns one consolidated annotation per data object, which Ground Truth writes
into the output manifest under the label attribute. Logic: ``ocrloop.aws.groundtruth.consolidate``.
"""

from __future__ import annotations

from typing import Any

import boto3

from ocrloop.aws.groundtruth import consolidate
from ocrloop.aws.s3 import split_s3_uri

_S3: Any = None


def read_s3(uri: str) -> bytes:
    global _S3
    if _S3 is None:
        _S3 = boto3.client("s3")
    bucket, key = split_s3_uri(uri)
    return _S3.get_object(Bucket=bucket, Key=key)["Body"].read()


def handler(event: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    return consolidate(event, read_s3)
