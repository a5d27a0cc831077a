"""The drawing embedder: real ONNX model, real synthetic CAD-style drawings (``ocrloop.index.synth``).

Retrieval tests index 20 drawings (plates, shafts, brackets, flanges with dimensions, hatching,
notes) and query with the variants DESIGN.md says break a plain embedding on real library drawings:
a 90° turn and a border + title-block frame, plus a scanned (skewed, noisy, JPEG) framed copy.
Each test also shows the baseline fails, so the assertions are not satisfied by any embedding.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ocrloop.index import embed, synth
from ocrloop.index.embed import ResNetDrawingEmbedder

N_LIBRARY = 20


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embed-cache")


@pytest.fixture(scope="module")
def embedder(cache):
    return ResNetDrawingEmbedder(cache=cache)


@pytest.fixture(scope="module")
def library():
    return synth.library(N_LIBRARY, seed=100)


@pytest.fixture(scope="module")
def indexed(embedder, library):
    return embedder.embed([d.image for d in library])


def _ranks(embedder, indexed, queries, ids):
    """Rank (0 = top-1) of the right drawing for each query, scoring each id by its best view."""
    ranks = []
    for q, i in zip(queries, ids):
        scores = (embedder.embed_query(q) @ indexed.T).max(axis=0)
        ranks.append(int((scores > scores[i]).sum()))
    return ranks


def test_embeddings_are_normalised_float32_and_deterministic(embedder, library, indexed):
    assert embedder.dim == 1024  # open_nsfw is the thin ResNet-50: 1024 channels in its last stage
    assert indexed.shape == (N_LIBRARY, embedder.dim) and indexed.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(indexed, axis=1), 1.0, atol=1e-5)
    again = embedder.embed([library[3].image])
    np.testing.assert_allclose(again[0], indexed[3], atol=1e-5)
    # Different drawings get different vectors.
    sims = indexed @ indexed.T
    assert sims[np.triu_indices(N_LIBRARY, 1)].max() < 0.995
    q = embedder.embed_query(library[0].image)
    assert q.shape == (4, embedder.dim)
    np.testing.assert_allclose(q[0], indexed[0], atol=1e-5)  # view 0 is the unrotated drawing
    assert embedder.embed([]).shape == (0, embedder.dim)
    assert embedder.name.startswith("opennsfw-r50-gmp1024-v1-")
    assert isinstance(embedder, embed.Embedder)


def test_accepts_gray_and_bgra_and_rejects_non_images(embedder, library):
    img = library[1].image
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 255
    vecs = embedder.embed([img, gray, bgra])
    np.testing.assert_allclose(vecs[1], vecs[0], atol=1e-4)
    np.testing.assert_allclose(vecs[2], vecs[0], atol=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed([img.astype(np.float32)])
    with pytest.raises(ValueError, match="shape"):
        embedder.embed([np.zeros((10, 10, 2), np.uint8)])
    with pytest.raises(ValueError, match="too small"):
        embedder.embed([np.zeros((1, 10), np.uint8)])


def test_blank_page_embeds_without_nan(embedder):
    v = embedder.embed([np.full((300, 400, 3), 255, np.uint8)])
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, atol=1e-5)


def test_edited_model_is_cached_and_reused(cache, embedder):
    files = list(cache.glob("opennsfw-features-*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = ResNetDrawingEmbedder(cache=cache)
    assert second.name == embedder.name
    assert files[0].stat().st_mtime_ns == stamp


def test_rotated_query_retrieves_itself_top1(embedder, library, indexed):
    ids = list(range(0, N_LIBRARY, 2))
    queries = [cv2.rotate(library[i].image, cv2.ROTATE_90_CLOCKWISE) for i in ids]
    assert _ranks(embedder, indexed, queries, ids) == [0] * len(ids)
    # The rotation set is what finds them: its best view reproduces the indexed vector, while a
    # single view of the turned drawing is no closer to it than to other drawings (measured self
    # similarity 0.88-0.93, best other 0.88-0.93: top-1 is a coin flip).
    for q, i in zip(queries, ids):
        assert float((embedder.embed_query(q) @ indexed[i]).max()) > 0.99
        assert float(embedder.embed([q])[0] @ indexed[i]) < 0.95


def test_framed_query_retrieves_itself_top1(cache, embedder, library, indexed):
    ids = list(range(1, N_LIBRARY, 2))
    queries = [synth.add_frame(library[i].image, seed=i) for i in ids]
    assert _ranks(embedder, indexed, queries, ids) == [0] * len(ids)
    # Stripping is what finds them: it reproduces the unframed vector, while without it the framed
    # copy is further from its own drawing (measured 0.81-0.88) than drawings are from each other
    # (typically 0.88-0.93; top-1 without stripping was 0.35 on a 20-drawing run).
    raw = ResNetDrawingEmbedder(cache=cache, strip_frames=False)
    for q, i in zip(queries[:5], ids[:5]):
        framed, plain = embedder.embed([q, library[i].image])
        assert float(framed @ plain) > 0.99
        framed, plain = raw.embed([q, library[i].image])
        assert float(framed @ plain) < 0.9


def test_scanned_framed_rotated_query_retrieves_itself_top1(embedder, library, indexed):
    ids = [2, 5, 8, 11, 14, 17]
    queries = [cv2.rotate(synth.scan(synth.add_frame(library[i].image, seed=i), seed=i), cv2.ROTATE_90_COUNTERCLOCKWISE)
               for i in ids]
    assert _ranks(embedder, indexed, queries, ids) == [0] * len(ids)


def test_half_resolution_framed_scan_retrieves_itself_top1(embedder, library, indexed):
    ids = [0, 7, 13, 19]
    half = [cv2.resize(synth.add_frame(library[i].image, seed=i), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
            for i in ids]
    queries = [synth.scan(h, seed=i) for h, i in zip(half, ids)]
    assert _ranks(embedder, indexed, queries, ids) == [0] * len(ids)


@pytest.mark.xfail(strict=True, reason="known limit: a framed sheet scanned 2.7° skewed with its border corners cut "
                                       "off has no closed frame to deskew by or strip, so the border and title block "
                                       "stay in the embedding (library drawing 10: rank 2 of 20)")
def test_heavily_skewed_scan_with_clipped_border(embedder, library, indexed):
    i = 10
    mask = embed.ink_mask(embed.to_gray(synth.scan(synth.add_frame(library[i].image, seed=i), seed=i, skew_deg=3.0)))
    assert embed.skew_angle(mask) == 0.0  # the reason: no closed border was found
    query = synth.scan(synth.add_frame(library[i].image, seed=i), seed=i, skew_deg=3.0)
    assert _ranks(embedder, indexed, [query], [i]) == [0]


# --------------------------------------------------------------------------------------------
# Preprocessing pieces
# --------------------------------------------------------------------------------------------

def test_frame_box_and_title_block_are_found_and_removed(library):
    img = library[2].image
    sheet = synth.add_frame(img, seed=7)
    mask = embed.ink_mask(embed.to_gray(sheet))
    box = embed.frame_box(mask)
    assert box is not None
    x0, y0, x1, y1 = box
    h, w = mask.shape
    assert x0 < 0.06 * w and y0 < 0.06 * h and x1 > 0.94 * w and y1 > 0.94 * h
    inner = embed.strip_frame(mask)
    # What is left is the drawing's own ink: same bounding-box size as the unframed drawing's.
    bx = embed.content_box(inner)
    ox = embed.content_box(embed.ink_mask(embed.to_gray(img)))
    assert abs((bx[2] - bx[0]) - (ox[2] - ox[0])) <= 4 and abs((bx[3] - bx[1]) - (ox[3] - ox[1])) <= 4
    # An unframed drawing has no frame and is returned untouched.
    plain = embed.ink_mask(embed.to_gray(img))
    assert embed.frame_box(plain) is None
    assert embed.strip_frame(plain) is plain


def test_skew_is_measured_from_the_frame(library):
    sheet = synth.add_frame(library[5].image, seed=5)
    h, w = sheet.shape[:2]
    for angle in (-1.5, 0.6):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        tilted = cv2.warpAffine(sheet, m, (w, h), borderValue=(255, 255, 255))
        measured = embed.skew_angle(embed.ink_mask(embed.to_gray(tilted)))
        assert measured == pytest.approx(-angle, abs=0.1)
        assert embed.frame_box(embed.deskew(embed.ink_mask(embed.to_gray(tilted)))) is not None
    assert embed.skew_angle(embed.ink_mask(embed.to_gray(library[5].image))) == 0.0


def test_white_on_dark_prints_are_inverted(library):
    img = library[6].image
    pos = embed.prepare(img)
    neg = embed.prepare(255 - img)
    assert np.abs(pos.astype(int) - neg.astype(int)).mean() < 1.0


def test_decode_image_errors():
    with pytest.raises(ValueError, match="empty"):
        embed.decode_image(b"")
    with pytest.raises(ValueError, match="not a decodable image"):
        embed.decode_image(b"%PDF-1.4 not an image")
    ok, png = cv2.imencode(".png", np.full((50, 80, 3), 200, np.uint8))
    assert embed.decode_image(png.tobytes()).shape == (50, 80, 3)
    with pytest.raises(embed.ImageTooLarge, match="4000 pixels"):
        embed.decode_image(png.tobytes(), max_pixels=3999)
    # 16-bit PNG → 8 bit
    ok, png16 = cv2.imencode(".png", np.full((20, 20), 65535, np.uint16))
    out = embed.decode_image(png16.tobytes())
    assert out.dtype == np.uint8 and out.max() == 255
    # GIF goes through Pillow
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (30, 20), (255, 0, 0)).save(buf, format="GIF")
    gif = embed.decode_image(buf.getvalue())
    assert gif.shape == (20, 30, 3) and gif[0, 0, 2] > 200  # red in BGR order
