"""Text-line tensors and CTC decoding shared by training (Paddle) and serving (ONNX Runtime).

Conventions follow PaddleOCR's rec pipeline (``ppocr/data/imaug/rec_img_aug.py`` ``resize_norm_img``
and ``ppocr/postprocess/rec_postprocess.py`` ``CTCLabelDecode``):

* input: BGR uint8 line crop ``[H, W, 3]`` → float32 ``[3, 48, W']``, height 48 px, aspect kept,
  values ``(x / 255 - 0.5) / 0.5`` in ``[-1, 1]``, right-padded with 0 to the batch width;
* classes: index 0 is the CTC blank, ``1..len(dict)`` the character dict lines, then one space
  (``use_space_char=True``), so a 18,383-line dict gives 18,385 classes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

REC_HEIGHT = 48
"""PP-OCRv5 rec input height (px), from PaddleOCR configs ``rec_image_shape: [3, 48, 320]``."""
REC_MAX_WIDTH = 320
"""Training width (px) used by PaddleOCR's PP-OCRv5 rec configs."""


def load_dict(path: str | Path) -> list[str]:
    """Read a PaddleOCR character dict (one character a line) and return the class list
    ``["blank", *chars, " "]``."""
    chars = [line.rstrip("\r\n") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return ["blank", *chars, " "]


def resize_norm(img: np.ndarray, width: int, height: int = REC_HEIGHT) -> np.ndarray:
    """One BGR uint8 crop ``[H, W, 3]`` → float32 ``[3, height, width]`` (aspect kept, right pad).

    Raises:
        ValueError: empty or non-3-channel image.
    """
    import cv2

    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected a BGR image [H, W, 3], got shape {getattr(img, 'shape', None)}")
    h, w = img.shape[:2]
    resized_w = min(width, max(1, int(math.ceil(height * w / float(h)))))
    resized = cv2.resize(img, (resized_w, height)).astype(np.float32)
    resized = (resized / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = resized.transpose(2, 0, 1)
    return out


def batch_width(images: Sequence[np.ndarray], height: int = REC_HEIGHT, max_width: int | None = None) -> int:
    """Batch width (px) as PaddleOCR's predictor picks it: ``height × max(w/h)``, at least 320 px
    wide-ratio floor of ``320/48``, optionally capped at ``max_width``."""
    ratio = max([REC_MAX_WIDTH / REC_HEIGHT] + [im.shape[1] / float(im.shape[0]) for im in images])
    width = int(math.ceil(height * ratio))
    return min(width, max_width) if max_width else width


def make_batch(images: Sequence[np.ndarray], height: int = REC_HEIGHT, max_width: int | None = None) -> np.ndarray:
    """Crops → float32 ``[N, 3, height, W]`` with one common width (see ``batch_width``)."""
    width = batch_width(images, height, max_width)
    return np.stack([resize_norm(im, width, height) for im in images])


def ctc_greedy_decode(probs: np.ndarray, classes: Sequence[str]) -> list[tuple[str, float]]:
    """Greedy CTC decoding (Graves et al. 2006) of ``probs`` float32 ``[N, T, C]``.

    Repeats are merged, blanks (index 0) dropped; the score is the mean max-probability of the kept
    steps (PaddleOCR's ``CTCLabelDecode``), 0.0 for an empty result.
    """
    idx = probs.argmax(axis=2)
    prob = probs.max(axis=2)
    out = []
    for row_idx, row_prob in zip(idx, prob):
        keep = np.ones(len(row_idx), dtype=bool)
        keep[1:] = row_idx[1:] != row_idx[:-1]
        keep &= row_idx != 0
        text = "".join(classes[i] for i in row_idx[keep])
        score = float(row_prob[keep].mean()) if keep.any() else 0.0
        out.append((text, score))
    return out
