"""Fine-tuning job under the SageMaker training container contract.

Layout under the root (env ``OCRLOOP_ML_ROOT``, default ``/opt/ml``; see "How Amazon SageMaker
Provides Training Information", https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html):

* ``input/config/hyperparameters.json`` — every value a string (SageMaker passes strings);
* ``input/config/inputdataconfig.json`` — channel descriptions (optional, recorded in the card);
* ``input/data/train/manifest.jsonl`` (required), ``input/data/validation/manifest.jsonl``
  (new-domain holdout), ``input/data/olddomain/manifest.jsonl`` (old-domain regression set): one
  JSON object a line, ``{"image": "<path relative to the channel dir>", "text": "...",
  "origin": "new"|"replay"|"base", ...}`` (extra keys ignored);
* ``input/data/model/`` — the champion model version folder, or a ``model.tar.gz`` of it;
* ``checkpoints/`` — spot checkpoints (SageMaker's default local checkpoint path);
* ``model/`` — the candidate model version folder (SageMaker uploads it as ``model.tar.gz``);
* ``output/data/metrics.json`` — a copy of the metrics; ``output/failure`` — the reason on failure.

The job fine-tunes the champion's ``rec.pdparams`` with CTC loss (blank 0), AdamW, linear warmup
then cosine decay, global-norm gradient clipping; evaluates the champion and the candidate the
way serving runs them (each one's ``model.onnx`` under ONNX Runtime, ``evaluate_onnx``) on the
validation and old-domain sets; prints ``METRIC name=value`` lines for SageMaker
``MetricDefinitions`` (e.g. regex ``validation_line_acc=([0-9.]+)``) and writes ``metrics.json``.

Continual-learning options (``Hyperparameters``; the pieces live in ``ocrloop.model.continual``):
dictionary extension with a grown CTC head (old classes decode as before), freezing
(BN statistics / backbone / backbone + neck), a separate LR multiplier for the head, the
character-balanced replay sampler, distillation from the frozen champion on replay samples
(Hinton et al. 2015), early stopping on the validation set (best weights kept), and checkpoints
that carry all of it (a resumed run ends as an uninterrupted one). Metrics per set: line accuracy,
character accuracy, normalised edit distance, per-character recall, micro recall of the *new*
characters (the ones the dict gained + ``new_chars``) and of the old ones, and a ``by_kind``
breakdown when manifests tag lines with ``kind``. The promotion gate (``ocrloop.gate.decide``
with ``gate_config``) is applied to the result and recorded in ``metrics.json`` and the card.

Detection (``det_steps`` > 0 and a ``det_train`` channel): after the rec candidate is exported, the
champion's det (its ``det/`` folder, else the stock PP-OCRv5 mobile det) is fine-tuned with the DB
loss on the annotators' boxes, exported to ``model/det/`` and evaluated, champion vs candidate,
through the serving engine on the ``det_validation`` channel (ICDAR 2015 hmean);
``metrics.json`` gets ``champion.det`` / ``candidate.det`` (the gate's ``gate_max_det_hmean_drop``)
and ``det`` (training summary, export check). Without det training the candidate carries the
champion's ``det/`` over. See ``ocrloop.model.det_train``. The det phase is not checkpointed: a
resumed (spot) job re-runs it from the champion's det with the same seed.

Paddle is imported only once the inputs have been validated, so bad input fails fast.

CPU threads: Paddle's CPU kernels run on one thread unless told otherwise (dygraph ignores
``FLAGS_paddle_num_threads``; PaddlePaddle/Paddle#32054), so the job sets the CPU math library's
thread count to ``training_threads()``: every CPU the process may run on, or env
``OCRLOOP_TRAIN_THREADS``. Runs are deterministic for a given count; different counts sum in a
different order (2 threads vs 1: weights up to 1.2e-4 apart after 40 steps), so the model card
records the count (``train.cpu_threads``). On 2 cores, 2 threads take 14–21 % less time a step
(bench/README.md, *Continual training*).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ocrloop.config import DISTILL_ROWS, FREEZE_CHOICES

from .continual import DRAWING_SYMBOLS

DEFAULT_ML_ROOT = "/opt/ml"
SAMPLERS = ("epoch", "balanced")
FROZEN_ENGINES = ("auto", "paddle", "onnxruntime")
CHANNELS_EVAL = ("validation", "olddomain")
KEEP_CHECKPOINTS = 2


class InputError(ValueError):
    """Bad job input (hyperparameters, manifest, missing channel or image)."""


# --- hyperparameters ---------------------------------------------------------------------------


@dataclasses.dataclass
class Hyperparameters:
    """Training job settings; ``from_sagemaker`` parses SageMaker's all-strings mapping.

    Attributes:
        max_steps: optimizer steps in total (including steps done before a resume).
        batch_size: lines per step.
        learning_rate: peak LR. 2e-5..5e-5 works for PP-OCRv5 rec; 5e-4 destroys it (DESIGN.md).
        warmup_steps: linear warmup from ``learning_rate / (warmup_steps + 1)`` to
            ``learning_rate``, then cosine decay to 0 at ``max_steps``.
        seed: seeds the data order (one permutation per epoch) and Paddle's RNG.
        freeze_bn: BatchNorm layers stay in eval mode (running statistics frozen) while training.
        checkpoint_every: save a checkpoint every this many steps (and after the last step).
        eval_batch_size: lines per evaluation batch.
        max_width: training batch width cap in px (PaddleOCR trains at 320); CTC gets
            ``time_steps(min(320, max_width))`` steps at least, longer labels are skipped.
        weight_decay: AdamW decoupled weight decay, applied to conv/linear weights only.
        grad_clip_norm: global-norm gradient clipping threshold (PaddleOCR rec configs: 10).
        model_version / parent_version / dataset_versions: lineage for the model card.
        extend_dict: append characters of the training labels that the champion's dict lacks and
            grow the CTC head (``ocrloop.model.continual.grow_head``: old classes decode exactly as
            before); off → such samples are skipped as ``out_of_dict``.
        freeze: ``none`` | ``backbone`` (the SVTR neck and CTC head train) | ``backbone_neck``
            (only the CTC head trains). The frozen layers' output is computed once per crop
            (``continual.FeatureCache``) when ``max_width`` ≤ 320 (every batch is then exactly
            ``max_width`` wide).
        frozen_engine: what runs the frozen layers for that cache: ``onnxruntime`` (exported
            once at the job's start and checked against Paddle; ≈5.6× cheaper than Paddle dygraph
            on CPU), ``paddle``, or ``auto`` (ONNX Runtime when Paddle runs on CPU, Paddle on a
            GPU). The engine used and the check go into the metrics (``train.frozen_features``).
        head_lr_mult: the CTC head's LR is ``learning_rate × head_lr_mult`` (new or never-emitted
            classes need a larger step on the head than the body tolerates).
        sampler: ``epoch`` (one seeded permutation of the manifest per epoch) or ``balanced``
            (``continual.BalancedReplaySampler``: ``replay_fraction`` of each batch is replay,
            drawn character-balanced with exponent ``replay_balance``).
        replay_fraction / replay_balance: see ``sampler``; 0.3 is the loop's 7:3 mix.
        distill_alpha / distill_temperature: weight α and temperature T of the distillation term
            from the frozen champion (``continual.distillation_loss``; Hinton et al. 2015); α = 0
            turns it off.
        distill_rows: ``replay`` (distil on the replay rows of each batch), ``known`` (replay
            rows and new rows whose labels only use the champion's characters and none of
            ``new_chars``: where the teacher can read; v0 has classes for ⌀ ↧ ⏥ ⌭ ⊥ ∥ but reads
            1.5 % of symbol lines, so rows holding them get no teacher) or ``all`` (every row, as Learning without Forgetting does: Li & Hoiem 2016,
            arXiv:1606.09282). The teacher only scores the champion's classes; on rows with new
            characters it pulls their positions toward old look-alikes (``⌀`` → ``0``), which
            ``known`` avoids. With a frozen backbone the teacher reuses the student's backbone
            features (both are the champion's frozen backbone in eval mode) and runs only its
            neck and head.
        eval_every: evaluate the candidate (Paddle) on the ``validation`` channel every this many
            steps (0: never); needed by early stopping and ``target_line_acc``.
        eval_max_lines: in-training evaluations use this many validation lines (a seeded sample;
            0: all). The final evaluation always uses all.
        early_stopping_patience: stop after this many evaluations without improvement of the
            score ``line_acc + 0.001 × char_acc`` by more than ``early_stopping_min_delta``, and
            keep the best evaluated weights (0: off).
        target_line_acc: stop as soon as an evaluation reaches this validation line accuracy
            (0: off; the benchmark's "train until it matches" budget).
        new_chars: characters reported as *new* in the metrics (with the ones the dict gained).
        gate_config: JSON object of ``ocrloop.config.LoopConfig`` fields (gate thresholds) for
            the gate decision the job writes into the model card (``{}``: defaults).
        det_steps: detection fine-tuning steps (``ocrloop.model.det_train``; 0: off). Needs the
            ``det_train`` and ``det_validation`` channels (PaddleOCR det ``label.txt`` + sheets);
            without ``det_train`` the candidate keeps the champion's det model.
        det_batch_size / det_crop_px / det_learning_rate / det_warmup_steps / det_freeze_bn: the
            det budget (random square crops of ``det_crop_px`` px, a multiple of 32), peak LR,
            warmup, BatchNorm statistics frozen.
        det_label_pad: label boxes grown by this × their short side on each side before the DB
            targets are made (``det_labels.pad_polygon``): glyph-tight boxes teach the detector to
            cut descenders and punctuation off the recogniser's crops (``LoopConfig.det_label_pad``
            has the measurements behind the default).
    """

    max_steps: int = 60
    batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_steps: int = 5
    seed: int = 17
    freeze_bn: bool = True
    checkpoint_every: int = 20
    eval_batch_size: int = 16
    max_width: int = 320
    weight_decay: float = 0.01
    grad_clip_norm: float = 10.0
    model_version: str = "candidate"
    parent_version: str | None = None
    dataset_versions: list[str] = dataclasses.field(default_factory=list)
    extend_dict: bool = True
    freeze: str = "none"
    frozen_engine: str = "auto"
    head_lr_mult: float = 1.0
    sampler: str = "epoch"
    replay_fraction: float = 0.3
    replay_balance: float = 0.5
    distill_alpha: float = 0.0
    distill_temperature: float = 2.0
    distill_rows: str = "replay"
    eval_every: int = 0
    eval_max_lines: int = 0
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    target_line_acc: float = 0.0
    new_chars: str = DRAWING_SYMBOLS
    gate_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    det_steps: int = 0
    det_batch_size: int = 2
    det_crop_px: int = 640
    det_learning_rate: float = 1e-4
    det_warmup_steps: int = 2
    det_freeze_bn: bool = True
    det_label_pad: float = 0.18

    @classmethod
    def from_sagemaker(cls, raw: dict[str, Any]) -> "Hyperparameters":
        """Parse ``hyperparameters.json`` content (values usually strings).

        ``dataset_versions`` is a JSON list (string); booleans accept true/false/1/0/yes/no; keys
        starting with ``sagemaker_`` are ignored.

        Raises:
            InputError: unknown key, unparsable value, or a value out of range.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key.startswith("sagemaker_"):
                continue
            if key not in fields:
                raise InputError(f"unknown hyperparameter {key!r} (known: {sorted(fields)})")
            default = getattr(cls(), key)
            if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
                value = json.loads(value)  # the SageMaker Python SDK JSON-encodes string values
            try:
                if key == "dataset_versions":
                    parsed = json.loads(value) if isinstance(value, str) else value
                    if isinstance(parsed, str):
                        parsed = [parsed]
                    if not isinstance(parsed, list):
                        raise ValueError("expected a JSON list")
                    kwargs[key] = [str(v) for v in parsed]
                elif key == "gate_config":
                    parsed = json.loads(value) if isinstance(value, str) else value
                    if not isinstance(parsed, dict):
                        raise ValueError("expected a JSON object")
                    from ocrloop.config import LoopConfig

                    LoopConfig.from_mapping(parsed)  # unknown keys / bad values fail here
                    kwargs[key] = parsed
                elif key == "parent_version":
                    kwargs[key] = None if value in (None, "", "null", "None") else str(value)
                elif isinstance(default, bool):
                    text = str(value).strip().lower()
                    if text not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError("expected true/false")
                    kwargs[key] = text in ("true", "1", "yes")
                elif isinstance(default, int):
                    kwargs[key] = int(float(value)) if float(value).is_integer() else int(value)
                elif isinstance(default, float):
                    kwargs[key] = float(value)
                else:
                    kwargs[key] = str(value)
            except (TypeError, ValueError) as exc:
                raise InputError(f"hyperparameter {key}={value!r}: {exc}") from exc
        hp = cls(**kwargs)
        for name in ("max_steps", "batch_size", "checkpoint_every", "eval_batch_size"):
            if getattr(hp, name) < 1:
                raise InputError(f"hyperparameter {name} must be >= 1")
        if hp.warmup_steps < 0 or not (0 < hp.learning_rate < 1) or hp.max_width < 16:
            raise InputError("warmup_steps >= 0, 0 < learning_rate < 1 and max_width >= 16 required")
        if hp.freeze not in FREEZE_CHOICES:
            raise InputError(f"hyperparameter freeze must be one of {FREEZE_CHOICES}, got {hp.freeze!r}")
        if hp.frozen_engine not in FROZEN_ENGINES:
            raise InputError(f"hyperparameter frozen_engine must be one of {FROZEN_ENGINES}, got {hp.frozen_engine!r}")
        if hp.distill_rows not in DISTILL_ROWS:
            raise InputError(f"hyperparameter distill_rows must be one of {DISTILL_ROWS}, got {hp.distill_rows!r}")
        if hp.sampler not in SAMPLERS:
            raise InputError(f"hyperparameter sampler must be one of {SAMPLERS}, got {hp.sampler!r}")
        for name in ("replay_fraction", "replay_balance", "target_line_acc"):
            if not 0.0 <= getattr(hp, name) <= 1.0:
                raise InputError(f"hyperparameter {name} must be in [0, 1]")
        if hp.head_lr_mult <= 0 or hp.distill_alpha < 0 or hp.distill_temperature <= 0:
            raise InputError("head_lr_mult > 0, distill_alpha >= 0 and distill_temperature > 0 required")
        for name in ("eval_every", "eval_max_lines", "early_stopping_patience"):
            if getattr(hp, name) < 0:
                raise InputError(f"hyperparameter {name} must be >= 0")
        if (hp.early_stopping_patience or hp.target_line_acc) and not hp.eval_every:
            raise InputError("early_stopping_patience / target_line_acc need eval_every > 0")
        if hp.det_steps < 0 or hp.det_batch_size < 1 or hp.det_warmup_steps < 0:
            raise InputError("det_steps >= 0, det_batch_size >= 1 and det_warmup_steps >= 0 required")
        if not 0.0 <= hp.det_label_pad <= 1.0:
            raise InputError("det_label_pad must be in [0, 1]")
        if hp.det_crop_px < 64 or hp.det_crop_px % 32 or not (0 < hp.det_learning_rate < 1):
            raise InputError("det_crop_px must be a multiple of 32 (>= 64) and 0 < det_learning_rate < 1")
        return hp


# --- data ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    """One line crop: ``image`` absolute path, ``text`` label, ``origin`` new/replay/base, and an
    optional ``kind`` tag (e.g. ``corpus``/``symbol``) that evaluations break results down by."""

    image: Path
    text: str
    origin: str = "new"
    kind: str | None = None


def read_manifest(channel_dir: str | Path) -> list[Sample]:
    """Read ``<channel_dir>/manifest.jsonl``.

    Raises:
        InputError: missing manifest, bad JSON, missing ``image``/``text`` keys, an image path that
            is absolute or leaves the channel folder, or an image file that does not exist.
    """
    channel_dir = Path(channel_dir)
    manifest = channel_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise InputError(f"missing manifest {manifest}")
    root = channel_dir.resolve()
    samples = []
    for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{manifest}:{lineno}: invalid JSON ({exc})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not isinstance(obj.get("text"), str):
            raise InputError(f"{manifest}:{lineno}: need string fields 'image' and 'text'")
        rel = Path(obj["image"])
        path = (channel_dir / rel).resolve()
        if rel.is_absolute() or not path.is_relative_to(root):
            raise InputError(f"{manifest}:{lineno}: image path {obj['image']!r} leaves the channel folder")
        if not path.is_file():
            raise InputError(f"{manifest}:{lineno}: image {obj['image']!r} not found")
        kind = obj.get("kind")
        samples.append(Sample(path, obj["text"], str(obj.get("origin", "new")), None if kind is None else str(kind)))
    return samples


def time_steps(width: int) -> int:
    """CTC time steps ``T`` the network emits for an input ``width`` px: stem stride 2 (3×3,
    pad 1) → ``ceil(W/2)``, the (1, 2)-stride block → ``ceil(W/4)``, the (3, 2) average pool →
    ``floor(ceil(W/4) / 2)``; 40 for W = 320 (``ocrloop.model.arch.RecModel``)."""
    w = -(-width // 2)
    w = -(-w // 2)
    return w // 2


def ctc_min_steps(label: Sequence[int]) -> int:
    """Shortest input a CTC alignment of ``label`` needs: its length plus one blank between each
    pair of equal neighbours."""
    return len(label) + sum(1 for a, b in zip(label, label[1:]) if a == b)


def encode_samples(
    samples: Sequence[Sample], classes: Sequence[str], max_steps_t: int
) -> tuple[list[tuple[Sample, list[int]]], dict[str, Any]]:
    """Map labels to class indices (per code point, as PaddleOCR's ``CTCLabelEncode``).

    Samples whose label is empty, holds a character outside ``classes`` or needs more than
    ``max_steps_t`` CTC steps are skipped.

    Returns:
        ``(kept [(sample, indices)], skipped {"empty", "out_of_dict", "too_long", "total",
        "unknown_chars": {char: count}})``.
    """
    index = {c: i for i, c in enumerate(classes) if i > 0}
    kept = []
    skipped: dict[str, Any] = {"empty": 0, "out_of_dict": 0, "too_long": 0}
    unknown: Counter[str] = Counter()
    for s in samples:
        text = s.text.strip()
        if not text:
            skipped["empty"] += 1
            continue
        missing = [ch for ch in text if ch not in index]
        if missing:
            skipped["out_of_dict"] += 1
            unknown.update(missing)
            continue
        label = [index[ch] for ch in text]
        if ctc_min_steps(label) > max_steps_t:
            skipped["too_long"] += 1
            continue
        kept.append((s, label))
    skipped["total"] = skipped["empty"] + skipped["out_of_dict"] + skipped["too_long"]
    skipped["unknown_chars"] = dict(unknown.most_common(50))
    return kept, skipped


class ImageCache:
    """Decoded BGR uint8 images by path, each decoded once (``cv2.imread``); line crops are small
    (≈40 kB each). The det trainer uses it for sheets with its own ``error`` class.

    Raises (on call):
        ``error`` (default ``InputError``): the file cannot be decoded.
    """

    def __init__(self, error: type[Exception] | None = None) -> None:
        self._cache: dict[Path, np.ndarray] = {}
        self._error = error or InputError

    def __call__(self, path: Path) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            import cv2

            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None or img.size == 0:
                raise self._error(f"cannot decode image {path}")
            self._cache[path] = img
        return img


class EpochSampler:
    """Batches of indices in ``range(n)``: one seeded permutation per epoch
    (``np.random.default_rng([seed, epoch])``), consumed in order and wrapping into the next
    epoch. Its whole state is ``(epoch, pos)``, so a resume continues the exact data order."""

    def __init__(self, n: int, seed: int, epoch: int = 0, pos: int = 0):
        if n < 1:
            raise InputError("no trainable samples")
        self.n, self.seed, self.epoch, self.pos = n, seed, epoch, pos
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next(self, batch_size: int) -> list[int]:
        """The next ``batch_size`` sample indices (crossing epoch boundaries as needed)."""
        out: list[int] = []
        while len(out) < batch_size:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            take = min(batch_size - len(out), self.n - self.pos)
            out.extend(int(i) for i in self._perm[self.pos : self.pos + take])
            self.pos += take
        return out

    def state(self) -> dict[str, int]:
        """``{"epoch", "pos"}``: pass back as keyword arguments to resume."""
        return {"epoch": self.epoch, "pos": self.pos}


# --- evaluation ------------------------------------------------------------------------------


def char_recall(preds: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-character recall over a set: for every non-space label character, the share of its
    occurrences that the Levenshtein alignment (rapidfuzz ``opcodes``) of label → prediction keeps
    as ``equal``. Texts are whitespace-normalised as in ``ocrloop.metrics``.

    Returns:
        ``{char: {"recall": float in [0, 1], "n": occurrences}}``, characters sorted.

    Raises:
        ValueError: length mismatch.
    """
    from rapidfuzz.distance import Levenshtein

    from ocrloop.metrics import normalize

    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    total: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    for pred, label in zip(preds, labels):
        pred, label = normalize(pred), normalize(label)
        total.update(ch for ch in label if not ch.isspace())
        for op in Levenshtein.opcodes(label, pred):
            if op.tag == "equal":
                hit.update(ch for ch in label[op.src_start : op.src_end] if not ch.isspace())
    return {ch: {"recall": hit[ch] / total[ch], "n": total[ch]} for ch in sorted(total)}


def evaluate(
    predict: Callable[[np.ndarray], np.ndarray],
    samples: Sequence[Sample],
    classes: Sequence[str],
    images: ImageCache,
    batch_size: int,
) -> dict[str, Any]:
    """Recognise every sample with ``predict`` (float32 ``[N, 3, 48, W]`` → probabilities
    ``[N, T, C]``) and score it with ``ocrloop.metrics.summarize``.

    Lines are batched by aspect ratio (as PaddleOCR's predictor does) and batched at full width
    (no cap, like serving).

    Returns:
        ``{"line_acc", "char_acc", "norm_edit_distance", "n", "char_recall": {char: {"recall",
        "n"}}}`` (fractions in [0, 1]; ``norm_edit_distance`` is the mean normalised Levenshtein
        distance, ``1 - char_acc``; see ``char_recall``), plus ``"by_kind": {kind: {"line_acc",
        "char_acc", "n"}}`` when samples carry a ``kind``.
    """
    from ocrloop.metrics import summarize
    from ocrloop.textline import ctc_greedy_decode, make_batch

    imgs = [images(s.image) for s in samples]
    order = sorted(range(len(samples)), key=lambda i: imgs[i].shape[1] / imgs[i].shape[0])
    preds: list[str] = [""] * len(samples)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        probs = predict(make_batch([imgs[i] for i in idx]))
        for i, (text, _) in zip(idx, ctc_greedy_decode(probs, classes)):
            preds[i] = text
    labels = [s.text for s in samples]
    summary = summarize(preds, labels)
    out = {
        **summary,
        "norm_edit_distance": 1.0 - summary["char_acc"] if labels else 0.0,
        "char_recall": char_recall(preds, labels),
    }
    kinds = sorted({s.kind for s in samples if s.kind is not None})
    if kinds:
        out["by_kind"] = {
            k: summarize([p for p, s in zip(preds, samples) if s.kind == k], [s.text for s in samples if s.kind == k])
            for k in kinds
        }
    return out


# --- job -------------------------------------------------------------------------------------


def evaluate_onnx(
    onnx_path: str | Path,
    eval_sets: dict[str, Sequence[Sample]],
    classes: Sequence[str],
    images: ImageCache,
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """``evaluate`` every set with a model version's ``model.onnx`` under ONNX Runtime (CPU, the
    serving engine; ``ocrloop.model.export.ort_session``).

    The job scores the champion and the candidate this way, so the gate compares the two models
    as the endpoint would serve them. On the demo's sets (145 + 106 lines) the champion's ONNX
    gave the same line accuracy, character accuracy and per-character recall as its Paddle
    weights in 10 s instead of 56 s (2 cores; the same on a fine-tuned champion, 600 lines, 21 s
    instead of 117 s).

    Returns:
        ``{set name: evaluate(...) result}``.

    Raises:
        ValueError: the model's output has a class count other than ``len(classes)``.
    """
    from .export import ort_session

    sess = ort_session(onnx_path)
    in_name = sess.get_inputs()[0].name
    n_out = sess.get_outputs()[0].shape[-1]
    if isinstance(n_out, int) and n_out != len(classes):
        raise ValueError(f"{onnx_path} outputs {n_out} classes, its dict has {len(classes)}")
    return {
        name: evaluate(lambda x: sess.run(None, {in_name: x})[0], samples, classes, images, batch_size)
        for name, samples in eval_sets.items()
    }


@dataclasses.dataclass
class JobPaths:
    """The container contract paths under ``root``."""

    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def inputdataconfig(self) -> Path:
        return self.root / "input" / "config" / "inputdataconfig.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"


def format_metric(value: float) -> str:
    """Positional notation (no exponent, so a regex like ``=([0-9.]+)`` captures the whole number),
    up to 10 decimals, trailing zeros trimmed: 3e-05 → ``0.00003``, 0.8125 → ``0.8125``."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def emit(name: str, value: float) -> None:
    """Print ``METRIC name=value`` (flushed) for SageMaker ``MetricDefinitions``."""
    print(f"METRIC {name}={format_metric(value)}", flush=True)


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[ocrloop.train {time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


TRAIN_THREADS_ENV = "OCRLOOP_TRAIN_THREADS"


def training_threads() -> int:
    """Threads for Paddle's CPU kernels: ``$OCRLOOP_TRAIN_THREADS``, else the CPUs this process may
    run on (``os.sched_getaffinity``, which honours container CPU sets; ``os.cpu_count`` where
    it is missing).

    Raises:
        InputError: the variable is set to something other than a positive integer.
    """
    raw = os.environ.get(TRAIN_THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise InputError(f"{TRAIN_THREADS_ENV}={raw!r}: expected a positive integer")
        return int(raw)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def locate_champion(channel: Path, scratch: Path) -> Path:
    """The champion model folder: ``channel`` itself, or ``model.tar.gz`` in it extracted into
    ``scratch`` (tar ``data`` filter: no absolute paths, links out or devices).

    Raises:
        InputError: neither ``rec.pdparams`` nor ``model.tar.gz`` is found, or the folder has no
            ``model.onnx`` (the served model, which the gate scores).
    """
    if (channel / "rec.pdparams").is_file():
        return _served(channel)
    tar = channel / "model.tar.gz"
    if not tar.is_file():
        raise InputError(f"model channel {channel} has neither rec.pdparams nor model.tar.gz")
    with tarfile.open(tar) as tf:
        tf.extractall(scratch, filter="data")
    found = sorted(p.parent for p in scratch.rglob("rec.pdparams"))
    if not found:
        raise InputError(f"{tar} holds no rec.pdparams")
    return _served(found[0])


def _served(folder: Path) -> Path:
    if not (folder / "model.onnx").is_file():
        raise InputError(f"champion model folder {folder} has no model.onnx (the served model the gate scores)")
    return folder


@dataclasses.dataclass
class JobInputs:
    hp: Hyperparameters
    train: list[Sample]
    eval_sets: dict[str, list[Sample]]
    inputdataconfig: dict[str, Any] | None


def read_inputs(paths: JobPaths) -> JobInputs:
    """Validate everything that does not need Paddle: hyperparameters, manifests, images exist.

    Raises:
        InputError: see ``Hyperparameters.from_sagemaker`` and ``read_manifest``; also a missing
            ``train`` or ``model`` channel or an empty training manifest.
    """
    raw = json.loads(paths.hyperparameters.read_text()) if paths.hyperparameters.is_file() else {}
    if not isinstance(raw, dict):
        raise InputError("hyperparameters.json must hold a JSON object")
    hp = Hyperparameters.from_sagemaker(raw)
    idc = json.loads(paths.inputdataconfig.read_text()) if paths.inputdataconfig.is_file() else None
    for name, cfg in (idc or {}).items():
        if isinstance(cfg, dict) and cfg.get("TrainingInputMode") == "Pipe":
            raise InputError(f"channel {name}: Pipe input mode is not supported (use File or FastFile)")
        if not paths.channel(name).is_dir():
            raise InputError(f"inputdataconfig.json lists channel {name!r} but {paths.channel(name)} is missing")
    if not paths.channel("model").is_dir():
        raise InputError(f"missing model channel {paths.channel('model')}")
    train = read_manifest(paths.channel("train"))
    if not train:
        raise InputError("the train manifest is empty")
    eval_sets = {}
    for name in CHANNELS_EVAL:
        if paths.channel(name).is_dir():
            eval_sets[name] = read_manifest(paths.channel(name))
        else:
            log(f"channel {name} absent: not evaluated")
    return JobInputs(hp, train, eval_sets, idc)


def _checkpoint_dirs(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    dirs = [p for p in ckpt_root.glob("step-*") if p.is_dir() and (p / "state.json").is_file()]
    return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))


_PORTABLE = "param::"


def _auto_to_structured(model) -> dict[str, str]:
    return {p.name: n for n, p in model.named_parameters()}


def portable_optimizer_state(state: dict[str, Any], model) -> dict[str, Any]:
    """Re-key a Paddle optimizer state dict from auto-generated parameter names
    (``conv2d_156.w_0_moment1_0``: a per-process counter, so they differ between processes that
    built other layers first) to structured ones (``param::<model path>::moment1_0``).

    Raises:
        KeyError: an accumulator that belongs to no parameter of ``model``.
    """
    names = _auto_to_structured(model)
    by_length = sorted(names, key=len, reverse=True)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key == "LR_Scheduler":
            out[key] = value
            continue
        owner = next((a for a in by_length if key.startswith(a + "_")), None)
        if owner is None:
            raise KeyError(f"optimizer state {key!r} belongs to no model parameter")
        out[f"{_PORTABLE}{names[owner]}::{key[len(owner) + 1 :]}"] = value
    return out


def local_optimizer_state(state: dict[str, Any], model) -> dict[str, Any]:
    """Inverse of ``portable_optimizer_state`` for this process's parameter names.

    Raises:
        KeyError: a saved parameter path that ``model`` does not have.
    """
    auto = {n: p.name for n, p in model.named_parameters()}
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(_PORTABLE):
            path, rest = key[len(_PORTABLE) :].split("::", 1)
            out[f"{auto[path]}_{rest}"] = value
        else:
            out[key] = value
    return out


def save_checkpoint(ckpt_root: Path, model, optimizer, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-NNNNNN/`` (model.pdparams, optimizer.pdopt, rng.pkl, state.json)
    atomically (temp folder + rename) and keep only the newest ``KEEP_CHECKPOINTS``."""
    import paddle

    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{state['step']:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=ckpt_root))
    paddle.save(model.state_dict(), str(tmp / "model.pdparams"))
    paddle.save(portable_optimizer_state(optimizer.state_dict(), model), str(tmp / "optimizer.pdopt"))
    with open(tmp / "rng.pkl", "wb") as fh:
        pickle.dump({"paddle": paddle.get_rng_state(), "numpy": np.random.get_state()}, fh)
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in _checkpoint_dirs(ckpt_root)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Path, model, optimizer) -> dict[str, Any]:
    """Restore model, optimizer (incl. LR scheduler position) and RNG state; returns state.json."""
    import paddle

    model.set_state_dict(paddle.load(str(ckpt / "model.pdparams")))
    opt_state = local_optimizer_state(paddle.load(str(ckpt / "optimizer.pdopt")), model)
    with warnings.catch_warnings():
        # LinearWarmup keeps its inner scheduler under an extra key that the base class warns
        # about before LinearWarmup.set_state_dict restores it.
        warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
        optimizer.set_state_dict(opt_state)
    with open(ckpt / "rng.pkl", "rb") as fh:
        rng = pickle.load(fh)
    paddle.set_rng_state(rng["paddle"])
    np.random.set_state(rng["numpy"])
    return json.loads((ckpt / "state.json").read_text())


def make_optimizer(model, hp: Hyperparameters):
    """AdamW (decay on conv/linear weights only) with linear warmup + cosine decay and global-norm
    clipping, over the trainable parameters (frozen ones and BN statistics have ``stop_gradient``).
    The CTC head (``model.head``, when present) is its own parameter group with LR multiplier
    ``hp.head_lr_mult``. Returns ``(optimizer, scheduler)``; call ``scheduler.step()`` once per
    step."""
    import paddle

    params = [p for p in model.parameters() if not p.stop_gradient]  # not BN running statistics
    if not params:
        raise InputError("nothing to train: every parameter is frozen")
    decay_names = {p.name for p in params if len(p.shape) >= 2}
    cosine_steps = max(1, hp.max_steps - hp.warmup_steps)
    sched: Any = paddle.optimizer.lr.CosineAnnealingDecay(hp.learning_rate, T_max=cosine_steps, eta_min=0.0)
    if hp.warmup_steps > 0:
        # start at lr / (warmup + 1) rather than 0 so the first step is not wasted
        start = hp.learning_rate / (hp.warmup_steps + 1)
        sched = paddle.optimizer.lr.LinearWarmup(sched, hp.warmup_steps, start, hp.learning_rate)
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, paddle.nn.Layer) else set()
    groups: Any = params
    if hp.head_lr_mult != 1.0 and head_ids:
        body = [p for p in params if id(p) not in head_ids]
        head_params = [p for p in params if id(p) in head_ids]
        groups = ([{"params": body}] if body else []) + [{"params": head_params, "learning_rate": hp.head_lr_mult}]
    opt = paddle.optimizer.AdamW(
        learning_rate=sched,
        parameters=groups,
        weight_decay=hp.weight_decay,
        apply_decay_param_fun=lambda name: name in decay_names,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(hp.grad_clip_norm),
    )
    return opt, sched


def set_train_mode(model, freeze_bn: bool, freeze: str = "none") -> None:
    """``model.train()``, then BatchNorm layers back to eval mode if ``freeze_bn`` and the layers
    frozen by ``freeze`` (``continual.frozen_layers``) wholly to eval mode."""
    from .arch import batchnorm_layers
    from .continual import frozen_layers

    model.train()
    if freeze_bn:
        for bn in batchnorm_layers(model):
            bn.eval()
    if hasattr(model, "backbone"):
        for layer in frozen_layers(model, freeze):
            layer.eval()


def ctc_loss_from_logits(logits, labels: Sequence[Sequence[int]]):
    """Mean CTC loss (Graves et al. 2006; blank 0, PaddleOCR ``CTCLoss``: per-sample loss, then
    the batch mean) of pre-softmax ``logits`` float32 ``[N, T, C]`` (paddle Tensor) against integer
    ``labels``. Returns a scalar paddle Tensor."""
    import paddle
    import paddle.nn.functional as F

    n, t = logits.shape[0], logits.shape[1]
    max_len = max(len(lab) for lab in labels)
    padded = np.zeros((n, max_len), dtype=np.int32)
    for i, lab in enumerate(labels):
        padded[i, : len(lab)] = lab
    loss = F.ctc_loss(
        logits.transpose([1, 0, 2]),
        paddle.to_tensor(padded),
        paddle.full([n], t, dtype="int64"),
        paddle.to_tensor(np.array([len(lab) for lab in labels], dtype=np.int64)),
        blank=0,
        reduction="none",
    )
    return loss.mean()


def ctc_batch_loss(model, x: np.ndarray, labels: Sequence[Sequence[int]]):
    """``ctc_loss_from_logits(model(x), labels)`` for ``x`` float32 ``[N, 3, 48, W]``."""
    import paddle

    return ctc_loss_from_logits(model(paddle.to_tensor(x)), labels)


def make_sampler(data: Sequence[tuple[Sample, list[int]]], hp: Hyperparameters, state: dict[str, Any] | None):
    """The training data order of ``hp.sampler`` (``EpochSampler`` or
    ``continual.BalancedReplaySampler``), resumed from ``state`` (its ``state()``)."""
    from .continual import BalancedReplaySampler

    if hp.sampler == "balanced":
        return BalancedReplaySampler(
            [s.origin for s, _ in data],
            [s.text for s, _ in data],
            hp.seed,
            hp.replay_fraction,
            hp.replay_balance,
            **(state or {}),
        )
    return EpochSampler(len(data), hp.seed, **(state or {}))


BEST_WEIGHTS = "best.pdparams"
"""Early stopping's best evaluated weights, beside the step checkpoints."""


def _save_best(model, ckpt_root: Path | None, memory: dict[str, Any]) -> None:
    import paddle

    if ckpt_root is None:
        memory["weights"] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        return
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".{BEST_WEIGHTS}.tmp"
    paddle.save(model.state_dict(), str(tmp))
    os.replace(tmp, ckpt_root / BEST_WEIGHTS)


def _restore_best(model, ckpt_root: Path | None, memory: dict[str, Any]) -> bool:
    import paddle

    if ckpt_root is None:
        if "weights" not in memory:
            return False
        model.set_state_dict(memory["weights"])
        return True
    path = ckpt_root / BEST_WEIGHTS
    if not path.is_file():
        return False
    model.set_state_dict(paddle.load(str(path)))
    return True


def _same_weights(a, b) -> bool:
    """Whether layers ``a`` and ``b`` have identical parameters and BatchNorm statistics."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


def train_steps(
    model,
    optimizer,
    scheduler,
    data: Sequence[tuple[Sample, list[int]]],
    images: ImageCache,
    hp: Hyperparameters,
    state: dict[str, Any],
    ckpt_root: Path | None,
    *,
    teacher=None,
    old_index: np.ndarray | None = None,
    evaluate_fn: Callable[[Any], dict[str, Any]] | None = None,
    features=None,
) -> dict[str, Any]:
    """Run optimizer steps from ``state["step"]`` to ``hp.max_steps`` (checkpointing every
    ``hp.checkpoint_every`` steps and after the last one when ``ckpt_root`` is given).

    Each step: a batch from ``make_sampler``; loss ``CTC`` on the whole batch plus, when
    ``teacher`` is given and ``hp.distill_alpha > 0``, ``α · continual.distillation_loss`` on its
    replay rows (``origin != "new"``; every row with ``hp.distill_rows == "all"``) against the
    frozen ``teacher`` (the champion, with its own class list; ``old_index`` maps its classes into
    the model's). With ``features`` (a ``continual.FeatureCache``) the frozen layers do not run
    per step: ``stage="body"`` feeds ``model.logits_from_body``, ``stage="neck"`` ``model.head``.
    With a frozen backbone whose weights equal the teacher's, the teacher runs only its neck and
    head on the model's backbone output; when those features come from ONNX Runtime
    (``features.engine``), so do the teacher's soft targets (``continual.TeacherTargets``).

    Raises:
        FloatingPointError: a non-finite loss.
        RuntimeError: ``features`` with a teacher whose backbone differs from the model's.

    Every ``hp.eval_every`` steps ``evaluate_fn(model)`` (→ ``{"line_acc", "char_acc", ...}`` on the
    holdout) drives early stopping (``hp.early_stopping_patience``) and ``hp.target_line_acc``; the
    best evaluated weights are kept (``checkpoints/best.pdparams``, or in memory without
    ``ckpt_root``) and restored at the end when early stopping is on.

    ``state`` carries ``step``, ``samples_seen``, ``sampler``, ``wall_s``, ``cpu_s`` (training
    only), ``eval_cpu_s``, ``last_loss``, ``last_distill`` and ``early_stopping`` (its ``history``:
    one entry per evaluation with the training ``cpu_s`` and ``samples`` spent until then); it is updated in
    place and returned. Everything that decides the next step is in ``state`` or the checkpoint, so
    a resumed run ends with the same weights as an uninterrupted one.
    """
    import paddle

    from ocrloop.textline import make_batch

    from .continual import TeacherTargets, distillation_from_targets, distillation_loss

    sampler = make_sampler(data, hp, state.get("sampler"))
    targets = None  # TeacherTargets, made at the first distillation step when the features allow it
    distill = teacher is not None and hp.distill_alpha > 0
    if teacher is not None:
        teacher.eval()
    share_body = distill and hp.freeze != "none" and _same_weights(model.backbone, teacher.backbone)
    if distill and features is not None and not share_body:
        raise RuntimeError("cached features need a teacher with the model's frozen backbone")
    known = None if old_index is None else set(int(i) for i in old_index)  # the champion's classes
    unread = set(hp.new_chars)  # classes the champion has but does not read (v0: ⌀ ⌭ ⏥ …): no teacher there
    es_on = evaluate_fn is not None and hp.eval_every > 0
    es = state.setdefault("early_stopping", {"best_score": None, "best_step": None, "bad_evals": 0, "history": []})
    es.setdefault("stopped", None)
    memory: dict[str, Any] = {}
    set_train_mode(model, hp.freeze_bn, hp.freeze)
    while state["step"] < hp.max_steps and not es["stopped"]:
        t0, c0 = time.perf_counter(), time.process_time()
        batch = [data[i] for i in sampler.next(hp.batch_size)]
        crops = [images(s.image) for s, _ in batch]
        labels = [lab for _, lab in batch]
        kd_rows = [i for i, (s, lab) in enumerate(batch) if s.origin != "new" or hp.distill_rows == "all"
                   or (hp.distill_rows == "known" and (known is None or known.issuperset(lab))
                       and not unread.intersection(s.text))]
        body = None
        if features is not None:
            feats_np = features.features([s.image for s, _ in batch], crops)
            feats = paddle.to_tensor(feats_np)
            if features.stage == "body":
                body = feats
                logits = model.logits_from_body(body)
            else:
                logits = model.head(feats)
            width = features.width
        else:
            x = make_batch(crops, max_width=hp.max_width)
            if share_body and hp.freeze == "backbone":
                body = model.body_features(paddle.to_tensor(x))
                logits = model.logits_from_body(body)
            else:
                logits = model(paddle.to_tensor(x))
            width = x.shape[3]
        loss = ctc_loss_from_logits(logits, labels)
        kd_value = None
        if distill and kd_rows:
            rows = paddle.to_tensor(np.array(kd_rows, dtype=np.int64))
            student_rows = paddle.index_select(logits, rows, axis=0)
            if targets is None and features is not None and features.stage == "body" and features.engine == "onnxruntime":
                # cached body features on ONNX Runtime: the teacher's targets come from ONNX Runtime too
                targets = TeacherTargets(teacher, old_index, logits.shape[-1], hp.distill_temperature)
            if targets is not None:  # made only with cached features: feats_np holds this batch's
                p_t, neg_entropy = targets(feats_np[kd_rows])
                kd = distillation_from_targets(student_rows, p_t, neg_entropy, hp.distill_temperature, targets.mask)
            else:
                with paddle.no_grad():
                    if body is not None:  # frozen backbone == the champion's: neck + head only
                        t_logits = teacher.logits_from_body(paddle.index_select(body, rows, axis=0))
                    elif features is not None:  # frozen body and neck == the champion's: only the heads differ
                        t_logits = teacher.head(paddle.index_select(feats, rows, axis=0))
                    else:
                        t_logits = teacher(paddle.to_tensor(x[kd_rows]))
                kd = distillation_loss(student_rows, t_logits, hp.distill_temperature, old_index)
            kd_value = float(kd)
            loss = loss + hp.distill_alpha * kd
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at step {state['step'] + 1}")
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        lr = optimizer.get_lr()
        scheduler.step()
        state["step"] += 1
        state["samples_seen"] += len(batch)
        state["sampler"] = sampler.state()
        state["last_loss"] = value
        state["last_distill"] = kd_value
        state["wall_s"] += time.perf_counter() - t0
        state["cpu_s"] += time.process_time() - c0
        emit("train_loss", value)
        emit("learning_rate", lr)
        if kd_value is not None:
            emit("distill_loss", kd_value)
        log(f"step {state['step']}/{hp.max_steps} loss {value:.4f} lr {lr:.3g} width {width}"
            + (f" kd {kd_value:.4f}" if kd_value is not None else ""))
        if es_on and (state["step"] % hp.eval_every == 0 or state["step"] == hp.max_steps):
            c1 = time.process_time()
            res = evaluate_fn(model)
            set_train_mode(model, hp.freeze_bn, hp.freeze)
            state["eval_cpu_s"] = state.get("eval_cpu_s", 0.0) + time.process_time() - c1
            score = res["line_acc"] + 0.001 * res["char_acc"]
            es["history"].append({"step": state["step"], "line_acc": res["line_acc"], "char_acc": res["char_acc"],
                                  "cpu_s": round(state["cpu_s"], 3), "samples": state["samples_seen"]})
            emit("holdout_line_acc", res["line_acc"])
            if es["best_score"] is None or score > es["best_score"] + hp.early_stopping_min_delta:
                es.update(best_score=score, best_step=state["step"], bad_evals=0)
                if hp.early_stopping_patience:
                    _save_best(model, ckpt_root, memory)
            else:
                es["bad_evals"] += 1
            if hp.target_line_acc and res["line_acc"] >= hp.target_line_acc:
                es["stopped"] = "target_reached"
            elif hp.early_stopping_patience and es["bad_evals"] >= hp.early_stopping_patience:
                es["stopped"] = "patience"
            log(f"holdout line_acc {res['line_acc']:.4f} char_acc {res['char_acc']:.4f} "
                f"(best step {es['best_step']}, stop: {es['stopped']})")
        if ckpt_root is not None and (
            state["step"] % hp.checkpoint_every == 0 or state["step"] == hp.max_steps or es["stopped"]
        ):
            save_checkpoint(ckpt_root, model, optimizer, state)
    if targets is not None:
        state["teacher_targets"] = targets.report
    if hp.early_stopping_patience and es["best_step"] is not None and es["best_step"] != state["step"]:
        if _restore_best(model, ckpt_root, memory):
            log(f"restored the best holdout weights of step {es['best_step']}")
            es["restored_step"] = es["best_step"]
    model.eval()
    return state


def with_char_groups(result: dict[str, Any], new_chars: set[str]) -> dict[str, Any]:
    """``result`` (``evaluate``) plus ``new_char_recall`` / ``old_char_recall``: micro-averaged
    recall (``{"recall", "n"}``, recall ``None`` when no such character occurs) over the characters
    in ``new_chars`` and over all others (``continual.group_recall``)."""
    from .continual import group_recall

    out = dict(result)
    for key, invert in (("new_char_recall", False), ("old_char_recall", True)):
        g = group_recall(result["char_recall"], new_chars, invert=invert)
        out[key] = {"recall": None if g["n"] == 0 else g["recall"], "n": g["n"]}
    return out


def _emit_eval(prefix: str, results: dict[str, dict[str, Any]], new_chars: set[str] | frozenset = frozenset()) -> None:
    """METRIC lines per evaluation set: line/char accuracy, normalised edit distance, new/old
    character recall and the recall of each new character present
    (``<set>_recall_u<hex code point>``, e.g. ``validation_recall_u2334`` for ⌴)."""
    for split, res in results.items():
        for key in ("line_acc", "char_acc", "norm_edit_distance"):
            if key in res:
                emit(f"{prefix}{split}_{key}", res[key])
        for key in ("new_char_recall", "old_char_recall"):
            if (res.get(key) or {}).get("recall") is not None:
                emit(f"{prefix}{split}_{key}", res[key]["recall"])
        for ch, r in res.get("char_recall", {}).items():
            if ch in new_chars:
                emit(f"{prefix}{split}_recall_u{ord(ch):04x}", r["recall"])


def gate_record(metrics: dict[str, Any], gate_config: dict[str, Any]) -> dict[str, Any]:
    """The promotion gate (``ocrloop.gate.decide``) applied by the job to its own metrics, for the
    model card: the decision, every class regression (not only the named ones) and the thresholds.
    Without both evaluation sets the gate cannot decide: ``passed`` False with that reason."""
    from ocrloop import gate
    from ocrloop.config import LoopConfig

    config = LoopConfig.from_mapping(gate_config)
    thresholds = {k: v for k, v in config.to_dict().items() if k.startswith("gate_")}
    try:
        decision = gate.decide(metrics, config)
    except KeyError as exc:
        return {"passed": False, "reasons": [f"gate not applicable: metrics lack {exc}"], "config": thresholds}
    return {
        **decision.to_json(),
        "all_regressions": gate.class_regressions(metrics["champion"], metrics["candidate"], config),
        "config": thresholds,
    }


def run_job(paths: JobPaths) -> dict[str, Any]:
    """The whole job (see module doc). Returns the metrics dict written to ``metrics.json``.

    Raises:
        InputError: bad input; RuntimeError / FloatingPointError: export check or training failure.
    """
    inputs = read_inputs(paths)
    hp = inputs.hp
    threads = training_threads()
    log(f"hyperparameters {dataclasses.asdict(hp)}")
    log(f"train {len(inputs.train)} lines; " + ", ".join(f"{k} {len(v)}" for k, v in inputs.eval_sets.items()))

    log(f"loading paddle ({threads} CPU threads)")
    import paddle

    paddle.base.core.set_num_threads(threads)  # CPU math library threads (no public API in Paddle 3.x)

    from .base import BASE_MODEL_NAME
    from .continual import FeatureCache, apply_freeze, extend_classes, grow_head, new_characters
    from .export import export_artifact, load_artifact, paddle_probs, write_json

    paddle.seed(hp.seed)
    images = ImageCache()
    teacher = None
    # Champion evaluation, cached beside the checkpoints so a resume skips it.
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    champion_cache = paths.checkpoints / "champion_eval.json"
    checkpoints = _checkpoint_dirs(paths.checkpoints)
    with tempfile.TemporaryDirectory(prefix="ocrloop-champion-") as scratch:
        champion_dir = locate_champion(paths.channel("model"), Path(scratch))
        model, classes = load_artifact(champion_dir)
        if hp.distill_alpha > 0:
            teacher, _ = load_artifact(champion_dir)  # frozen copy of the champion
            for p in teacher.parameters():
                p.stop_gradient = True
        champion_card_path = champion_dir / "model_card.json"
        champion_card = json.loads(champion_card_path.read_text()) if champion_card_path.is_file() else {}
        champion_det = None
        if (champion_dir / "det" / "model.onnx").is_file():  # a det-fine-tuned champion
            champion_det = paths.checkpoints / "champion_det"
            if not champion_det.is_dir():
                shutil.copytree(champion_dir / "det", champion_det)
        log(f"champion {champion_card.get('model_version', '?')} loaded ({len(classes)} classes)")
        if champion_cache.is_file():
            champion_eval = json.loads(champion_cache.read_text())
        else:
            try:
                champion_eval = evaluate_onnx(champion_dir / "model.onnx", inputs.eval_sets, classes, images,
                                              hp.eval_batch_size)
            except ValueError as exc:
                raise InputError(f"champion: {exc}") from exc
            write_json(champion_cache, champion_eval)
    log("champion evaluated")
    champion_classes = list(classes)

    # Dictionary extension: characters of the training labels the champion cannot output.
    added = new_characters([s.text for s in inputs.train], classes) if hp.extend_dict else []
    old_index = None
    if added:
        classes = extend_classes(classes, added)
        old_index = grow_head(model, len(classes))
        log(f"dict extended by {len(added)} characters {''.join(added)!r}: {len(champion_classes)} -> {len(classes)} classes")
    emit("added_chars", len(added))
    n_frozen = apply_freeze(model, hp.freeze)
    if n_frozen:
        log(f"froze {hp.freeze} ({n_frozen} parameter tensors)")

    t_min = time_steps(min(320, hp.max_width))
    data, skipped = encode_samples(inputs.train, classes, t_min)
    emit("skipped_samples", skipped["total"])
    if skipped["total"]:
        log(f"skipped training samples: {skipped}")
    if not data:
        raise InputError(f"no trainable samples left after skipping {skipped}")
    new_set = set(added) | set(hp.new_chars)
    champion_eval = {name: with_char_groups(res, new_set) for name, res in champion_eval.items()}
    _emit_eval("champion_", champion_eval, new_set)

    evaluate_fn = None
    validation = inputs.eval_sets.get("validation")
    if hp.eval_every and validation:
        holdout = list(validation)
        if hp.eval_max_lines and len(holdout) > hp.eval_max_lines:
            pick = np.random.default_rng([hp.seed, 31]).permutation(len(holdout))[: hp.eval_max_lines]
            holdout = [holdout[i] for i in sorted(pick)]

        def evaluate_fn(m):
            return evaluate(lambda x: paddle_probs(m, x), holdout, classes, images, hp.eval_batch_size)

    features = None
    if hp.freeze != "none" and hp.max_width <= 320:  # frozen layers in eval mode: their output per crop is fixed
        engine = hp.frozen_engine
        if engine == "auto":
            engine = "onnxruntime" if paddle.device.get_device().startswith("cpu") else "paddle"
        features = FeatureCache(model, hp.max_width, stage="neck" if hp.freeze == "backbone_neck" else "body",
                                engine=engine)

    optimizer, scheduler = make_optimizer(model, hp)
    state: dict[str, Any] = {"step": 0, "samples_seen": 0, "wall_s": 0.0, "cpu_s": 0.0, "last_loss": None,
                             "num_classes": len(classes)}
    resumed_from = 0
    if checkpoints:
        state = load_checkpoint(checkpoints[-1], model, optimizer)
        if state.get("num_classes", len(classes)) != len(classes):
            raise RuntimeError(f"checkpoint has {state['num_classes']} classes, this job {len(classes)}")
        resumed_from = state["step"]
        # the schedule is a function of (hyperparameters, step): recompute it rather than trusting
        # the saved scheduler position (closed form for the cosine part)
        scheduler.step(resumed_from)
        log(f"resumed from checkpoint {checkpoints[-1].name}")
    emit("resumed_from_step", resumed_from)
    state = train_steps(model, optimizer, scheduler, data, images, hp, state, paths.checkpoints, teacher=teacher,
                        old_index=old_index, evaluate_fn=evaluate_fn, features=features)
    teacher = None
    if state["last_loss"] is not None:
        emit("final_loss", state["last_loss"])
    es = state.get("early_stopping") or {}
    if es.get("history"):
        emit("stopped_at_step", state["step"])
        emit("best_holdout_step", es["best_step"])

    check_samples = (inputs.eval_sets.get("validation") or inputs.train)[:8]
    check_images = [images(s.image) for s in check_samples]
    train_summary = {
        "steps": state["step"],
        "batch_size": hp.batch_size,
        "samples_seen": state["samples_seen"],
        "wall_s": round(state["wall_s"], 3),
        "cpu_s": round(state["cpu_s"], 3),
        "final_loss": state["last_loss"],
        "skipped_samples": skipped["total"],
        "skipped": skipped,
        "trainable_samples": len(data),
        "resumed_from_step": resumed_from,
        "origins": dict(Counter(s.origin for s, _ in data)),
        "eval_cpu_s": round(state.get("eval_cpu_s", 0.0), 3),
        "cpu_threads": threads,
        "early_stopping": es or None,
        "last_distill_loss": state.get("last_distill"),
        "frozen": hp.freeze,
        "frozen_features": None if features is None else features.report,
        "teacher_targets": state.get("teacher_targets"),
        "feature_cache_entries": len(features) if features is not None else 0,
    }
    chars_summary = {
        "added": added,
        "new": sorted(new_set),
        "num_classes_champion": len(champion_classes),
        "num_classes": len(classes),
    }
    card = {
        "model_version": hp.model_version,
        "base_model": champion_card.get("base_model", BASE_MODEL_NAME),
        "parent_version": hp.parent_version or champion_card.get("model_version"),
        "dataset_versions": hp.dataset_versions,
        "hyperparameters": dataclasses.asdict(hp),
        "training_job": os.environ.get("TRAINING_JOB_NAME"),
        "input_data_config": inputs.inputdataconfig,
        "num_classes": len(classes),
        "chars": chars_summary,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "train": train_summary,
    }
    # The artifact first (it runs the Paddle-vs-ONNX export check), then the ONNX evaluation.
    paths.model.mkdir(parents=True, exist_ok=True)
    log("exporting")
    export_artifact(model, classes, paths.model, model_card=card, metrics={}, check_images=check_images)
    log("exported; evaluating the candidate ONNX")
    candidate_eval = {
        name: with_char_groups(res, new_set)
        for name, res in evaluate_onnx(paths.model / "model.onnx", inputs.eval_sets, classes, images,
                                       hp.eval_batch_size).items()
    }
    _emit_eval("", candidate_eval, new_set)
    det = _det_phase(paths, hp, champion_det, images)
    export_check = json.loads((paths.model / "model_card.json").read_text(encoding="utf-8"))["export_check"]
    emit("paddle_onnx_max_abs_diff", export_check["max_abs_diff"])
    metrics = {
        "champion": champion_eval,
        "candidate": candidate_eval,
        "train": train_summary,
        "export": {
            "paddle_onnx_max_abs_diff": export_check["max_abs_diff"],
            "decoded_identical": export_check["decoded_identical"],
            "n_lines": export_check["n_lines"],
        },
        "engines": {"champion": "onnxruntime", "candidate": "onnxruntime"},
        "model_version": hp.model_version,
        "chars": chars_summary,
        "det": {k: v for k, v in det.items() if k not in ("champion", "candidate")},
    }
    if det["trained"]:
        metrics["champion"]["det"] = det["champion"]
        metrics["candidate"]["det"] = det["candidate"]
    metrics["gate"] = gate_record(metrics, hp.gate_config)
    emit("gate_passed", float(metrics["gate"]["passed"]))
    for reason in metrics["gate"]["reasons"]:
        log(f"gate: {reason}")
    card["eval"] = {"champion": metrics["champion"], "candidate": metrics["candidate"]}
    card["det"] = metrics["det"]
    card["gate"] = metrics["gate"]
    card["export_check"] = export_check
    write_json(paths.model / "metrics.json", metrics)
    write_json(paths.model / "model_card.json", card)
    (paths.output / "data").mkdir(parents=True, exist_ok=True)
    write_json(paths.output / "data" / "metrics.json", metrics)
    return metrics


def _det_phase(paths: JobPaths, hp: Hyperparameters, champion_det: Path | None, images: ImageCache) -> dict[str, Any]:
    """``det_train.run_det_phase`` with the job's channels and det hyperparameters; bad det input
    becomes ``InputError``."""
    from .det_train import DET_TRAIN_CHANNEL, DET_VALIDATION_CHANNEL, DetInputError, DetTrainConfig, run_det_phase

    cfg = DetTrainConfig(steps=hp.det_steps, batch_size=hp.det_batch_size, crop_px=hp.det_crop_px,
                         learning_rate=hp.det_learning_rate, warmup_steps=min(hp.det_warmup_steps, max(0, hp.det_steps - 1)),
                         freeze_bn=hp.det_freeze_bn, seed=hp.seed, label_pad=hp.det_label_pad)
    channel = {n: paths.channel(n) if paths.channel(n).is_dir() else None for n in (DET_TRAIN_CHANNEL, DET_VALIDATION_CHANNEL)}
    try:
        return run_det_phase(train_dir=channel[DET_TRAIN_CHANNEL], validation_dir=channel[DET_VALIDATION_CHANNEL],
                             champion_det=champion_det, candidate_dir=paths.model, cfg=cfg, load=images, log=log, emit=emit,
                             gate_config=hp.gate_config)
    except DetInputError as exc:
        raise InputError(str(exc)) from exc


def write_failure(paths: JobPaths, exc: BaseException) -> None:
    """Write ``output/failure``: first line ``Type: message`` (SageMaker shows the start of this
    file as ``FailureReason``), then the traceback."""
    paths.output.mkdir(parents=True, exist_ok=True)
    text = f"{type(exc).__name__}: {exc}\n\n" + "".join(traceback.format_exception(exc))
    (paths.output / "failure").write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Container entrypoint: ``train.py [train]``. Returns the process exit code (0 ok, 1 failed,
    2 bad usage); on failure ``output/failure`` holds the reason."""
    argv = list(sys.argv[1:] if argv is None else argv)
    paths = JobPaths(Path(os.environ.get("OCRLOOP_ML_ROOT", DEFAULT_ML_ROOT)))
    if argv not in ([], ["train"]):
        write_failure(paths, InputError(f"unsupported command {argv!r}: this image only trains"))
        print(f"usage: train.py [train] (got {argv!r})", file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        run_job(paths)
        log(f"done in {time.perf_counter() - t0:.1f} s")
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach output/failure
        write_failure(paths, exc)
        print(f"training failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1
