import json

import pytest

from ocrloop.importers import ImportError_, from_labelme, from_ppocrlabel
from ocrloop.manifest import parse_output_manifest

ITEMS = [{"source-ref": "file:///x/drawings/a.png"}, {"source-ref": "file:///x/drawings/b.png"}]


def test_ppocrlabel_roundtrip_with_a_bad_box_quarantined():
    label = ("imgs/a.png\t" + json.dumps([{"transcription": "⌀20 H7", "points": [[1, 1], [80, 1], [80, 20], [1, 20]], "difficult": False},
                                           {"transcription": "x", "points": [[1, 1], [2, 2]]}], ensure_ascii=False) + "\n")
    manifest = from_ppocrlabel(label, ITEMS, {"a.png": (100, 50)}, "ocrloop-j")
    images, quarantine = parse_output_manifest(manifest.splitlines())
    assert images[0].source_ref == "file:///x/drawings/a.png"
    assert [a.text for a in images[0].annotations] == ["⌀20 H7"]
    assert len(quarantine) == 1 and "4" in quarantine[0].reason


def test_labelme_rectangles_and_polygons():
    doc = {"imagePath": "b.png", "imageWidth": 100, "imageHeight": 50, "shapes": [
        {"label": "M8", "points": [[10, 10], [40, 30]], "shape_type": "rectangle"},
        {"label": "R5", "points": [[50, 5], [90, 5], [90, 25], [50, 25]], "shape_type": "polygon"}]}
    images, quarantine = parse_output_manifest(from_labelme([doc], ITEMS, "ocrloop-j").splitlines())
    assert [a.text for a in images[0].annotations] == ["M8", "R5"] and not quarantine
    assert images[0].annotations[0].polygon == ((10, 10), (40, 10), (40, 30), (10, 30))


def test_unknown_images_and_bad_lines_raise():
    with pytest.raises(ImportError_, match="not in the labeling job"):
        from_ppocrlabel("c.png\t[]", ITEMS, {}, "j")
    with pytest.raises(ImportError_, match="expected"):
        from_ppocrlabel("no tab here", ITEMS, {}, "j")
    with pytest.raises(ImportError_):
        from_labelme([{"shapes": []}], ITEMS, "j")
