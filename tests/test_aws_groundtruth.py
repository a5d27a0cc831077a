"""Ground Truth: CreateLabelingJob with the core's request (validated by botocore's Stubber
against the SageMaker service model), the pre-annotation and consolidation Lambdas on the request
shapes Ground Truth sends, and the consolidated output read back by the core's manifest parser."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber

from aws_fixtures import (ACCOUNT, LABELING_ROLE_ARN, NAMES, REGION, ROLE_ARN, WORKTEAM_ARN,  # noqa: F401
                          aws_credentials, moto_aws, sagemaker_semantics)
from lambdas import gt_consolidation, gt_pre_annotation
from ocrloop import handlers
from ocrloop.aws.groundtruth import GroundTruthLabeling, consolidate_object, iou
from ocrloop.config import LoopConfig
from ocrloop.manifest import LABEL_ATTRIBUTE, parse_output_manifest
from ocrloop.ports import ObjectExists

JOB = "ocrloop-0a1b2c3d4e"
JOB_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:labeling-job/{JOB}"


def _core_request() -> dict:
    store = SimpleNamespace(uri=lambda key: f"s3://{NAMES.labeling_bucket}/{key}")
    rt = SimpleNamespace(
        names=NAMES, config=LoopConfig(), labeling_store=store, role_arn=ROLE_ARN, workteam_arn=WORKTEAM_ARN,
        labeling_ui_template_uri="s3://cdk-assets/template.liquid.html",
        pre_annotation_lambda_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ocrloop-gt-pre-annotation",
        consolidation_lambda_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ocrloop-gt-consolidation")
    return handlers.labeling_job_request(rt, JOB, store.uri(f"jobs/{JOB}/input.manifest"))


def test_create_labeling_job_request_is_valid_for_sagemaker():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    request = _core_request()
    expected = dict(request, RoleArn=LABELING_ROLE_ARN,
                    Tags=request["Tags"] + [{"Key": "ocrloop:prefix", "Value": "ocrloop"}])
    labeling = GroundTruthLabeling(client, LABELING_ROLE_ARN, tags=[{"Key": "ocrloop:prefix", "Value": "ocrloop"}])
    with Stubber(client) as stub:
        stub.add_client_error("describe_labeling_job", "ResourceNotFound", f"Could not find labeling job {JOB}",
                              expected_params={"LabelingJobName": JOB})
        stub.add_response("create_labeling_job", {"LabelingJobArn": JOB_ARN}, expected)
        assert labeling.create_labeling_job(request) == JOB_ARN
        # A second start of the same batch finds the job: no second CreateLabelingJob.
        stub.add_response("describe_labeling_job", {
            "LabelingJobStatus": "InProgress", "LabelCounters": {}, "CreationTime": "2026-11-21T00:00:00Z",
            "LastModifiedTime": "2026-11-21T00:00:00Z", "JobReferenceCode": "x", "LabelingJobName": JOB,
            "LabelingJobArn": JOB_ARN, "InputConfig": request["InputConfig"], "OutputConfig": request["OutputConfig"],
            "RoleArn": LABELING_ROLE_ARN, "HumanTaskConfig": request["HumanTaskConfig"]}, {"LabelingJobName": JOB})
        with pytest.raises(ObjectExists):
            labeling.create_labeling_job(request)
        stub.assert_no_pending_responses()
    human = request["HumanTaskConfig"]
    assert human["UiConfig"]["UiTemplateS3Uri"] == "s3://cdk-assets/template.liquid.html"
    assert human["PreHumanTaskLambdaArn"].endswith("function:ocrloop-gt-pre-annotation")


def test_pre_annotation_lambda_turns_the_manifest_line_into_task_input():
    line = {"source-ref": f"s3://{NAMES.raw_bucket}/drawings/flange.png",
            "pre-annotations": {"model_version": "ocrloop-v3", "annotations": [
                {"polygon": [[10, 10], [90, 10], [90, 30], [10, 30]], "transcription": "⌀12 H7", "score": 0.93},
                {"polygon": [[1, 2]], "transcription": "broken"}]}}
    out = gt_pre_annotation.handler({"version": "2018-10-16", "labelingJobArn": JOB_ARN, "dataObject": line}, None)
    assert out["isHumanAnnotationRequired"] == "true"
    assert out["taskInput"]["taskObject"] == line["source-ref"]
    assert out["taskInput"]["modelVersion"] == "ocrloop-v3"
    assert out["taskInput"]["preAnnotations"] == [
        {"polygon": [[10.0, 10.0], [90.0, 10.0], [90.0, 30.0], [10.0, 30.0]], "transcription": "⌀12 H7"}]
    failed = {"source-ref": line["source-ref"], "pre-annotations": {"error": "no endpoint", "annotations": []}}
    assert gt_pre_annotation.handler({"dataObject": failed}, None)["taskInput"]["preAnnotations"] == []
    with pytest.raises(ValueError):
        gt_pre_annotation.handler({"dataObject": {"source": "text"}}, None)


def _submission(worker: str, lines: list[tuple[list, str]], size=(640, 320)) -> dict:
    form = {"annotations": json.dumps([{"polygon": p, "transcription": t} for p, t in lines]),
            "imageWidth": str(size[0]), "imageHeight": str(size[1])}
    return {"workerId": worker, "annotationData": {"content": json.dumps(form)}}


BOX_A = [[40, 40], [200, 40], [200, 70], [40, 70]]
BOX_B = [[40, 120], [260, 120], [260, 150], [40, 150]]
BOX_A2 = [[42, 41], [198, 41], [199, 71], [41, 69]]


def test_consolidation_lambda_output_is_read_by_the_core_parser(moto_aws):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=NAMES.labeling_bucket)
    payload = [
        {"datasetObjectId": "0", "dataObject": {"s3Uri": f"s3://{NAMES.raw_bucket}/drawings/a.png"},
         "annotations": [_submission("w1", [(BOX_A, "⌀12 H7"), (BOX_B, "R5 ±0.1")])]},
        {"datasetObjectId": "1", "dataObject": {"s3Uri": f"s3://{NAMES.raw_bucket}/drawings/b.png"},
         "annotations": [_submission("w1", [(BOX_A, "A")]), _submission("w2", [(BOX_A2, "B")]),
                         _submission("w3", [(BOX_A2, "B"), (BOX_B, "lonely")])]},
    ]
    key = f"output/{JOB}/annotations/consolidated-annotation/consolidation-request/iteration-1/req.json"
    s3.put_object(Bucket=NAMES.labeling_bucket, Key=key, Body=json.dumps(payload).encode())
    gt_consolidation._S3 = None
    request = {"version": "2018-10-16", "labelingJobArn": JOB_ARN, "labelAttributeName": LABEL_ATTRIBUTE,
               "roleArn": LABELING_ROLE_ARN, "outputConfig": f"s3://{NAMES.labeling_bucket}/output/{JOB}/annotations",
               "payload": {"s3Uri": f"s3://{NAMES.labeling_bucket}/{key}"}}
    out = gt_consolidation.handler(request, None)
    assert [o["datasetObjectId"] for o in out] == ["0", "1"]
    # Ground Truth writes content into the output manifest line next to source-ref.
    lines = [json.dumps(dict({"source-ref": p["dataObject"]["s3Uri"]}, **o["consolidatedAnnotation"]["content"]),
                        ensure_ascii=False) for p, o in zip(payload, out)]
    images, quarantine = parse_output_manifest(lines)
    assert quarantine == []
    assert [(a.text) for a in images[0].annotations] == ["⌀12 H7", "R5 ±0.1"]
    assert (images[0].width, images[0].height) == (640, 320)
    # Three workers: the majority transcription wins; a box only one of three drew is dropped.
    assert [a.text for a in images[1].annotations] == ["B"]
    meta = json.loads(lines[1])[f"{LABEL_ATTRIBUTE}-metadata"]
    assert meta["type"] == "groundtruth/custom" and meta["job-name"] == JOB and meta["worker-count"] == 3


def test_consolidation_without_image_size_fails_the_object_visibly():
    sub = {"workerId": "w", "annotationData": {"content": json.dumps({"annotations": "[]"})}}
    payload = [{"datasetObjectId": "7", "annotations": [sub]}]
    from ocrloop.aws.groundtruth import consolidate

    out = consolidate({"labelingJobArn": JOB_ARN, "labelAttributeName": LABEL_ATTRIBUTE, "payload": {"s3Uri": "s3://b/k"}},
                      lambda uri: json.dumps(payload).encode())
    content = out[0]["consolidatedAnnotation"]["content"]
    assert LABEL_ATTRIBUTE not in content
    images, quarantine = parse_output_manifest([json.dumps(dict({"source-ref": "s3://b/x.png"}, **content))])
    assert images == [] and "labeling failed" in quarantine[0].reason


def test_majority_rules():
    assert iou(BOX_A, BOX_A2) > 0.9 and iou(BOX_A, BOX_B) == 0.0
    two = consolidate_object([[{"polygon": BOX_A, "transcription": "x"}], [{"polygon": BOX_A2, "transcription": "y"}]])
    assert two == [{"polygon": BOX_A, "transcription": "x"}]  # tie → the anchor's text
    assert consolidate_object([]) == []


def test_worker_template_matches_the_lambdas_contract(tmp_path):
    """The Liquid template reads what the pre-annotation Lambda returns and submits what the
    consolidation Lambda reads; its script is valid JavaScript (``node --check``)."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    from ocrloop.aws.groundtruth import FORM_FIELD, FORM_HEIGHT, FORM_WIDTH

    html = (Path(__file__).resolve().parents[1] / "infra" / "assets" / "labeling_template.liquid.html").read_text()
    assert '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>' in html
    assert "<crowd-form>" in html and "</crowd-form>" in html
    assert "{{ task.input.taskObject | grant_read_access }}" in html
    assert "task.input.preAnnotations | to_json" in html and "task.input.modelVersion" in html
    for field in (FORM_FIELD, FORM_WIDTH, FORM_HEIGHT):
        assert f'name="{field}"' in html
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == 1 and "{{" not in scripts[0]
    node = shutil.which("node")
    assert node, "node is needed to syntax-check the template's script"
    js = tmp_path / "template.js"
    js.write_text(scripts[0])
    result = subprocess.run([node, "--check", str(js)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
