import json

from hypothesis import given, settings, strategies as st

from ocrloop.manifest import (LABEL_ATTRIBUTE, output_manifest_line, parse_line, parse_output_manifest,
                              ManifestError)

GOOD_POLY = [[10, 10], [110, 10], [110, 40], [10, 40]]


def line(annotations, source="s3://b/drawings/d1.png", width=200, height=100, **extra):
    return output_manifest_line(source, width, height, annotations, "ocrloop-job", "2026-11-21T00:00:00", **extra)


def test_roundtrip():
    images, quarantine = parse_output_manifest([line([(GOOD_POLY, "⌀12 ±0.1")])])
    assert quarantine == []
    (img,) = images
    assert img.drawing_id == "d1" and img.width == 200 and img.height == 100
    assert img.annotations[0].text == "⌀12 ±0.1"
    assert img.annotations[0].polygon[2] == (110.0, 40.0)


def test_malformed_lines_are_quarantined_with_reasons_and_the_rest_proceeds():
    good = line([(GOOD_POLY, "A-A")])
    failed = json.dumps({"source-ref": "s3://b/drawings/x.png", f"{LABEL_ATTRIBUTE}-metadata": {"failure-reason": "ClientError: timeout"}})
    lines = [good, "{not json", json.dumps({"no": "source"}), failed, "", json.dumps([1, 2]),
             line([(GOOD_POLY, "B")], source="s3://b/drawings/d2.png", width=0)]
    images, quarantine = parse_output_manifest(lines)
    assert [i.drawing_id for i in images] == ["d1"]
    reasons = {q.line_no: q.reason for q in quarantine}
    assert set(reasons) == {2, 3, 4, 6, 7}
    assert "invalid JSON" in reasons[2]
    assert "source-ref" in reasons[3]
    assert "timeout" in reasons[4]
    assert "not positive" in reasons[7]
    assert all(q.raw for q in quarantine)


def test_bad_annotations_quarantined_individually():
    anns = [(GOOD_POLY, "ok"), (GOOD_POLY, "   "), ([[0, 0], [1, 0], [1, 1]], "three points"),
            ([[0, 0], [500, 0], [500, 10], [0, 10]], "outside"), ([[5, 5], [5, 5], [5, 5], [5, 5]], "flat")]
    images, quarantine = parse_output_manifest([line(anns)])
    assert [a.text for a in images[0].annotations] == ["ok"]
    assert sorted(q.annotation_index for q in quarantine) == [1, 2, 3, 4]
    assert {q.source_ref for q in quarantine} == {"s3://b/drawings/d1.png"}


def test_duplicate_drawing_is_quarantined():
    images, quarantine = parse_output_manifest([line([(GOOD_POLY, "a")]), line([(GOOD_POLY, "b")])])
    assert len(images) == 1 and images[0].annotations[0].text == "a"
    assert "duplicate" in quarantine[0].reason


json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=10)


@settings(max_examples=200)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                 st.fixed_dictionaries({"source-ref": st.text(max_size=10), LABEL_ATTRIBUTE: json_values}).map(json.dumps)))
def test_parser_never_crashes_and_never_drops(raw):
    images, quarantine = parse_output_manifest([raw])
    if raw.strip():
        assert len(images) + len([q for q in quarantine if q.annotation_index is None]) == 1
    else:
        assert images == [] and quarantine == []


@settings(max_examples=100)
@given(st.lists(st.tuples(st.floats(0, 150), st.floats(0, 60), st.floats(5, 50), st.floats(5, 40),
                          st.text(alphabet="0123456789⌀±°ABC .-", min_size=1, max_size=15)), max_size=6))
def test_valid_annotations_all_accepted(boxes):
    anns = [([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], t) for x, y, w, h, t in boxes]
    images, quarantine = parse_output_manifest([line(anns)])
    expected = [" ".join(t.split()) for _, t in anns if t.strip()]
    assert [a.text for a in images[0].annotations] == expected
    assert len(quarantine) == len(anns) - len(expected)


def test_parse_line_raises_for_whole_line_errors():
    try:
        parse_line("[]", 1)
    except ManifestError as exc:
        assert "not a JSON object" in str(exc)
    else:
        raise AssertionError("expected ManifestError")
