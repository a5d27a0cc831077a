"""Ground Truth: the ``Labeling`` port, and the custom task's pre-/post-annotation logic.

The custom task (template ``infra/assets/labeling_template.liquid.html``) shows a drawing with the
serving model's text lines pre-drawn; the annotator moves/adds/deletes quadrilaterals and corrects the
transcriptions. Formats follow the core (``ocrloop.handlers.start_labeling`` writes the input
manifest, ``ocrloop.manifest`` parses the output manifest):

* input manifest line: ``{"source-ref": "s3://…/drawings/a.png", "pre-annotations":
  {"model_version": …, "annotations": [{"polygon": [[x, y]×4], "transcription": …, "score": …}]}}``;
* one annotation: ``{"polygon": [[x, y]×4], "transcription": "⌀12 H7"}`` in source-image pixels,
  clockwise from the top-left (PaddleOCR's det label convention);
* output manifest, under the label attribute (``ocrloop.manifest.LABEL_ATTRIBUTE``, ``ocr-labels``):
  ``{"image_size": [{"width", "height", "depth": 3}], "annotations": [{"polygon", "transcription",
  "class": "text"}]}`` plus ``<label>-metadata``.

Request/response shapes of the two Lambdas follow "Using pre-annotation and post-annotation Lambda
functions" (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-custom-templates-step3-lambda-requirements.html):

* pre-annotation receives ``{"version", "labelingJobArn", "dataObject": <manifest line>}`` and
  returns ``{"taskInput": {...}, "isHumanAnnotationRequired": "true"}``;
* post-annotation receives ``{"version", "labelingJobArn", "labelAttributeName", "roleArn",
  "outputConfig", "payload": {"s3Uri"}}``; the payload file is a JSON list of
  ``{"datasetObjectId", "dataObject", "annotations": [{"workerId", "annotationData": {"content"}}]}``
  where ``content`` is the submitted form as a JSON string; the Lambda returns
  ``[{"datasetObjectId", "consolidatedAnnotation": {"content": {<label>: {...},
  <label>-metadata: {...}}}}]``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from typing import Any, Callable, Sequence

from botocore.exceptions import ClientError

from ..ports import ObjectExists

#: Manifest-line key holding the serving model's pre-annotations (``handlers.start_labeling``).
PREANNOTATION_KEY = "pre-annotations"
#: Names of the hidden form fields the template submits: the annotations (a JSON string) and the
#: drawing's natural size in pixels (read by the browser from the loaded image).
FORM_FIELD = "annotations"
FORM_WIDTH = "imageWidth"
FORM_HEIGHT = "imageHeight"
#: Boxes from different workers are the same text line when their axis-aligned bounds overlap with
#: IoU ≥ this.
MATCH_IOU = 0.5


class GroundTruthLabeling:
    """``Labeling`` port on SageMaker Ground Truth.

    Args:
        client: boto3 ``sagemaker`` client.
        role_arn: the labeling role; replaces the request's ``RoleArn`` (the core passes the training
            role, which must not be able to invoke the task Lambdas).
        tags: added to each job.
    """

    def __init__(self, client: Any, role_arn: str = "", tags: Sequence[dict[str, str]] = ()) -> None:
        self._sm = client
        self.role_arn = role_arn
        self.tags = list(tags)

    def create_labeling_job(self, request: dict[str, Any]) -> str:
        """CreateLabelingJob; returns the job ARN.

        Raises:
            ObjectExists: a job with that name exists (names are unique per account and region).
            botocore.exceptions.ClientError: validation (the request is checked against the service
                model), access, or quota errors.
        """
        req = dict(request)
        if self.role_arn:
            req["RoleArn"] = self.role_arn
        if self.tags:
            existing = {t["Key"] for t in req.get("Tags", [])}
            req["Tags"] = list(req.get("Tags", [])) + [t for t in self.tags if t["Key"] not in existing]
        name = req["LabelingJobName"]
        try:
            existing_job = self._sm.describe_labeling_job(LabelingJobName=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFound":
                raise
        else:
            raise ObjectExists(existing_job["LabelingJobArn"])
        try:
            return self._sm.create_labeling_job(**req)["LabelingJobArn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceInUse":
                raise ObjectExists(name) from exc
            raise

    def describe_labeling_job(self, name: str) -> dict[str, Any]:
        response = dict(self._sm.describe_labeling_job(LabelingJobName=name))
        response.pop("ResponseMetadata", None)
        return response


# --------------------------------------------------------------------------------------------
def _validate_annotation(item: Any) -> dict[str, Any]:
    """One annotation → ``{"polygon": [[x, y]×4], "transcription": str}``; raises ``ValueError``."""
    if not isinstance(item, dict):
        raise ValueError(f"annotation must be an object, got {type(item).__name__}")
    polygon = item.get("polygon")
    if (not isinstance(polygon, list) or len(polygon) != 4
            or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in polygon)):
        raise ValueError(f"polygon must be 4 [x, y] pairs, got {polygon!r}")
    pts = [[round(float(x), 2), round(float(y), 2)] for x, y in polygon]
    text = item.get("transcription", "")
    if not isinstance(text, str):
        raise ValueError("transcription must be a string")
    return {"polygon": pts, "transcription": text}


def pre_annotation(request: dict[str, Any]) -> dict[str, Any]:
    """The pre-annotation Lambda's answer for one data object.

    ``taskInput`` holds ``taskObject`` (the drawing's ``s3://`` URI; the template passes it through
    ``grant_read_access``), ``preAnnotations`` (the serving model's lines; malformed ones are
    dropped, the annotator draws them) and ``modelVersion``.

    Raises:
        ValueError: the manifest line has no ``source-ref``.
    """
    data = request.get("dataObject") or {}
    source = data.get("source-ref")
    if not source:
        raise ValueError("manifest line has no source-ref (ocrloop labels images by S3 reference)")
    pre = data.get(PREANNOTATION_KEY) or {}
    annotations = []
    for item in pre.get("annotations", []) if isinstance(pre, dict) else []:
        try:
            annotations.append(_validate_annotation(item))
        except ValueError:
            continue
    return {
        "taskInput": {"taskObject": source, "preAnnotations": annotations,
                      "modelVersion": pre.get("model_version") if isinstance(pre, dict) else None},
        "isHumanAnnotationRequired": "true",
    }


def _bounds(points: list[list[float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def iou(a: list[list[float]], b: list[list[float]]) -> float:
    """IoU of the axis-aligned bounds of two quadrilaterals (0..1)."""
    ax0, ay0, ax1, ay1 = _bounds(a)
    bx0, by0, bx1, by1 = _bounds(b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def worker_submission(annotation: dict[str, Any]) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """(annotations, (width, height) or None) one worker submitted. ``annotationData.content`` is
    the form as a JSON string; the hidden field ``annotations`` is itself a JSON string.

    Raises:
        ValueError / json.JSONDecodeError: malformed submission.
    """
    content = json.loads(annotation["annotationData"]["content"])
    field = content.get(FORM_FIELD, "[]")
    items = json.loads(field) if isinstance(field, str) else field
    size = None
    try:
        width, height = int(float(content[FORM_WIDTH])), int(float(content[FORM_HEIGHT]))
        if width > 0 and height > 0:
            size = (width, height)
    except (KeyError, TypeError, ValueError):
        pass
    return [_validate_annotation(a) for a in items], size


def consolidate_object(per_worker: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge several workers' lines for one drawing.

    One worker: taken as is. Several: the worker with the most lines is the anchor; a line is kept
    when a strict majority of workers drew a box matching it (IoU ≥ ``MATCH_IOU``); its
    transcription is the most common among the matches (ties → the anchor's), its polygon the
    anchor's.
    """
    per_worker = [w for w in per_worker if w is not None]
    if not per_worker:
        return []
    if len(per_worker) == 1:
        return per_worker[0]
    anchor_idx = max(range(len(per_worker)), key=lambda i: len(per_worker[i]))
    anchor = per_worker[anchor_idx]
    need = len(per_worker) // 2 + 1
    merged: list[dict[str, Any]] = []
    for line in anchor:
        texts = [line["transcription"]]
        for i, other in enumerate(per_worker):
            if i == anchor_idx or not other:
                continue
            best = max(other, key=lambda o: iou(line["polygon"], o["polygon"]))
            if iou(line["polygon"], best["polygon"]) >= MATCH_IOU:
                texts.append(best["transcription"])
        if len(texts) < need:
            continue
        counts = Counter(texts)
        top = max(counts.values())
        text = line["transcription"] if counts[line["transcription"]] == top else counts.most_common(1)[0][0]
        merged.append({"polygon": line["polygon"], "transcription": text})
    return merged


def consolidate(request: dict[str, Any], read_s3: Callable[[str], bytes]) -> list[dict[str, Any]]:
    """The post-annotation Lambda's answer for one batch.

    Args:
        request: the Lambda event (``payload.s3Uri``, ``labelAttributeName``, ``labelingJobArn``).
        read_s3: reads an ``s3://`` URI (with the Lambda's role; the payload is in the labeling
            bucket).

    Raises:
        ValueError / json.JSONDecodeError: a malformed worker submission (Ground Truth retries the
            Lambda, then fails the objects, which surfaces as a Failed labeling job).
    """
    label = request["labelAttributeName"]
    job_name = request["labelingJobArn"].rsplit("/", 1)[-1]
    payload = json.loads(read_s3(request["payload"]["s3Uri"]))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    out = []
    for obj in payload:
        submissions = [worker_submission(a) for a in obj.get("annotations", [])]
        lines = consolidate_object([ann for ann, _ in submissions])
        sizes = [size for _, size in submissions if size]
        content: dict[str, Any] = {
            f"{label}-metadata": {
                "type": "groundtruth/custom",
                "job-name": job_name,
                "human-annotated": "yes",
                "creation-date": now,
                "worker-count": len(submissions),
            }
        }
        if sizes:
            width, height = Counter(sizes).most_common(1)[0][0]
            content[label] = {
                "image_size": [{"width": width, "height": height, "depth": 3}],
                "annotations": [dict(line, **{"class": "text"}) for line in lines],
            }
        else:
            content[f"{label}-metadata"]["failure-reason"] = "no worker submitted the image size"
        out.append({"datasetObjectId": obj["datasetObjectId"], "consolidatedAnnotation": {"content": content}})
    return out
