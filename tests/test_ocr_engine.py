"""OcrEngine on a rendered drawing-like page: real PP-OCRv5 det + rec on ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving_fixtures import PAGE_ITEMS, make_rec_artifact, norm, render_page

from ocrloop.ocr.engine import DetParams, ModelLoadError, OcrEngine, det_resize_shape


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_rec_artifact(tmp_path_factory.mktemp("rec") / "v1", "rec-v1")


@pytest.fixture(scope="module")
def engine(model_dir):
    return OcrEngine(model_dir)


@pytest.fixture(scope="module")
def page():
    return render_page(PAGE_ITEMS)


def test_reads_every_line_in_reading_order_including_vertical_text(engine, page):
    lines = engine.read(page)
    # Reading order: top-to-bottom, left-to-right within a row (the two vertical lines share a row).
    assert [norm(line.text) for line in lines] == [
        "DRAWINGNO4711-B", "SCALE1:20", "MATERIALSTEELS235", "HEIGHT1250", "WIDTH860", "SECTIONA-A"]
    assert all(0.8 < line.score <= 1.0 for line in lines)
    by_text = {norm(line.text): np.array(line.polygon) for line in lines}
    for text, (x, y), _size, angle in PAGE_ITEMS:
        poly = by_text[norm(text)]
        assert poly.shape == (4, 2)
        w, h = np.ptp(poly[:, 0]), np.ptp(poly[:, 1])
        # Box starts where the text was drawn (±12 px) and has the drawn orientation.
        assert abs(poly[:, 0].min() - x) < 12 and abs(poly[:, 1].min() - y) < 12, (text, poly)
        assert (h > 3 * w) if angle else (w > 3 * h), (text, poly)


def test_both_vertical_directions_need_the_second_orientation(engine, page):
    """The 90° crop rotation alone leaves one of the two vertical lines upside down."""
    from rapidocr.utils.process_img import get_rotate_crop_image

    boxes = engine.detect(page)
    tall = [b for b in boxes if np.ptp(b[:, 1]) > 3 * np.ptp(b[:, 0])]
    assert len(tall) == 2
    single = engine.recognize([np.ascontiguousarray(get_rotate_crop_image(page, b.copy())) for b in tall])
    assert sorted(norm(t) for t, _ in single) != ["HEIGHT1250", "WIDTH860"]


def test_recognize_batches_keep_input_order(engine, page):
    boxes = engine.detect(page)
    from rapidocr.utils.process_img import get_rotate_crop_image

    crops = [np.ascontiguousarray(get_rotate_crop_image(page, b.copy())) for b in boxes[:3]]
    engine_small = engine.rec_batch_size
    try:
        engine.rec_batch_size = 2  # several batches of different widths
        out = engine.recognize(crops[::-1])
    finally:
        engine.rec_batch_size = engine_small
    assert [norm(t) for t, _ in out] == ["MATERIALSTEELS235", "SCALE1:20", "DRAWINGNO4711-B"]
    assert engine.recognize([]) == []


def test_blank_page_and_bad_input(engine):
    assert engine.read(np.full((200, 300, 3), 255, np.uint8)) == []
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        engine.read(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        engine.recognize([np.zeros((0, 5, 3), np.uint8)])


def test_model_version_and_dict_from_metadata(engine):
    assert engine.model_version == "rec-v1"
    assert len(engine.classes) == 18385 and engine.classes[0] == "blank" and engine.classes[-1] == " "
    assert "⌀" in engine.characters


def test_unservable_model_folders_raise(tmp_path, model_dir):
    with pytest.raises(ModelLoadError, match="model.onnx"):
        OcrEngine(tmp_path)
    corrupt = make_rec_artifact(tmp_path / "corrupt", corrupt=True)
    with pytest.raises(ModelLoadError, match="cannot load ONNX"):
        OcrEngine(corrupt)
    nocard = make_rec_artifact(tmp_path / "nocard")
    (nocard / "model_card.json").write_text(json.dumps({"base_model": "x"}))
    with pytest.raises(ModelLoadError, match="model_version"):
        OcrEngine(nocard)


def test_dict_size_must_match_the_model(tmp_path):
    import onnx

    bad = make_rec_artifact(tmp_path / "short")
    model = onnx.load(str(bad / "model.onnx"))
    model.metadata_props[0].value = "\n".join("abc")
    onnx.save(model, str(bad / "model.onnx"))
    with pytest.raises(ModelLoadError, match="3 chars"):
        OcrEngine(bad)


def test_det_resize_follows_paddleocr_limits():
    p = DetParams()
    assert det_resize_shape(640, 900, p) == (736, 1024)  # short side up to 736, multiples of 32
    assert det_resize_shape(7000, 10000, p) == (2816, 4000)  # long side capped at 4000
    assert det_resize_shape(1, 5000, p) == (32, 4000)  # degenerate strips stay bounded
    assert det_resize_shape(2000, 1000, DetParams(limit_type="max", limit_side_len=960)) == (960, 480)
