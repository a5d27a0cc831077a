"""Detection precision / recall / hmean (ICDAR 2015, IoU ≥ 0.5 one-to-one) and the det gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ocrloop.config import LoopConfig
from ocrloop.gate import decide
from ocrloop.model.det_eval import evaluate_detections, match_image
from test_core_local import rt  # noqa: F401  (fixture: the local runtime of the core tests)


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def test_hand_made_boxes():
    gt = [box(0, 0, 100, 20), box(0, 40, 100, 60), box(0, 80, 50, 100)]
    det = [
        box(0, 0, 100, 20),  # exact
        box(10, 40, 100, 60),  # IoU 0.9
        box(0, 80, 20, 100),  # IoU 0.4: no match
        box(200, 200, 220, 210),  # false positive
    ]
    r = match_image(gt, det)
    assert (r.matched, r.gt, r.det) == (2, 3, 4)
    out = evaluate_detections([(gt, det, None)])
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == pytest.approx(2 / 3)
    assert out["hmean"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_iou_threshold_is_inclusive_and_matching_one_to_one():
    gt = [box(0, 0, 100, 10)]
    half = box(0, 0, 50, 10)  # IoU exactly 0.5
    assert match_image(gt, [half]).matched == 1
    assert match_image(gt, [box(0, 0, 49, 10)]).matched == 0
    # two detections on one line: only one counts, the other is a false positive
    r = match_image(gt, [box(0, 0, 100, 10), box(1, 0, 100, 10)])
    assert (r.matched, r.det) == (1, 2)
    # one detection spanning two lines matches neither (IoU < 0.5 each)
    two = [box(0, 0, 100, 10), box(0, 10, 100, 20)]
    assert match_image(two, [box(0, 0, 100, 21)]).matched == 0  # IoU 1000/2100 with each


def test_dont_care_regions_and_pooling():
    gt = [box(0, 0, 100, 20), box(0, 50, 100, 70)]
    det = [box(0, 0, 100, 20), box(5, 52, 60, 68)]  # second lies inside the don't-care polygon
    r = match_image(gt, det, [False, True])
    assert (r.matched, r.gt, r.det) == (1, 1, 1)
    pooled = evaluate_detections([(gt, det, [False, True]), ([box(0, 0, 10, 10)], [], None)])
    assert pooled["images"] == 2 and pooled["recall"] == pytest.approx(0.5) and pooled["precision"] == 1.0
    empty = evaluate_detections([([], [], None)])
    assert empty["hmean"] == 0.0 and empty["precision"] == 0.0
    with pytest.raises(ValueError):
        match_image(gt, det, [True])


def _metrics(champ_hmean=None, cand_hmean=None, champ_read=None, cand_read=None):
    def side(line, hmean, read):
        out = {"validation": {"line_acc": line, "char_acc": line}, "olddomain": {"line_acc": 0.9, "char_acc": 0.95}}
        if hmean is not None:
            out["det"] = {"precision": hmean, "recall": hmean, "hmean": hmean}
            if read is not None:
                out["det"]["read_line_acc"] = read
        return out

    return {"champion": side(0.5, champ_hmean, champ_read), "candidate": side(0.6, cand_hmean, cand_read)}


def test_gate_rejects_a_detection_hmean_drop_beyond_the_tolerance():
    config = LoopConfig(gate_max_det_hmean_drop=1.0)
    ok = decide(_metrics(0.80, 0.795), config)
    assert ok.passed and ok.det_hmean_drop_pts == pytest.approx(0.5)
    assert any("detection hmean 80.00% → 79.50%" in r for r in ok.reasons)
    bad = decide(_metrics(0.80, 0.75), config)
    assert not bad.passed and bad.det_hmean_drop_pts == pytest.approx(5.0)
    assert any(r.startswith("detection hmean 80.00% → 75.00% (-5.00 pts) > allowed 1.00") for r in bad.reasons)
    assert decide(_metrics(0.80, 0.75), LoopConfig(gate_max_det_hmean_drop=6.0)).passed
    # without det results (det not trained) the gate is the rec gate
    rec_only = decide(_metrics(), config)
    assert rec_only.passed and rec_only.det_hmean_drop_pts is None
    assert "det_hmean_drop_pts" in rec_only.to_json()


def test_gate_rejects_a_det_that_reads_fewer_lines_despite_a_better_hmean():
    config = LoopConfig(gate_max_det_hmean_drop=1.0, gate_max_det_read_drop=1.0)
    bad = decide(_metrics(0.60, 0.90, 0.95, 0.84), config)  # tighter boxes: hmean up, crops cut
    assert not bad.passed and bad.det_hmean_drop_pts == pytest.approx(-30.0)
    assert bad.det_read_drop_pts == pytest.approx(11.0)
    assert any(r.startswith("lines read with the candidate det 95.00% → 84.00% (-11.00 pts) > allowed 1.00")
               for r in bad.reasons)
    ok = decide(_metrics(0.60, 0.90, 0.95, 0.955), config)
    assert ok.passed and ok.det_read_drop_pts == pytest.approx(-0.5)
    assert decide(_metrics(0.60, 0.90, 0.95, 0.84), LoopConfig(gate_max_det_read_drop=20.0)).passed
    # the job did not promote that det (the candidate ships the champion's): nothing to gate, reason kept
    kept = _metrics(0.60, 0.90, 0.95, 0.84)
    kept["det"] = {"trained": True, "promoted": False, "not_promoted_reasons": ["lines read 95.00% → 84.00%"]}
    out = decide(kept, config)
    assert out.passed and out.det_read_drop_pts is None and out.det_hmean_drop_pts is None
    assert any(r.startswith("det fine-tuned but not promoted") and "84.00%" in r for r in out.reasons)


@pytest.mark.parametrize("cand_hmean, approval", [(0.81, "Approved"), (0.70, "Rejected")])
def test_training_completed_gates_on_det_and_registers_det_metrics(rt, cand_hmean, approval):
    """on_training_completed reads metrics.json from the artifact, gates on det hmean and records it."""
    from ocrloop import events, handlers

    metrics = _metrics(0.80, cand_hmean, 0.9, 0.9)
    metrics["det"] = {"trained": True, "promoted": True, "train": {"steps": 8}}
    rt.models.put("jobs/j1/metrics.json", json.dumps(metrics).encode())
    rt.models.put("jobs/j1/model_card.json", b"{}")
    describe = {"TrainingJobName": f"j1-{approval}", "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:1:training-job/j1-{approval}",
                "TrainingJobStatus": "Completed",
                "ModelArtifacts": {"S3ModelArtifacts": rt.models.uri("jobs/j1")}, "HyperParameters": {}}
    out = handlers.on_training_completed(events.training_job_state_change(describe), rt)
    assert out["approval"] == approval
    pkg = rt.registry.describe_model_package(out["model_package"])
    det = json.loads(pkg["CustomerMetadataProperties"]["ocrloop:det"])
    assert det == {"trained": True, "inherited": False, "promoted": True, "steps": 8, "champion_hmean": 0.80, "candidate_hmean": cand_hmean,
                   "champion_read_line_acc": 0.9, "candidate_read_line_acc": 0.9}
    gate = json.loads(pkg["CustomerMetadataProperties"]["ocrloop:gate"])
    assert gate["det_hmean_drop_pts"] == pytest.approx(100 * (0.80 - cand_hmean))
    assert any("detection hmean" in r for r in gate["reasons"])
