"""Detection fine-tuning (DB) inside the training job: data, loss, loop, export, evaluation.

Data: a channel folder with ``label.txt`` in PaddleOCR det label format (one image a line,
``<image path relative to the channel>\\t[{"transcription": str, "points": [[x, y], …]}, …]``,
what ``ocrloop.dataset`` writes as ``det/label.txt`` with the image keys made channel-relative by
``ocrloop.handlers.start_training``) and the images. Training samples are random square crops
(``crop_px``) of sheets at a random scale in ``SCALE_RANGE``, centred on a random text line most of
the time (drawing sheets are mostly empty paper); lines cut by the crop border are masked out.

Loss: DB (Liao et al. 2020, "Real-time Scene Text Detection with Differentiable Binarization",
AAAI): ``L = α·L_s + β·L_t + L_b`` with ``L_s`` binary cross-entropy on the probability map with
online hard negative mining at negatives : positives ≤ 3 : 1 (paper §3.4), ``L_t`` L1 on the
threshold map inside the dilated text regions, ``L_b`` Dice on the approximate binary map; α = 5,
β = 10 as PaddleOCR's ``DBLoss`` configs weight them (the paper writes ``L_s + α L_b + β L_t`` with
α = 1, β = 10). Optimiser as for rec: AdamW, linear warmup then cosine decay, global-norm
clipping; BatchNorm statistics frozen by default.

The threshold branch is not in the deployed weights. It starts as a copy of the probability
branch with its last layer set to output the constant ``DB_POSTPROCESS_THRESH`` = 0.3: then the
approximate binary map ``sigmoid(k (P - T))`` starts as exactly the binarisation the serving
post-processing applies (``DBPostProcess(thresh=0.3)``), instead of a random map whose Dice
gradient would disturb the pretrained probability branch.

Artifact: ``<model version>/det/`` holds ``det.pdparams`` (training weights, threshold branch
included), ``inference.json`` + ``inference.pdiparams`` + ``inference.yml`` (``paddle.jit.save``
of the probability branch in deploy form, ``ocrloop.model.deploy``; PaddleOCR det inference model
contract) and ``model.onnx``
(paddle2onnx; what ``OcrEngine(det_model_path=…)`` serves). Evaluation runs the serving engine's
detection (``OcrEngine.detect``: tiling, DB post-processing, rotated pass) with the candidate's
and the champion's det ONNX and scores it with ``ocrloop.model.det_eval``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .det_labels import IGNORE_TEXT, make_maps
from .train import ImageCache

DET_DIR = "det"
DET_ONNX = "model.onnx"
DET_PARAMS = "det.pdparams"
ALPHA = 5.0
BETA = 10.0
"""DB loss weights of the probability (BCE) and threshold (L1) terms (PaddleOCR ``DBLoss``
configs: ``alpha: 5``, ``beta: 10``)."""
OHEM_RATIO = 3.0
"""Hard negatives per positive pixel in the probability loss (Liao et al. 2020: 3)."""
EMPTY_CROP_NEGATIVES = 100
"""Hard negative pixels counted when a batch has no text pixel at all."""
SCALE_RANGE = (0.75, 1.25)
"""Random rescaling of sheets before cropping (corpus sheets draw small text 12..20 px high)."""
TEXT_CENTRED = 0.85
"""Share of crops centred on a random text line (the rest are uniform over the sheet)."""
DB_POSTPROCESS_THRESH = 0.3
"""Binarisation threshold of the serving post-processing (``ocrloop.ocr.engine.DetParams.thresh``)."""
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
"""Det input normalisation of BGR/255 values (PP-OCRv5 det ``inference.yml``; the engine's)."""


class DetInputError(ValueError):
    """Bad det channel: missing ``label.txt``, malformed line, image path outside the channel."""


@dataclasses.dataclass
class DetSample:
    """One labelled sheet: ``image`` absolute path, ``polygons`` (float32 ``[K, 2]`` px each), per
    polygon ``ignore`` (transcription ``"###"``) and ``texts`` (the transcriptions)."""

    image: Path
    polygons: list[np.ndarray]
    ignore: list[bool]
    texts: list[str] = dataclasses.field(default_factory=list)


def read_det_labels(channel_dir: str | Path) -> list[DetSample]:
    """Parse ``<channel_dir>/label.txt`` (module doc).

    Raises:
        DetInputError: missing file, a line without a tab, bad JSON, a polygon with fewer than 3
            points, an image path that is absolute or leaves the channel, or a missing image.
    """
    channel_dir = Path(channel_dir)
    label_file = channel_dir / "label.txt"
    if not label_file.is_file():
        raise DetInputError(f"missing {label_file}")
    root = channel_dir.resolve()
    out = []
    for lineno, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DetInputError(f"{label_file}:{lineno}: expected '<image>\\t<json>'")
        rel, body = line.split("\t", 1)
        path = (channel_dir / rel).resolve()
        if Path(rel).is_absolute() or not path.is_relative_to(root):
            raise DetInputError(f"{label_file}:{lineno}: image path {rel!r} leaves the channel folder")
        if not path.is_file():
            raise DetInputError(f"{label_file}:{lineno}: image {rel!r} not found")
        try:
            anns = json.loads(body)
            polys = [np.asarray(a["points"], dtype=np.float32).reshape(-1, 2) for a in anns]
            texts = [str(a.get("transcription", "")) for a in anns]
            ignore = [t == IGNORE_TEXT for t in texts]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DetInputError(f"{label_file}:{lineno}: bad annotations ({exc})") from exc
        if any(len(p) < 3 for p in polys):
            raise DetInputError(f"{label_file}:{lineno}: a polygon has fewer than 3 points")
        out.append(DetSample(path, polys, ignore, texts))
    return out


def normalise(image: np.ndarray) -> np.ndarray:
    """BGR uint8 ``[H, W, 3]`` → float32 ``[3, H, W]`` det input (``MEAN``/``STD``)."""
    return np.ascontiguousarray(((image.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))


def random_crop(image: np.ndarray, polygons: Sequence[np.ndarray], ignore: Sequence[bool], size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], list[bool]]:
    """A ``size × size`` training crop (module doc) of a BGR uint8 sheet: rescaled by a random
    factor in ``SCALE_RANGE``, white-padded where the sheet is smaller. Returns ``(crop uint8
    [size, size, 3], polygons in crop px, ignore)``; lines not wholly inside are ignored, lines
    wholly outside dropped."""
    import cv2

    s = float(rng.uniform(*SCALE_RANGE))
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    polys = [np.asarray(p, np.float32) * np.array([nw / w, nh / h], np.float32) for p in polygons]
    cared = [i for i, ign in enumerate(ignore) if not ign]
    if cared and rng.random() < TEXT_CENTRED:
        cx, cy = polys[int(rng.choice(cared))].mean(axis=0) + rng.uniform(-size / 4, size / 4, 2)
        x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
    else:
        x0, y0 = int(rng.integers(0, max(1, nw - size + 1))), int(rng.integers(0, max(1, nh - size + 1)))
    x0 = min(max(0, x0), max(0, nw - size))
    y0 = min(max(0, y0), max(0, nh - size))
    crop = np.full((size, size, 3), 255, np.uint8)
    part = img[y0:y0 + size, x0:x0 + size]
    crop[:part.shape[0], :part.shape[1]] = part
    out_p, out_i = [], []
    for p, ign in zip(polys, ignore):
        q = p - np.array([x0, y0], np.float32)
        lo, hi = q.min(axis=0), q.max(axis=0)
        if hi[0] < 0 or hi[1] < 0 or lo[0] >= size or lo[1] >= size:
            continue
        whole = lo[0] >= 0 and lo[1] >= 0 and hi[0] < min(size, part.shape[1]) and hi[1] < min(size, part.shape[0])
        out_p.append(q)
        out_i.append(bool(ign) or not whole)
    return crop, out_p, out_i


def make_batch(samples: Sequence[DetSample], load: Callable[[Path], np.ndarray], size: int,
               rng: np.random.Generator, label_pad: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Input float32 ``[N, 3, size, size]`` and targets (``shrink``, ``shrink_mask``, ``thresh``,
    ``thresh_mask``: float32 ``[N, size, size]`` each) for one random crop of each sample; label
    polygons are first grown by ``label_pad`` (``det_labels.pad_polygon``)."""
    from .det_labels import pad_polygon

    xs, maps = [], []
    for s in samples:
        polys = [pad_polygon(p, label_pad) for p in s.polygons] if label_pad else s.polygons
        crop, polys, ign = random_crop(load(s.image), polys, s.ignore, size, rng)
        xs.append(normalise(crop))
        maps.append(make_maps((size, size), polys, ign))
    targets = {k: np.stack([getattr(m, k) for m in maps]) for k in ("shrink", "shrink_mask", "thresh", "thresh_mask")}
    return np.stack(xs), targets


def db_loss(pred: dict[str, Any], targets: dict[str, Any], alpha: float = ALPHA, beta: float = BETA,
            ohem_ratio: float = OHEM_RATIO, eps: float = 1e-6) -> dict[str, Any]:
    """DB loss (module doc).

    Args:
        pred: ``DetModel.forward_train`` output (``prob``, ``thresh``, ``binary``: ``[N, 1, H, W]``).
        targets: ``make_batch`` targets as paddle tensors or numpy (``[N, H, W]``).

    Returns:
        ``{"loss", "prob", "thresh", "binary"}`` scalar tensors (``loss`` the weighted sum). The
        probability term averages the BCE of all positive pixels and of the ``3 × positives``
        hardest negatives (``EMPTY_CROP_NEGATIVES`` when the batch has no positive pixel).
    """
    import paddle
    import paddle.nn.functional as F

    t = {k: v if isinstance(v, paddle.Tensor) else paddle.to_tensor(v) for k, v in targets.items()}
    gt, mask = t["shrink"], t["shrink_mask"]
    prob, thresh, binary = pred["prob"][:, 0], pred["thresh"][:, 0], pred["binary"][:, 0]
    positive = gt * mask
    negative = (1.0 - gt) * mask
    n_pos = int(positive.sum().item())
    # a crop without text still teaches "no text here" through its EMPTY_CROP_NEGATIVES hardest pixels
    n_neg = int(min(float(negative.sum().item()), n_pos * ohem_ratio if n_pos else EMPTY_CROP_NEGATIVES))
    bce = F.binary_cross_entropy(paddle.clip(prob, eps, 1 - eps), gt, reduction="none")
    pos_loss = (bce * positive).sum()
    if n_neg > 0:
        neg_loss = paddle.topk((bce * negative).reshape([-1]), n_neg)[0].sum()
    else:
        neg_loss = paddle.zeros([], "float32")
    l_prob = (pos_loss + neg_loss) / (n_pos + n_neg + eps)
    tmask = t["thresh_mask"]
    l_thresh = (paddle.abs(thresh - t["thresh"]) * tmask).sum() / (tmask.sum() + eps)
    inter = (binary * gt * mask).sum()
    union = (binary * mask).sum() + (gt * mask).sum() + eps
    l_binary = 1.0 - 2.0 * inter / union
    return {"loss": alpha * l_prob + beta * l_thresh + l_binary, "prob": l_prob, "thresh": l_thresh,
            "binary": l_binary}


class ImageLoader(ImageCache):
    """BGR uint8 sheets by path, decoded once (``train.ImageCache``).

    Raises (on call):
        DetInputError: the file cannot be decoded.
    """

    def __init__(self) -> None:
        super().__init__(DetInputError)


# --- model -----------------------------------------------------------------------------------


def init_thresh_head(model) -> None:
    """Threshold branch ← probability branch with a constant ``DB_POSTPROCESS_THRESH`` output
    (module doc): last transposed conv weight 0, bias ``logit(0.3)``."""
    import paddle

    model.thresh_head.set_state_dict(model.head.state_dict())
    final = model.thresh_head.conv_final
    final.weight.set_value(paddle.zeros_like(final.weight))
    final.bias.set_value(paddle.full_like(final.bias, math.log(DB_POSTPROCESS_THRESH / (1 - DB_POSTPROCESS_THRESH))))


def det_artifact_dir(model_dir: str | Path) -> Path | None:
    """``<model_dir>/det`` when it holds a fine-tuned det model (``model.onnx``), else None."""
    d = Path(model_dir) / DET_DIR
    return d if (d / DET_ONNX).is_file() else None


def load_det_for_training(det_dir: str | Path | None):
    """The champion's det as a trainable ``DetModel`` (eval mode): ``det_dir/det.pdparams`` (the
    champion artifact's ``det/`` folder) when the champion was det-fine-tuned, else the stock
    PP-OCRv5 mobile det ONNX weights with ``init_thresh_head``. Returns ``(model, source)`` with source ``"artifact"`` or ``"stock"``.

    Raises:
        ValueError: ``det.pdparams`` does not fit ``DetModel``.
    """
    import paddle

    from .det_arch import DetModel
    from .det_import import load_det_onnx_weights

    params = Path(det_dir) / DET_PARAMS if det_dir else None
    model = DetModel()
    if params is not None and params.is_file():
        state = paddle.load(str(params))
        own = model.state_dict()
        bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
        if bad:
            raise ValueError(f"{params} does not fit DetModel: {bad[:5]}")
        model.set_state_dict(state)
        source = "artifact"
    else:
        load_det_onnx_weights(model)
        init_thresh_head(model)
        source = "stock"
    model.eval()
    return model, source


def set_det_train_mode(model, freeze_bn: bool) -> None:
    """``model.train()``; with ``freeze_bn`` every BatchNorm back to eval mode (running statistics
    used and kept)."""
    from .arch import batchnorm_layers

    model.train()
    if freeze_bn:
        for bn in batchnorm_layers(model):
            bn.eval()


@dataclasses.dataclass
class DetTrainConfig:
    """Det fine-tuning budget: ``steps`` optimiser steps of ``batch_size`` random ``crop_px``
    crops; peak ``learning_rate`` after ``warmup_steps`` linear warmup, then cosine to 0; AdamW
    ``weight_decay`` on conv weights; ``grad_clip_norm`` global norm; ``freeze_bn``; ``seed``;
    ``label_pad``: label boxes grown by this × their short side on each side (``make_batch``)."""

    steps: int = 20
    batch_size: int = 2
    crop_px: int = 640
    learning_rate: float = 1e-4
    warmup_steps: int = 2
    weight_decay: float = 1e-4
    grad_clip_norm: float = 10.0
    freeze_bn: bool = True
    seed: int = 17
    label_pad: float = 0.0


def train_det(model, samples: Sequence[DetSample], cfg: DetTrainConfig, load: Callable[[Path], np.ndarray],
              log: Callable[[str], None] = lambda m: None, on_step: Callable[[int, dict], None] | None = None,
              ) -> dict[str, Any]:
    """Fine-tune ``model`` (``DetModel``) in place on ``samples``; returns ``{"steps", "wall_s",
    "cpu_s", "losses": [per-step total], "first_loss", "final_loss", "crop_px", "batch_size"}``.

    Raises:
        ValueError: no samples, or ``cfg.steps`` / ``cfg.batch_size`` / ``cfg.crop_px`` invalid
            (``crop_px`` must be a multiple of 32).
    """
    import paddle

    if not samples:
        raise ValueError("no det training samples")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.crop_px < 32 or cfg.crop_px % 32:
        raise ValueError("det steps >= 1, batch_size >= 1 and crop_px a multiple of 32 required")
    rng = np.random.default_rng([cfg.seed, 53])
    paddle.seed(cfg.seed)
    params = [p for p in model.parameters() if not p.stop_gradient]
    decay = {p.name for p in params if len(p.shape) >= 2}
    sched: Any = paddle.optimizer.lr.CosineAnnealingDecay(cfg.learning_rate, T_max=max(1, cfg.steps - cfg.warmup_steps))
    if cfg.warmup_steps > 0:
        sched = paddle.optimizer.lr.LinearWarmup(sched, cfg.warmup_steps, cfg.learning_rate / (cfg.warmup_steps + 1),
                                                 cfg.learning_rate)
    opt = paddle.optimizer.AdamW(learning_rate=sched, parameters=params, weight_decay=cfg.weight_decay,
                                 apply_decay_param_fun=lambda n: n in decay,
                                 grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip_norm))
    order = rng.permutation(len(samples))
    if not cfg.freeze_bn:  # BN in train mode: the fused branches' identity BNs need real statistics
        from .det_import import calibrate_det_fused_bn

        x0, _ = make_batch([samples[order[i % len(samples)]] for i in range(max(2, cfg.batch_size))], load,
                           cfg.crop_px, np.random.default_rng([cfg.seed, 59]))
        calibrate_det_fused_bn(model, x0)
    set_det_train_mode(model, cfg.freeze_bn)
    losses = []
    w0, c0 = time.perf_counter(), time.process_time()
    for step in range(1, cfg.steps + 1):
        idx = [order[((step - 1) * cfg.batch_size + i) % len(samples)] for i in range(cfg.batch_size)]
        x, targets = make_batch([samples[i] for i in idx], load, cfg.crop_px, rng, cfg.label_pad)
        parts = db_loss(model.forward_train(paddle.to_tensor(x)), targets)
        loss = parts["loss"]
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(f"det loss is {value} at step {step}")
        loss.backward()
        opt.step()
        opt.clear_grad()
        sched.step()
        losses.append(value)
        log(f"det step {step}/{cfg.steps} loss {value:.4f} (prob {float(parts['prob']):.4f} thresh "
            f"{float(parts['thresh']):.4f} binary {float(parts['binary']):.4f}) lr {opt.get_lr():.3g}")
        if on_step is not None:
            on_step(step, {k: float(v) for k, v in parts.items()})
    model.eval()
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "crop_px": cfg.crop_px,
            "wall_s": round(time.perf_counter() - w0, 3), "cpu_s": round(time.process_time() - c0, 3),
            "losses": [round(v, 5) for v in losses], "first_loss": losses[0], "final_loss": losses[-1]}


# --- export ----------------------------------------------------------------------------------


def export_det(model, out_dir: str | Path, check_image: np.ndarray | None = None) -> dict[str, Any]:
    """Write the det artifact folder ``out_dir`` (module doc) from ``model`` (``DetModel``).

    ``check_image``: BGR uint8 sheet region; its top-left (up to 640 px, multiples of 32) is run
    through Paddle and the exported ONNX under ONNX Runtime. Returns ``{"max_abs_diff", "shape"}``
    (``{}`` without ``check_image``).

    Raises:
        RuntimeError: paddle2onnx fails, or the ONNX output differs from Paddle's by more than
            ``EXPORT_TOLERANCE``.
    """
    import paddle
    import yaml

    from .deploy import fuse_for_inference
    from .det_arch import DetInferenceModel
    from .export import ort_session, paddle_to_onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    paddle.save(model.state_dict(), str(out / DET_PARAMS))
    wrapper = DetInferenceModel(fuse_for_inference(model))  # deploy form: re-parameterised convs
    wrapper.eval()
    paddle.jit.save(wrapper, str(out / "inference"), input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
    (out / "inference.yml").write_text(yaml.safe_dump(inference_yml(), sort_keys=False), encoding="utf-8")
    paddle_to_onnx(out / "inference.json", out / "inference.pdiparams", out / DET_ONNX, chars=None)
    if check_image is None:
        return {}
    h = max(32, min(640, check_image.shape[0] // 32 * 32))
    w = max(32, min(640, check_image.shape[1] // 32 * 32))
    import cv2

    region = cv2.resize(check_image, (w, h)) if check_image.shape[0] < 32 or check_image.shape[1] < 32 else check_image[:h, :w]
    x = normalise(region)[None]
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x)).numpy()
    sess = ort_session(out / DET_ONNX)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(ref - got).max())
    if diff > EXPORT_TOLERANCE:
        raise RuntimeError(f"det export check: ONNX differs from Paddle by {diff:.2e} > {EXPORT_TOLERANCE}")
    return {"max_abs_diff": diff, "shape": list(x.shape)}


EXPORT_TOLERANCE = 1e-3
"""Max abs difference of probability maps, Paddle vs exported ONNX (≈1e-5 measured)."""


def inference_yml() -> dict[str, Any]:
    """PaddleOCR 3.x det ``inference.yml`` for the exported model (PP-OCRv5 mobile det settings)."""
    return {
        "Global": {"model_name": "PP-OCRv5_mobile_det"},
        "PreProcess": {"transform_ops": [
            {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
            {"DetLabelEncode": None},
            {"DetResizeForTest": {"resize_long": 960}},
            {"NormalizeImage": {"mean": MEAN.tolist(), "std": STD.tolist(), "scale": "1./255.", "order": "hwc"}},
            {"ToCHWImage": None},
            {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
        ]},
        "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                        "unclip_ratio": 1.5},
    }


# --- evaluation ------------------------------------------------------------------------------


READ_MATCH_IOU = 0.1
"""A labelled line counts as read when the read line overlapping it most (IoU ≥ this, lenient on
box geometry on purpose) has its transcription (spaces ignored)."""


def evaluate_det(det_onnx: str | Path, rec_model_dir: str | Path, samples: Sequence[DetSample],
                 load: Callable[[Path], np.ndarray]) -> dict[str, Any]:
    """Detection and reading quality of the serving engine
    (``OcrEngine(rec_model_dir, det_model_path=det_onnx)``) on ``samples``:

    * ``precision`` / ``recall`` / ``hmean`` (+ counts): ICDAR 2015 (``det_eval``) of ``detect``;
    * ``read_line_acc`` / ``read_n``: share of labelled lines ``read`` exactly (``READ_MATCH_IOU``).
      Box geometry alone can mislead (boxes that hug the glyphs match tight labels better yet cut
      descenders and punctuation off the crops), so the gate also compares this, with the same rec
      model for both dets;
    * ``seconds``: wall time.
    """
    from ocrloop.ocr.engine import OcrEngine

    from .det_eval import evaluate_detections

    t0 = time.perf_counter()
    engine = OcrEngine(rec_model_dir, det_model_path=det_onnx)
    try:
        pairs, hits, n = [], 0, 0
        for s in samples:
            image = load(s.image)
            pairs.append((s.polygons, list(engine.detect(image)), s.ignore))
            h, k = _read_hits(s, engine.read(image))
            hits, n = hits + h, n + k
    finally:
        engine.close()
    out = evaluate_detections(pairs)
    out.update(read_line_acc=hits / n if n else 0.0, read_n=n, seconds=round(time.perf_counter() - t0, 3))
    return out


def _read_hits(sample: DetSample, lines) -> tuple[int, int]:
    """(labelled lines read exactly, labelled lines) of one sheet (``evaluate_det``)."""
    from .det_eval import _polygon

    read = [(_polygon(line.polygon), line.text.replace(" ", "")) for line in lines]
    hits = n = 0
    for poly, text, ign in zip(sample.polygons, sample.texts, sample.ignore):
        if ign:
            continue
        n += 1
        g = _polygon(poly)
        best, best_iou = None, 0.0
        for p, t in read:
            inter = g.intersection(p).area
            union = g.area + p.area - inter
            iou = inter / union if union > 0 else 0.0
            if iou > best_iou:
                best, best_iou = t, iou
        hits += int(best is not None and best_iou >= READ_MATCH_IOU and best == text.replace(" ", ""))
    return hits, n


# --- the training job's det phase --------------------------------------------------------------

DET_TRAIN_CHANNEL = "det_train"
DET_VALIDATION_CHANNEL = "det_validation"


def run_det_phase(*, train_dir: Path | None, validation_dir: Path | None, champion_det: Path | None,
                  candidate_dir: Path, cfg: DetTrainConfig, load: Callable[[Path], np.ndarray],
                  log: Callable[[str], None], emit: Callable[[str, float], None],
                  gate_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training job's detection phase, after the rec candidate has been exported to
    ``candidate_dir``.

    * ``cfg.steps > 0`` and ``train_dir`` holds ``label.txt``: fine-tune the champion's det
      (``champion_det``: the champion's ``det/`` folder, None for the stock model), export it to
      ``candidate_dir/det``, evaluate champion and candidate det on ``validation_dir`` through the
      serving engine (``evaluate_det``, both with the candidate's rec) and print ``METRIC
      det_hmean`` / ``champion_det_hmean`` / ``det_read_line_acc`` / … lines;
    * otherwise: copy the champion's ``det/`` (if any) into the candidate so a rec-only job keeps
      the fine-tuned detector; no det metrics.

    Promotion: the fine-tuned det stays in the candidate only when it loses at most
    ``gate_max_det_hmean_drop`` points of hmean and ``gate_max_det_read_drop`` points of lines read
    (``ocrloop.config.LoopConfig`` fields from ``gate_config``) against the champion's det;
    otherwise ``candidate_dir/det`` is replaced by the champion's det (removed when that is the
    stock one), so a worse detector never ships and never blocks the rec improvements (the
    registry gate still rejects a *promoted* det that regresses beyond its own thresholds).

    Returns ``{"trained", "promoted", "not_promoted_reasons", "source", "train", "export_check",
    "champion", "candidate", "sheets"}`` (``champion`` / ``candidate``: ``evaluate_det`` of the
    champion's and the fine-tuned det) when det was trained, else ``{"trained": False,
    "inherited": bool}``.

    Raises:
        DetInputError: det training requested with data but without a validation channel, or bad
            label files; RuntimeError: export check failure.
    """
    import shutil

    from ocrloop.ocr.engine import default_det_model_path

    has_data = train_dir is not None and (train_dir / "label.txt").is_file()
    if cfg.steps <= 0 or not has_data:
        if champion_det is not None and (champion_det / DET_ONNX).is_file():
            shutil.copytree(champion_det, candidate_dir / DET_DIR, dirs_exist_ok=True)
            log("det not trained: the candidate keeps the champion's det model")
            return {"trained": False, "inherited": True}
        if cfg.steps > 0:
            log("det_steps > 0 but no det_train channel with label.txt: det not trained")
        return {"trained": False, "inherited": False}
    train = read_det_labels(train_dir)
    if validation_dir is None or not (validation_dir / "label.txt").is_file():
        raise DetInputError("det fine-tuning needs a det_validation channel (held-out drawings) to be gated")
    validation = read_det_labels(validation_dir)
    if not train or not validation:
        raise DetInputError(f"det channels are empty: train {len(train)}, validation {len(validation)} sheets")
    log(f"det: {len(train)} training sheets, {len(validation)} held-out sheets")
    model, source = load_det_for_training(champion_det)
    summary = train_det(model, train, cfg, load, log=log)
    emit("det_final_loss", summary["final_loss"])
    out = candidate_dir / DET_DIR
    check = export_det(model, out, load(validation[0].image))
    emit("det_paddle_onnx_max_abs_diff", check["max_abs_diff"])
    champion_onnx = champion_det / DET_ONNX if champion_det is not None else default_det_model_path()
    champion = evaluate_det(champion_onnx, candidate_dir, validation, load)
    candidate = evaluate_det(out / DET_ONNX, candidate_dir, validation, load)
    for prefix, res in (("champion_", champion), ("", candidate)):
        for key in ("hmean", "precision", "recall", "read_line_acc"):
            emit(f"{prefix}det_{key}", res[key])
    log(f"det hmean champion {champion['hmean']:.4f} → candidate {candidate['hmean']:.4f}; lines read "
        f"{champion['read_line_acc']:.4f} → {candidate['read_line_acc']:.4f} (both with the candidate rec)")
    reasons = promotion_failures(champion, candidate, gate_config or {})
    emit("det_promoted", float(not reasons))
    if reasons:
        shutil.rmtree(out)
        if champion_det is not None:
            shutil.copytree(champion_det, out)
        log("det not promoted (the candidate keeps the champion's det): " + "; ".join(reasons))
    return {"trained": True, "promoted": not reasons, "not_promoted_reasons": reasons, "source": source,
            "train": {**summary, **dataclasses.asdict(cfg)}, "export_check": check, "champion": champion,
            "candidate": candidate, "sheets": {"train": len(train), "validation": len(validation)}}


def promotion_failures(champion: dict[str, Any], candidate: dict[str, Any], gate_config: dict[str, Any]) -> list[str]:
    """Why a fine-tuned det (``candidate``, ``evaluate_det`` result) must not replace the
    champion's: hmean or lines-read drops (points) beyond the ``LoopConfig`` thresholds in
    ``gate_config``; empty when it may be promoted.

    Raises:
        ValueError: unknown ``gate_config`` keys.
    """
    from ocrloop.config import LoopConfig

    config = LoopConfig.from_mapping(gate_config)
    out = []
    hmean_drop = 100.0 * (champion["hmean"] - candidate["hmean"])
    read_drop = 100.0 * (champion["read_line_acc"] - candidate["read_line_acc"])
    if hmean_drop > config.gate_max_det_hmean_drop:
        out.append(f"det hmean {100 * champion['hmean']:.2f}% → {100 * candidate['hmean']:.2f}% "
                   f"(-{hmean_drop:.2f} pts > {config.gate_max_det_hmean_drop:.2f})")
    if read_drop > config.gate_max_det_read_drop:
        out.append(f"lines read {100 * champion['read_line_acc']:.2f}% → {100 * candidate['read_line_acc']:.2f}% "
                   f"(-{read_drop:.2f} pts > {config.gate_max_det_read_drop:.2f})")
    return out
