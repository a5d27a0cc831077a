"""DB label maps from polygons: shrink map (Vatti offset D = A(1 - r²)/L), threshold map, masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrloop.model.det_labels import (
    SHRINK_RATIO,
    THRESH_MAX,
    THRESH_MIN,
    make_maps,
    offset_polygon,
    pad_polygon,
    polygon_area,
    shrink_offset,
)


def rect(x0, y0, w, h):
    return np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], dtype=np.float64)


def test_shrink_offset_is_the_paper_formula():
    poly = rect(10, 10, 100, 20)
    # A = 2000, L = 240, r = 0.4: D = 2000 × 0.84 / 240 = 7
    assert shrink_offset(poly) == pytest.approx(7.0)
    assert polygon_area(poly) == pytest.approx(2000.0)  # clockwise in image coordinates
    (shrunk,) = offset_polygon(poly, -7.0)
    xs, ys = shrunk[:, 0], shrunk[:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((17, 103, 17, 23), abs=1)


def test_maps_of_one_box():
    m = make_maps((64, 128), [rect(10, 10, 100, 20)])
    assert m.shrink[20, 60] == 1.0 and m.shrink[11, 60] == 0.0 and m.shrink[50, 60] == 0.0
    assert m.shrink_mask.min() == 1.0  # nothing ignored
    # threshold map: peak 0.7 on the polygon's border, 0.3 far away and at the shrunk core's centre
    assert m.thresh[10, 60] == pytest.approx(THRESH_MAX, abs=1e-6)
    assert m.thresh[50, 60] == pytest.approx(THRESH_MIN)
    assert m.thresh[20, 60] == pytest.approx(THRESH_MIN, abs=1e-6)  # 10 px from the border > D = 7
    assert m.thresh_mask[5, 60] == 1.0 and m.thresh_mask[50, 60] == 0.0  # dilated by D = 7 px
    assert THRESH_MIN <= m.thresh.min() and m.thresh.max() <= THRESH_MAX


def test_ignored_and_tiny_polygons_are_masked_out():
    m = make_maps((64, 128), [rect(10, 10, 100, 20), rect(10, 40, 40, 5)], ignore=[True, False])
    assert m.shrink.max() == 0.0  # one ignored ("###"), one 5 px high (< MIN_TEXT_SIZE)
    assert m.shrink_mask[20, 60] == 0.0 and m.shrink_mask[42, 20] == 0.0 and m.shrink_mask[60, 100] == 1.0
    with pytest.raises(ValueError):
        make_maps((8, 8), [np.zeros((2, 2))])
    with pytest.raises(ValueError):
        make_maps((8, 8), [rect(0, 0, 4, 4)], ignore=[])


@settings(max_examples=40, deadline=None)
@given(x0=st.floats(0, 60), y0=st.floats(0, 40), w=st.floats(12, 120), h=st.floats(10, 40),
       angle=st.floats(-0.6, 0.6))
def test_shrunk_polygon_lies_inside_and_has_the_expected_area(x0, y0, w, h, angle):
    c, s = np.cos(angle), np.sin(angle)
    base = rect(0, 0, w, h) - [w / 2, h / 2]
    poly = base @ np.array([[c, s], [-s, c]]) + [x0 + w / 2, y0 + h / 2]
    d = shrink_offset(poly)
    assert 0 < d < min(w, h) / 2  # never shrinks a box to nothing
    (shrunk,) = offset_polygon(poly, -d)
    # an inward offset of a rectangle by d is the rectangle (w - 2d) × (h - 2d)
    assert abs(polygon_area(shrunk)) == pytest.approx((w - 2 * d) * (h - 2 * d), rel=0.02, abs=4.0)
    from shapely.geometry import Polygon

    assert Polygon(poly).buffer(1.0).contains(Polygon(shrunk))
    maps = make_maps((160, 220), [poly])
    inside = maps.shrink > 0
    # rasterised (cv2.fillPoly includes boundary pixels): within a perimeter's worth of pixels
    perimeter = float(np.linalg.norm(shrunk - np.roll(shrunk, 1, axis=0), axis=1).sum())
    area = abs(polygon_area(shrunk))
    assert area - perimeter <= inside.sum() <= area + perimeter + 4
    assert np.all(maps.thresh_mask[inside] == 1.0)  # the core lies within the dilated region
    assert SHRINK_RATIO == 0.4


def test_pad_polygon_grows_a_rotated_box_by_its_short_side():
    poly = rect(10, 10, 100, 20)
    assert pad_polygon(poly, 0.0) is not None and np.allclose(pad_polygon(poly, 0.0), poly)
    grown = pad_polygon(poly, 0.25)  # 5 px on every side
    xs, ys = grown[:, 0], grown[:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((5, 115, 5, 35), abs=1e-3)
    c, s = np.cos(0.5), np.sin(0.5)
    turned = (poly - 60) @ np.array([[c, s], [-s, c]]) + 60
    assert abs(polygon_area(pad_polygon(turned, 0.25))) == pytest.approx(110 * 30, rel=1e-4)
    with pytest.raises(ValueError):
        pad_polygon(poly, -0.1)
