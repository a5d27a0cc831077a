"""Model artifact export: Paddle inference model, ONNX with the dict in its metadata, reload."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest_model import base_model, base_model_dir, paddle_inference_probs  # noqa: F401  (fixtures)

LINES = ["⌀40 h6 ±0.008", "技术要求", "A-A SECTION", "2×45°"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, base_model_dir):
    """A perturbed (so: not the v0) model exported to a fresh folder."""
    import paddle

    from ocrloop.model.export import export_artifact, load_artifact
    from ocrloop.model.lines import render_line

    model, classes = load_artifact(base_model_dir)
    rng = np.random.default_rng(0)
    bias = model.head.bias.numpy()
    model.head.bias.set_value((bias + rng.normal(0, 0.05, bias.shape)).astype(np.float32))
    out = tmp_path_factory.mktemp("artifact")
    card = {"model_version": "v-test", "base_model": "PP-OCRv5_mobile_rec", "parent_version": "v0"}
    export_artifact(model, classes, out, model_card=card, metrics={"candidate": {"n": 0}})
    images = [render_line(t) for t in LINES]
    assert paddle.in_dynamic_mode()
    return model, classes, out, images


def test_artifact_folder_is_complete(exported):
    from ocrloop.model.export import ARTIFACT_FILES, is_complete

    _, classes, out, _ = exported
    assert is_complete(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(ARTIFACT_FILES)
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["model_version"] == "v-test" and card["export_check"]["passed"]
    assert card["export_check"]["max_abs_diff"] <= 1e-4
    assert json.loads((out / "metrics.json").read_text()) == {"candidate": {"n": 0}}
    assert (out / "dict.txt").read_text(encoding="utf-8").split("\n")[:-1] == classes[1:-1]


def test_onnx_matches_paddle_with_dynamic_batch_and_width(exported):
    from ocrloop.model.export import compare_with_onnx, ort_session

    model, classes, out, images = exported
    sess = ort_session(out / "model.onnx")
    shape = sess.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:3] == [3, 48] and isinstance(shape[3], str)
    for batch in (images, images[1:2], images[::2]):
        result = compare_with_onnx(model, classes, out / "model.onnx", batch)
        assert result["max_abs_diff"] <= 1e-4, result
        assert result["decoded_identical"], result


def test_onnx_carries_the_dict_in_metadata_rapidocr_style(exported):
    import onnx

    _, classes, out, _ = exported
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    # RapidOCR: character list = metadata.splitlines(), then it adds "blank" first and " " last
    assert ["blank", *meta["character"].splitlines(), " "] == classes
    assert "⌀" in meta["character"].splitlines()


def test_paddle_inference_model_runs_with_paddlex_config(exported):
    """What paddleocr 3.x / paddlex do with ``model_dir``: read inference.yml, run the static
    ``inference.json``/``.pdiparams`` with Paddle Inference, decode with paddlex's CTCLabelDecode."""
    from paddlex.inference.models.text_recognition.processors import CTCLabelDecode
    from paddlex.inference.models.utils.model_config import load_model_config

    from ocrloop.model.export import ort_session
    from ocrloop.textline import ctc_greedy_decode, make_batch

    _, classes, out, images = exported
    cfg = load_model_config(out)
    assert cfg["Global"]["model_name"] == "PP-OCRv5_mobile_rec"
    assert cfg["PostProcess"]["name"] == "CTCLabelDecode"
    assert {"RecResizeImg": {"image_shape": [3, 48, 320]}} in cfg["PreProcess"]["transform_ops"]
    decode = CTCLabelDecode(character_list=cfg["PostProcess"]["character_dict"])
    assert decode.character == classes

    x = make_batch(images)
    probs = paddle_inference_probs(out, x)
    texts, _ = decode([probs])
    onnx_probs = ort_session(out / "model.onnx").run(None, {"x": x})[0]
    assert np.abs(probs - onnx_probs).max() <= 1e-4
    assert texts == [t for t, _ in ctc_greedy_decode(onnx_probs, classes)]


def test_load_artifact_round_trip(exported):
    from ocrloop.model.export import load_artifact, paddle_probs
    from ocrloop.textline import make_batch

    model, classes, out, images = exported
    loaded, loaded_classes = load_artifact(out)
    assert loaded_classes == classes
    x = make_batch(images)
    assert np.abs(paddle_probs(loaded, x) - paddle_probs(model, x)).max() < 1e-6


def test_export_rejects_a_class_count_mismatch(base_model, tmp_path):
    from ocrloop.model.export import export_artifact

    model, classes = base_model
    with pytest.raises(ValueError, match="classes"):
        export_artifact(model, classes[:-1], tmp_path, model_card={}, metrics={})
    with pytest.raises(ValueError, match="blank"):
        export_artifact(model, ["x", *classes[1:]], tmp_path, model_card={}, metrics={})
