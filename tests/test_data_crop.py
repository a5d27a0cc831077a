"""crop_line follows PaddleOCR's get_rotate_crop_image, vertical text included."""

from __future__ import annotations

import numpy as np
import pytest

from ocrloop.data.crop import crop_line, expand_polygon, order_points_clockwise
from ocrloop.data.render import render_dxf


def test_axis_aligned_crop_shape_and_content():
    img = np.zeros((60, 100, 3), np.uint8)
    img[10:30, 20:80] = (0, 0, 255)
    poly = np.float32([[20, 10], [80, 10], [80, 30], [20, 30]])
    crop = crop_line(img, poly)
    assert crop.shape == (20, 60, 3) and crop.dtype == np.uint8
    assert (crop[2:-2, 2:-2] == (0, 0, 255)).all()


def test_tall_crop_is_rotated_counter_clockwise():
    img = np.zeros((100, 40, 3), np.uint8)
    img[10:90, 10:30] = 255
    img[10:20, 10:30] = (255, 0, 0)  # blue marker at the top of the tall box
    poly = np.float32([[10, 10], [30, 10], [30, 90], [10, 90]])
    crop = crop_line(img, poly)
    assert crop.shape[:2] == (20, 80)  # 80 x 20 box, h/w >= 1.5 → rotated
    # np.rot90 turns the top of the box to the left end of the crop
    assert (crop[5, :8] == (255, 0, 0)).all() and (crop[5, -8:] == 255).all()
    # reading-order polygons (a lone upright character) can skip the rule
    assert crop_line(img, poly, rotate_tall=False).shape[:2] == (80, 20)


@pytest.fixture(scope="module")
def same_text_two_ways(tmp_path_factory):
    """The same string drawn horizontally and rotated by 90° (read bottom-to-top), real renderer."""
    import ezdxf

    doc = ezdxf.new("R2010")
    msp = doc.modelspace()
    msp.add_text("L=2820 #12", height=5, dxfattribs={"insert": (0, 0)})
    msp.add_text("L=2820 #12", height=5, dxfattribs={"insert": (80, -10), "rotation": 90})
    path = tmp_path_factory.mktemp("crop") / "twoways.dxf"
    doc.saveas(path)
    rendered = render_dxf(path, scale=5.0)
    horizontal = next(t for t in rendered.texts if abs(t.angle_deg) < 1)
    vertical = next(t for t in rendered.texts if abs(t.angle_deg - 90) < 1)
    return rendered.image, horizontal, vertical


def _similar(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two crops after resizing and a light blur (sub-pixel offsets of thin
    strokes would dominate otherwise)."""
    import cv2

    b = cv2.resize(b, (a.shape[1], a.shape[0]))
    a = cv2.GaussianBlur(a, (5, 5), 1.5)
    b = cv2.GaussianBlur(b, (5, 5), 1.5)
    x = a.astype(np.float32).ravel() - a.mean()
    y = b.astype(np.float32).ravel() - b.mean()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-6))


def test_vertical_text_becomes_horizontal_both_ways(same_text_two_ways):
    image, horizontal, vertical = same_text_two_ways
    ref = crop_line(image, horizontal.polygon)
    # reading-order polygon (the renderer's): the warp itself turns the text upright
    warped = crop_line(image, vertical.polygon)
    assert warped.shape[1] > 2 * warped.shape[0]
    upright, upside_down = _similar(ref, warped), _similar(ref, np.rot90(warped, 2))
    assert upright > 0.85 and upright > upside_down + 0.3, (upright, upside_down)
    # image-ordered polygon (a detector's): the tall crop is turned by np.rot90 (counter-
    # clockwise) as PaddleOCR does, which leaves bottom-to-top CAD text upside down; PaddleOCR's
    # text-line orientation classifier (180°) is what fixes it in the stock pipeline.
    det_order = order_points_clockwise(vertical.polygon)
    assert not np.allclose(det_order, vertical.polygon)
    rotated = crop_line(image, det_order)
    assert rotated.shape[1] > 2 * rotated.shape[0]
    upright, upside_down = _similar(ref, rotated), _similar(ref, np.rot90(rotated, 2))
    assert upside_down > 0.85 and upside_down > upright + 0.3, (upright, upside_down)


def test_expand_and_validation():
    poly = np.float32([[10, 10], [50, 10], [50, 20], [10, 20]])
    grown = expand_polygon(poly, 2)
    np.testing.assert_allclose(grown, [[8, 8], [52, 8], [52, 22], [8, 22]], atol=1e-5)
    with pytest.raises(ValueError):
        crop_line(np.zeros((10, 10), np.uint8), poly)
    with pytest.raises(ValueError):
        crop_line(np.zeros((10, 10, 3), np.uint8), poly[:3])
