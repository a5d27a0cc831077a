"""Continual-learning pieces of the fine-tuning job: dictionary growth, freezing, the
character-balanced replay sampler and knowledge distillation from the frozen champion.

* **Dictionary extension.** PaddleOCR's class list is ``["blank", *dict, " "]``: the CTC blank first
  and the space class last (``CTCLabelDecode(use_space_char=True)`` appends it; RapidOCR does the
  same when it reads the ONNX ``character`` metadata). New characters are therefore inserted after
  the last dict character, *before* the space. Every blank/dict class keeps its index; the space
  class moves from ``C_old - 1`` to ``C_new - 1`` (its head column moves with it). Old columns and
  biases are copied bit for bit, so the logits of every old class are unchanged. A new column
  starts as a copy of the blank's column with its bias lowered by ``NEW_CLASS_MARGIN``: its logit is
  ``z_blank - 10`` at every time step, so it can never win the argmax (the blank beats it) and old
  text decodes exactly as before, while its probability is ``e^-10 · p_blank`` (≈ 0). (A constant
  logit, e.g. weight 0 and the smallest old bias, is not safe: on padding columns every old
  logit can fall below it, measured.) Training then moves the column towards its glyph.
* **Freezing** (``freeze``): ``"none"``, ``"backbone"`` (PP-LCNetV3) or ``"backbone_neck"``
  (PP-LCNetV3 + SVTR neck: only the CTC head trains). Frozen parameters get ``stop_gradient`` and
  no optimizer state; frozen layers run in eval mode. With ``"backbone_neck"`` the neck output of a
  crop does not depend on the weights being trained, so ``FeatureCache`` computes it once per crop.
* **Replay** (Rolnick et al., "Experience Replay for Continual Learning", NeurIPS 2019): each batch
  holds ``round(batch × replay_fraction)`` replay samples, drawn *character-balanced*: a character
  ``c`` is drawn with probability ∝ ``f(c)^q`` (``f(c)``: replay lines containing ``c``; ``q = 1``
  is plain instance sampling, ``q = 0`` uniform over characters, ``q = 0.5`` the square-root
  sampling of Mahajan et al. 2018 / Kang et al., "Decoupling Representation and Classifier for
  Long-Tailed Recognition", ICLR 2020), then a line containing it uniformly. Rare old characters
  keep appearing in every few batches instead of once an epoch.
* **Knowledge distillation** (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
  Network", 2015; as a forgetting penalty: Li & Hoiem, "Learning without Forgetting", ECCV 2016):
  on replay samples, ``T² · KL(softmax(z_teacher / T) ‖ softmax(z_student,old / T))`` per CTC time
  step, where ``z_student,old`` are the student's logits of the champion's classes (new classes are
  left out, as in LwF). The job minimises ``CTC + α · KD``.

Paddle is imported inside the functions that need it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np

DRAWING_SYMBOLS = "⌀⌴⌵↧⌖⏥⌭⊥∥◎⌒"
"""GD&T and hole-callout symbols (ASME Y14.5 / ISO 1101): diameter, counterbore, countersink,
depth, position, flatness, cylindricity, perpendicularity, parallelism, concentricity, profile of a
line. PP-OCRv5's dict holds ⌀ ↧ ⏥ ⌭ ⊥ ∥ (v0 never outputs most of them); ⌴ ⌵ ⌖ ◎ ⌒ are missing."""

FREEZE_CHOICES = ("none", "backbone", "backbone_neck")
NEW_CLASS_MARGIN = 10.0
"""A new class's initial logit is the blank's minus this (see the module doc)."""


# --- dictionary extension ------------------------------------------------------------------------


def new_characters(texts: Sequence[str], classes: Sequence[str]) -> list[str]:
    """Characters of ``texts`` that are not classes of ``classes = ["blank", *dict, " "]``,
    whitespace excluded, sorted by code point (so the result does not depend on manifest order)."""
    known = set(classes[1:])
    return sorted({ch for t in texts for ch in t if not ch.isspace() and ch not in known})


def extend_classes(classes: Sequence[str], added: Sequence[str]) -> list[str]:
    """``["blank", *dict, *added, " "]``.

    Raises:
        ValueError: ``classes`` is not ``["blank", ..., " "]``, or ``added`` repeats a class.
    """
    if len(classes) < 2 or classes[0] != "blank" or classes[-1] != " ":
        raise ValueError("classes must be ['blank', *dict_chars, ' ']")
    if len(set(added)) != len(added) or set(added) & set(classes):
        raise ValueError(f"added characters must be new and distinct: {list(added)!r}")
    return [*classes[:-1], *added, " "]


def old_class_index(n_old: int, n_new: int) -> np.ndarray:
    """Positions in a grown class list (``extend_classes``) of the ``n_old`` original classes:
    ``[0, 1, …, n_old - 2, n_new - 1]`` (blank and dict in place, the space last). int64 ``[n_old]``."""
    if n_new < n_old or n_old < 2:
        raise ValueError(f"cannot map {n_old} classes into {n_new}")
    return np.concatenate([np.arange(n_old - 1), [n_new - 1]]).astype(np.int64)


def grow_head(model, n_new: int) -> np.ndarray:
    """Grow ``model.head`` (``paddle.nn.Linear(hidden, C_old)``, weight ``[hidden, C_old]``) to
    ``n_new`` classes laid out as ``extend_classes`` does, in place.

    Old columns/biases are copied exactly (the space column moves to the end); new columns copy
    the blank's column with bias ``b_blank - NEW_CLASS_MARGIN``. ``model.num_classes`` is updated.

    Returns:
        ``old_class_index(C_old, n_new)``.

    Raises:
        ValueError: ``n_new < C_old``.
    """
    import paddle

    weight = model.head.weight.numpy()
    bias = model.head.bias.numpy()
    hidden, n_old = weight.shape
    index = old_class_index(n_old, n_new)
    if n_new == n_old:
        return index
    new_w = np.repeat(weight[:, :1], n_new, axis=1)
    new_b = np.full((n_new,), bias[0] - NEW_CLASS_MARGIN, dtype=bias.dtype)
    new_w[:, index] = weight
    new_b[index] = bias
    head = paddle.nn.Linear(hidden, n_new)
    head.weight.set_value(new_w)
    head.bias.set_value(new_b)
    model.head = head
    model.num_classes = n_new
    return index


# --- freezing --------------------------------------------------------------------------------------


def frozen_layers(model, freeze: str) -> list:
    """The sublayers that ``freeze`` keeps fixed: ``[]``, ``[backbone]`` or ``[backbone, encoder]``.

    Raises:
        ValueError: unknown ``freeze``.
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    return {"none": [], "backbone": [model.backbone], "backbone_neck": [model.backbone, model.encoder]}[freeze]


def apply_freeze(model, freeze: str) -> int:
    """Set ``stop_gradient`` on every parameter of ``frozen_layers(model, freeze)``; returns how
    many parameters (tensors) were frozen."""
    n = 0
    for layer in frozen_layers(model, freeze):
        for p in layer.parameters():
            p.stop_gradient = True
            n += 1
    return n


def head_features(model, x):
    """The neck output that ``model.head`` reads: float32 ``[N, T, hidden]`` for ``x``
    ``[N, 3, 48, W]`` (paddle Tensor), i.e. ``RecModel.forward`` without the head."""
    import paddle.nn.functional as F

    feat = model.backbone(x)[-1]
    return model._encode(F.avg_pool2d(feat, (3, 2)))


class FeatureCache:
    """Frozen-layer outputs of crops at one fixed batch width: the pooled backbone output
    (``stage="body"``, ``RecModel.body_features``: float32 ``[N, 480, 1, width/8]``) for
    ``freeze="backbone"`` training, or the neck output (``stage="neck"``, ``head_features``:
    float32 ``[N, T, hidden]``) for ``freeze="backbone_neck"``. Frozen layers stay in eval mode,
    so a crop's features never change and each is computed once.

    ``features(keys, images)`` returns the stacked features (numpy); missing entries are computed
    in batches of up to ``batch_size``, every crop resized/padded to exactly ``width`` px
    (``ocrloop.textline.resize_norm``), as training batches are at ``max_width`` ≤ 320.

    Raises:
        ValueError: unknown ``stage``.
    """

    STAGES = ("body", "neck")

    def __init__(self, model, width: int, batch_size: int = 16, stage: str = "neck"):
        if stage not in self.STAGES:
            raise ValueError(f"stage must be one of {self.STAGES}, got {stage!r}")
        self.model, self.width, self.batch_size, self.stage = model, width, batch_size, stage
        self._cache: dict[Any, np.ndarray] = {}

    def features(self, keys: Sequence[Any], images: Sequence[np.ndarray]) -> np.ndarray:
        import paddle

        from ocrloop.textline import resize_norm

        layers = [self.model.backbone] + ([self.model.encoder] if self.stage == "neck" else [])
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start : start + self.batch_size]
            x = paddle.to_tensor(np.stack([resize_norm(images[i], self.width) for i in idx]))
            with paddle.no_grad():
                was = [layer.training for layer in layers]
                for layer in layers:
                    layer.eval()
                try:
                    out = (head_features(self.model, x) if self.stage == "neck" else self.model.body_features(x)).numpy()
                finally:
                    for layer, training in zip(layers, was):
                        if training:
                            layer.train()
            for j, i in enumerate(idx):
                self._cache[keys[i]] = out[j]
        return np.stack([self._cache[k] for k in keys])

    def __len__(self) -> int:
        return len(self._cache)


# --- replay sampler --------------------------------------------------------------------------------


def replay_char_probs(texts: Sequence[str], balance: float) -> tuple[list[str], np.ndarray, dict[str, list[int]]]:
    """Character distribution of the balanced replay draw.

    Args:
        texts: replay line labels.
        balance: exponent ``q`` in ``p(c) ∝ f(c)^q`` (``f(c)``: lines containing ``c``), in [0, 1].

    Returns:
        ``(chars, probs float64 [len(chars)], lines_with {char: [text index, ...]})``; whitespace is
        not a character here.

    Raises:
        ValueError: ``balance`` outside [0, 1].
    """
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"replay balance {balance} outside [0, 1]")
    lines_with: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        for ch in sorted(set(t)):
            if not ch.isspace():
                lines_with[ch].append(i)
    chars = sorted(lines_with)
    if not chars:
        return [], np.zeros(0), {}
    freq = np.array([len(lines_with[c]) for c in chars], dtype=np.float64)
    weights = freq**balance
    return chars, weights / weights.sum(), dict(lines_with)


class BalancedReplaySampler:
    """Mixed batches: new samples in epoch order (``EpochSampler`` over the ``origin == "new"``
    samples) plus ``round(batch × replay_fraction)`` replay samples (every other origin) drawn
    character-balanced (``replay_char_probs``) with replacement.

    The replay draws of the ``k``-th batch use ``np.random.default_rng([seed, 7919, k])``, so the
    whole state is ``{"new": EpochSampler state, "batches": k}`` and a resume continues exactly.
    With no replay samples every slot is new; with no new samples every slot is replay.

    Args:
        origins: per sample, its manifest ``origin``; texts: per sample, its label.
        seed: data-order seed; replay_fraction: in [0, 1]; balance: ``q`` of ``replay_char_probs``.
        new / batches: state to resume from (``state()``).

    Raises:
        ValueError: empty data, or a parameter out of range.
    """

    def __init__(
        self,
        origins: Sequence[str],
        texts: Sequence[str],
        seed: int,
        replay_fraction: float,
        balance: float,
        new: dict[str, int] | None = None,
        batches: int = 0,
    ):
        from .train import EpochSampler

        if not 0.0 <= replay_fraction <= 1.0:
            raise ValueError(f"replay_fraction {replay_fraction} outside [0, 1]")
        if len(origins) != len(texts) or not texts:
            raise ValueError("need one origin per text and at least one sample")
        self.new_idx = [i for i, o in enumerate(origins) if o == "new"]
        self.replay_idx = [i for i, o in enumerate(origins) if o != "new"]
        self.seed, self.replay_fraction, self.batches = seed, replay_fraction, batches
        self._new = EpochSampler(len(self.new_idx), seed, **(new or {})) if self.new_idx else None
        self.chars, self.probs, lines_with = replay_char_probs([texts[i] for i in self.replay_idx], balance)
        self._lines_with = [lines_with[c] for c in self.chars]

    def n_replay(self, batch_size: int) -> int:
        """Replay slots in a batch of ``batch_size``."""
        if not self.replay_idx:
            return 0
        if self._new is None:
            return batch_size
        return min(batch_size - 1, int(math.floor(batch_size * self.replay_fraction + 0.5))) if batch_size > 1 else 0

    def next(self, batch_size: int) -> list[int]:
        """Sample indices of the next batch: new ones first, then replay ones."""
        k = self.n_replay(batch_size)
        out = [self.new_idx[i] for i in self._new.next(batch_size - k)] if k < batch_size else []
        if k:
            rng = np.random.default_rng([self.seed, 7919, self.batches])
            if self.chars:
                for c in rng.choice(len(self.chars), size=k, p=self.probs):
                    lines = self._lines_with[c]
                    out.append(self.replay_idx[lines[int(rng.integers(len(lines)))]])
            else:  # replay lines without any non-space character: uniform
                out.extend(self.replay_idx[int(i)] for i in rng.integers(len(self.replay_idx), size=k))
        self.batches += 1
        return out

    def state(self) -> dict[str, Any]:
        return {"new": self._new.state() if self._new else {}, "batches": self.batches}


def char_coverage(texts: Sequence[str]) -> Counter:
    """Occurrences of each non-space character in ``texts`` (for sampler diagnostics/tests)."""
    return Counter(ch for t in texts for ch in t if not ch.isspace())


# --- knowledge distillation ------------------------------------------------------------------------


def distillation_loss(student_logits, teacher_logits, temperature: float, old_index: np.ndarray | None = None):
    """Hinton et al. (2015) soft-target loss per CTC time step, Paddle scalar:
    ``T² · mean_{n,t} KL(softmax(teacher / T) ‖ softmax(student[..., old_index] / T))``.

    Args:
        student_logits: float32 ``[N, T, C_new]`` (paddle Tensor, with gradient).
        teacher_logits: float32 ``[N, T, C_old]`` (paddle Tensor or numpy; no gradient flows).
        temperature: ``T > 0``; the ``T²`` factor keeps gradient magnitudes comparable across T.
        old_index: student columns of the teacher's classes (``old_class_index``); ``None`` when the
            class lists are equal.

    Raises:
        ValueError: non-positive temperature or mismatched shapes.
    """
    import paddle

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher = teacher_logits if isinstance(teacher_logits, paddle.Tensor) else paddle.to_tensor(teacher_logits)
    teacher = teacher.detach()
    student = student_logits
    if old_index is not None and len(old_index) != student.shape[-1]:
        student = paddle.index_select(student, paddle.to_tensor(old_index), axis=2)
    if list(student.shape) != list(teacher.shape):
        raise ValueError(f"student {student.shape} vs teacher {teacher.shape}")
    log_p_s = _log_softmax(student / temperature)
    log_p_t = _log_softmax(teacher / temperature)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(axis=-1)  # [N, T]
    return kl.mean() * (temperature**2)


def _log_softmax(z):
    """``z - logsumexp(z)`` over the last axis. Paddle 3.3's CPU ``log_softmax`` kernel takes
    ≈4 s forward / 8 s with backward on ``[3, 40, 18385]`` (measured); ``logsumexp`` takes 30 ms
    and is as stable (it subtracts the max)."""
    import paddle

    return z - paddle.logsumexp(z, axis=-1, keepdim=True)


# --- metrics ---------------------------------------------------------------------------------------


def group_recall(char_recall: dict[str, dict[str, float]], chars: set[str] | None, invert: bool = False) -> dict[str, float]:
    """Micro-averaged recall over the characters in ``chars`` (or all others when ``invert``) of a
    ``train.char_recall`` result: ``{"recall": hits / occurrences (nan when none), "n": occurrences}``."""
    hits = total = 0.0
    for ch, r in char_recall.items():
        inside = chars is not None and ch in chars
        if inside != invert:
            hits += r["recall"] * r["n"]
            total += r["n"]
    return {"recall": hits / total if total else float("nan"), "n": int(total)}
