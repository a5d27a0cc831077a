"""End to end: the whole local loop on a small real subset (real drawings, real weights, a real
Paddle fine-tune in a child process, real endpoint processes, a real faiss index).

The training budget is a smoke budget (a few steps), so the gate is told not to require an
improvement here; the demo (`ocrloop demo`) runs the real budget and the real gate.
"""

import json

import pytest

from ocrloop.config import LoopConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from ocrloop import demo

    home = tmp_path_factory.mktemp("e2e")
    cfg = LoopConfig(max_steps=3, batch_size=4, gate_require_improvement=False, gate_max_old_drop=100.0,
                     gate_max_det_read_drop=100.0, canary_bake_s=0.5)
    return demo.run(home, cfg, max_drawings=5, base_lines=40)


def test_loop_ends_with_v1_served(result):
    assert result["ok"], json.dumps({k: result.get(k) for k in ("models", "dead_letters", "notifications")}, default=str)
    stages = {m["version"]: (m["approval"], m["stage"]) for m in result["models"]}
    assert stages[result["v1"]] == ("Approved", "Deployed")
    v0 = [v for v in stages if v != result["v1"]]
    assert len(v0) == 1 and stages[v0[0]] == ("Approved", "Retired")
    assert result["endpoint"]["EndpointStatus"] == "InService"
    assert result["served_probe"]["model_version"] == result["v1"]
    assert result["dead_letters"] == []


def test_training_and_lineage(result):
    t = result["train"]
    assert t["steps"] == 3 and t["batch_size"] == 4
    assert result["model_card"]["parent_version"].startswith("v0")
    ds = result["dataset_version"]
    assert ds["train_samples"] > 0 and ds["drawings"] == 5
    for which in ("champion", "candidate"):
        for split in ("validation", "olddomain"):
            m = result["metrics"][which][split]
            assert 0.0 <= m["line_acc"] <= 1.0 and m["n"] > 0


def test_detection_fine_tuned_in_the_same_loop_and_gated(result):
    from ocrloop.config import LoopConfig

    m = result["metrics"]
    det = m["det"]
    assert det["trained"] and det["source"] == "stock" and det["train"]["steps"] == LoopConfig().det_steps
    champ, cand = m["champion"]["det"], m["candidate"]["det"]
    held = result["dataset_version"]["holdout_drawings"]
    assert cand["images"] == champ["images"] == held and cand["gt"] == champ["gt"] > 0
    if det["promoted"]:  # the served v1 runs the fine-tuned det, gated on hmean and lines read
        assert result["gate"]["det_hmean_drop_pts"] == pytest.approx(100 * (champ["hmean"] - cand["hmean"]), abs=1e-3)
        assert result["gate"]["det_read_drop_pts"] == pytest.approx(
            100 * (champ["read_line_acc"] - cand["read_line_acc"]), abs=1e-3)
    else:  # the job kept v0's (stock) det and says why
        assert det["not_promoted_reasons"] and result["gate"]["det_hmean_drop_pts"] is None
    assert result["model_card"]["det"]["trained"]


def test_index_refreshed_with_v1_text(result):
    assert result["index"]["count"] == 5
    assert result["index"]["probe_top1"] == result["served_probe"]["drawing_id"]
    assert result["index"]["probe_top1_ocr_model"] == result["v1"]


def test_report_written(result):
    from pathlib import Path

    text = Path(result["report"]).read_text()
    assert "v0 vs v1" in text and result["v1"] in text


def test_restart_resumes_serving_the_deployed_model(result):
    from pathlib import Path

    from ocrloop.local.runtime import LocalRuntime

    with LocalRuntime(Path(result["home"]), with_index=False) as lr:
        assert lr.resume_serving() == result["endpoint"]["EndpointConfigName"]
        probe = Path(lr.rt.raw.path(f"drawings/{result['served_probe']['drawing_id']}.png")).read_bytes()
        body = json.loads(lr.hosting.invoke(lr.names.endpoint_name, probe, "image/png"))
        assert body["model_version"] == result["v1"]
    with LocalRuntime(Path(result["home"]), with_index=False) as lr:  # nothing deployed twice
        assert lr.hosting.describe_endpoint(lr.names.endpoint_name)["EndpointStatus"] != "InService"
