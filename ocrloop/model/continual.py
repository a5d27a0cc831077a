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

from ocrloop.config import FREEZE_CHOICES  # one list for the loop config and the training job

DRAWING_SYMBOLS = "⌀⌴⌵↧⌖⏥⌭⊥∥◎⌒"
"""GD&T and hole-callout symbols (ASME Y14.5 / ISO 1101): diameter, counterbore, countersink,
depth, position, flatness, cylindricity, perpendicularity, parallelism, concentricity, profile of a
line. PP-OCRv5's dict holds ⌀ ↧ ⏥ ⌭ ⊥ ∥ (v0 never outputs most of them); ⌴ ⌵ ⌖ ◎ ⌒ are missing."""

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

    ``engine``: ``"paddle"`` runs the frozen layers in Paddle dygraph; ``"onnxruntime"`` exports
    them once (``paddle.jit.save`` → paddle2onnx, as the model artifact's ONNX) and runs them on
    ONNX Runtime, which needs no autograd and is ≈5.6× cheaper on CPU (PP-LCNetV3 body of a
    ``[16, 3, 48, 320]`` batch: 0.52 vs 2.9 CPU-s, measured on this 2-core machine). The first
    batch is computed both ways and compared: if the export does not reproduce Paddle within
    ``ORT_TOLERANCE`` (relative to the largest activation) the cache falls back to Paddle and says
    why in ``report``. The export's own cost is part of the first call (and of the job's CPU time).

    Raises:
        ValueError: unknown ``stage`` or ``engine``.
    """

    STAGES = ("body", "neck")
    ENGINES = ("paddle", "onnxruntime")
    ORT_TOLERANCE = 1e-3
    """Max abs difference / max abs activation allowed between ONNX Runtime and Paddle. Measured on
    the PP-LCNetV3 body: 6e-6 on random input, 7.5e-5 on real line crops (bench/continual.py jobs);
    an export that maps a layer wrongly differs by 1e-1 or more."""

    def __init__(self, model, width: int, batch_size: int = 16, stage: str = "neck", engine: str = "paddle"):
        if stage not in self.STAGES:
            raise ValueError(f"stage must be one of {self.STAGES}, got {stage!r}")
        if engine not in self.ENGINES:
            raise ValueError(f"engine must be one of {self.ENGINES}, got {engine!r}")
        self.model, self.width, self.batch_size, self.stage, self.engine = model, width, batch_size, stage, engine
        self._cache: dict[Any, np.ndarray] = {}
        self._session = None
        self.report: dict[str, Any] = {"engine": engine, "stage": stage}

    def _layers(self) -> list:
        return [self.model.backbone] + ([self.model.encoder] if self.stage == "neck" else [])

    def _paddle(self, x: np.ndarray) -> np.ndarray:
        import paddle

        layers = self._layers()
        with paddle.no_grad():
            was = [layer.training for layer in layers]
            for layer in layers:
                layer.eval()
            try:
                t = paddle.to_tensor(x)
                return (head_features(self.model, t) if self.stage == "neck" else self.model.body_features(t)).numpy()
            finally:
                for layer, training in zip(layers, was):
                    if training:
                        layer.train()

    def _export(self, x: np.ndarray) -> np.ndarray:
        """Export the frozen stage to ONNX, open an ONNX Runtime session and check it on ``x``
        against Paddle; returns the features of ``x`` from the engine kept (so every feature of
        a run, resumed or not, comes from the same engine)."""
        def rel_diff(out: list, ref: np.ndarray) -> float:
            return float(np.abs(out[0] - ref).max()) / max(float(np.abs(ref).max()), 1e-6)

        self._session, out = _checked_ort_export(
            lambda: _frozen_stage(self.model, self.stage), [None, 3, 48, self.width], x, lambda: self._paddle(x),
            rel_diff, self.ORT_TOLERANCE, self.report, "check_rel_diff", "(relative)")
        if self._session is None:
            self.engine = "paddle"
        self.report["engine"] = self.engine
        return out if self._session is None else out[0]

    def _compute(self, x: np.ndarray) -> np.ndarray:
        if self.engine == "onnxruntime":
            if self._session is None:
                return self._export(x)
            return self._session.run(None, {self._session.get_inputs()[0].name: x})[0]
        return self._paddle(x)

    def features(self, keys: Sequence[Any], images: Sequence[np.ndarray]) -> np.ndarray:
        from ocrloop.textline import resize_norm

        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start : start + self.batch_size]
            out = self._compute(np.stack([resize_norm(images[i], self.width) for i in idx]))
            for j, i in enumerate(idx):
                self._cache[keys[i]] = out[j]
        return np.stack([self._cache[k] for k in keys])

    def __len__(self) -> int:
        return len(self._cache)


def _ort_export(layer, input_shape: list) -> Any:
    """An ONNX Runtime session of ``layer`` (a ``paddle.nn.Layer`` whose ``forward`` takes one
    float32 input of ``input_shape``, ``None`` for dynamic sides): ``paddle.jit.save`` (eval mode;
    every sublayer's train/eval mode is restored afterwards) → paddle2onnx
    (``export.paddle_to_onnx``, as the model artifact's ONNX) in a scratch folder. Raises whatever
    the export raises."""
    import tempfile

    import paddle

    from .export import ort_session, paddle_to_onnx

    modes = [(sub, sub.training) for sub in layer.sublayers(include_self=True)]
    layer.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="ocrloop-ort-") as tmp:
            paddle.jit.save(layer, f"{tmp}/m", input_spec=[paddle.static.InputSpec(input_shape, "float32", "x")])
            paddle_to_onnx(f"{tmp}/m.json", f"{tmp}/m.pdiparams", f"{tmp}/m.onnx", None)
            return ort_session(f"{tmp}/m.onnx")
    finally:
        for sub, training in modes:
            sub.training = training


def _checked_ort_export(build, input_shape: list, x: np.ndarray, reference, diff, tolerance: float,
                        report: dict, diff_key: str, diff_unit: str = "") -> tuple[Any, Any]:
    """Export ``build()`` to ONNX Runtime (``_ort_export``) and check it on ``x`` against Paddle.

    ``reference()`` gives Paddle's result for ``x``; ``diff(outputs, reference)`` the difference
    that must be ≤ ``tolerance``. ``report`` gets ``export_s``, ``diff_key`` (the difference, or
    None) and, when Paddle is kept, ``fallback`` (why). Returns ``(session, session outputs)`` when
    the export reproduces Paddle, else ``(None, Paddle's result)``; never raises for an export
    failure (the caller stays on Paddle)."""
    import time

    t0 = time.perf_counter()
    ref = reference()
    session, out, value = None, None, None
    try:
        session = _ort_export(build(), input_shape)
        out = session.run(None, {session.get_inputs()[0].name: x})
        value = diff(out, ref)
    except Exception as exc:  # noqa: BLE001 - any export failure: stay on Paddle, say why
        session = None
        report["fallback"] = f"export failed: {type(exc).__name__}: {exc}"[:300]
    report.update({"export_s": round(time.perf_counter() - t0, 2), diff_key: value})
    if session is not None and value is not None and value <= tolerance:
        return session, out
    report.setdefault("fallback", f"ONNX Runtime differs from Paddle by {value}" + (f" {diff_unit}" if diff_unit else ""))
    return None, ref


def _frozen_stage(model, stage: str):
    """Export wrapper (built on use: paddle is imported lazily): ``x`` float32 ``[N, 3, 48, W]`` →
    ``body_features`` (``stage="body"``) or ``head_features`` (``"neck"``)."""
    import paddle

    class FrozenStage(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return head_features(self.model, x) if stage == "neck" else self.model.body_features(x)

    return FrozenStage()


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

    Computed in the student's class layout with one fused kernel: the teacher's logits are laid
    into the student's columns (``old_index``; the student's other, new classes get ``-1e4``, i.e.
    probability exactly 0 in float32), the student's new columns are masked by ``-1e4`` (so its
    softmax runs over the old classes only, as in Learning without Forgetting), and
    ``KL = CE(p_t, p_s) − H(p_t)`` with Paddle's soft-label ``cross_entropy``. On ``[16, 40, 18396]``
    this takes 0.23 s forward + backward on this CPU instead of 1.0 s for the gather +
    log-softmax formulation (measured; same value to 1e-6 relative, same gradient to 3e-9). The
    gradient is exact; the value is a difference of two float32 sums, so when the student equals
    the teacher it can read ≈ ±1e-4 instead of 0.

    Args:
        student_logits: float32 ``[N, T, C_new]`` (paddle Tensor, with gradient).
        teacher_logits: float32 ``[N, T, C_old]`` (paddle Tensor or numpy; no gradient flows).
        temperature: ``T > 0``; the ``T²`` factor keeps gradient magnitudes comparable across T.
        old_index: student columns of the teacher's classes (``old_class_index``, distinct, in
            ``[0, C_new)``); ``None`` when the class lists are equal.

    Raises:
        ValueError: non-positive temperature or mismatched shapes.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p_t, neg_entropy, mask = soft_targets(teacher_logits, temperature, old_index, student_logits.shape[-1])
    return distillation_from_targets(student_logits, p_t, neg_entropy, temperature, mask)


def soft_targets(teacher_logits, temperature: float, old_index: np.ndarray | None, n_new: int):
    """The teacher side of ``distillation_loss`` (no gradient): ``(p_t, neg_entropy, mask)`` with
    ``p_t = softmax(teacher / T)`` float32 ``[N, T, C_new]`` in the student's layout (0 on the
    student's new classes), ``neg_entropy = Σ p_t log p_t`` ``[N, T]`` and ``mask`` the float32
    ``[C_new]`` added to the student's logits (0 on old classes, ``-1e4`` on new ones; ``None`` when
    the layouts are equal). ``teacher_logits``: float32 ``[N, T, C_old]`` (Tensor or numpy).

    Raises:
        ValueError: ``old_index`` does not fit ``C_old`` / ``n_new``.
    """
    import paddle
    import paddle.nn.functional as F

    teacher = teacher_logits if isinstance(teacher_logits, paddle.Tensor) else paddle.to_tensor(teacher_logits)
    n_old = teacher.shape[-1]
    index = np.arange(n_old, dtype=np.int64) if old_index is None else np.asarray(old_index, dtype=np.int64)
    if len(index) != n_old or n_new < n_old:
        raise ValueError(f"teacher of {n_old} classes vs student of {n_new} (old_index of {len(index)})")
    with paddle.no_grad():
        t = teacher.detach() / temperature
        mask = None
        if n_new != n_old or not np.array_equal(index, np.arange(n_new)):
            t = _to_layout(t, index, n_new)
            mask = paddle.to_tensor(student_mask(index, n_new))
        p_t = F.softmax(t, axis=-1)
        neg_entropy = (p_t * t).sum(axis=-1) - paddle.logsumexp(t, axis=-1)
    return p_t, neg_entropy, mask


def student_mask(old_index: np.ndarray, n_new: int) -> np.ndarray:
    """float32 ``[n_new]``: 0 on the teacher's classes (``old_index``), ``-1e4`` elsewhere."""
    fill = np.full((n_new,), _MASKED, dtype=np.float32)
    fill[np.asarray(old_index, dtype=np.int64)] = 0.0
    return fill


def distillation_from_targets(student_logits, p_t, neg_entropy, temperature: float, mask=None):
    """The student side of ``distillation_loss``: ``T² · mean(CE(p_t, softmax(student / T + mask))
    + neg_entropy)``, Paddle scalar with gradient to ``student_logits`` float32 ``[N, T, C_new]``;
    ``p_t`` / ``neg_entropy`` / ``mask`` as ``soft_targets`` (or ``TeacherTargets``) give them.

    Raises:
        ValueError: ``p_t``'s shape differs from the student's.
    """
    import paddle
    import paddle.nn.functional as F

    p_t = p_t if isinstance(p_t, paddle.Tensor) else paddle.to_tensor(p_t)
    neg_entropy = neg_entropy if isinstance(neg_entropy, paddle.Tensor) else paddle.to_tensor(neg_entropy)
    if list(student_logits.shape) != list(p_t.shape):
        raise ValueError(f"student {student_logits.shape} vs targets {p_t.shape}")
    s = student_logits / temperature
    if mask is not None:
        s = s + (mask if isinstance(mask, paddle.Tensor) else paddle.to_tensor(mask))
    ce = F.cross_entropy(s, p_t, soft_label=True, reduction="none", axis=-1).squeeze(-1)  # [N, T]
    return (ce + neg_entropy).mean() * (temperature**2)


class TeacherTargets:
    """``soft_targets`` of the frozen champion computed from the frozen backbone's output
    (float32 ``[N, 480, 1, W/8]``, the ``FeatureCache(stage="body")`` features) by ONNX Runtime:
    the champion's neck and head, ``/ T``, the student's class layout, softmax and ``Σ p log p``
    exported once as one graph (``paddle.jit.save`` → paddle2onnx). On this CPU that is ≈0.05 s
    for 12 lines where Paddle's teacher pass and target maths took ≈0.3 s (measured).

    The first call is checked against ``soft_targets`` on Paddle (max abs difference of ``p_t`` ≤
    ``TOLERANCE``); if the export fails or differs, or the class layout is not
    ``old_class_index``'s (the one ``grow_head`` makes), every call uses Paddle, ``report`` says why.
    ``__call__(body)`` → ``(p_t, neg_entropy)`` numpy; ``mask`` is the student mask (or ``None``).
    """

    TOLERANCE = 1e-3
    """Max abs difference of ``p_t`` (and of ``Σ p log p`` / 100) allowed against Paddle: 3.2e-5
    measured on real line crops (bench/continual.py run (c))."""

    def __init__(self, teacher, old_index: np.ndarray | None, n_new: int, temperature: float):
        self.teacher, self.n_new, self.temperature = teacher, n_new, temperature
        n_old = teacher.head.weight.shape[1]
        self.index = np.arange(n_old, dtype=np.int64) if old_index is None else np.asarray(old_index, dtype=np.int64)
        same = n_new == n_old and np.array_equal(self.index, np.arange(n_new))
        self.mask = None if same else student_mask(self.index, n_new)
        self._session = None
        self._checked = False
        self.report: dict[str, Any] = {"engine": "onnxruntime"}

    def _paddle(self, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import paddle

        with paddle.no_grad():
            logits = self.teacher.logits_from_body(paddle.to_tensor(body))
        p_t, neg, _ = soft_targets(logits, self.temperature, self.index, self.n_new)
        return p_t.numpy(), neg.numpy()

    def _export(self, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._checked = True

        def build():
            if not np.array_equal(self.index, old_class_index(len(self.index), self.n_new)):
                raise ValueError("only old_class_index's layout is exported")
            return _teacher_targets_layer(self.teacher, self.index, self.n_new, self.temperature)

        def max_diff(out: list, ref: tuple) -> float:
            return max(float(np.abs(out[0] - ref[0]).max()), float(np.abs(out[1] - ref[1]).max()) / 100.0)

        self._session, out = _checked_ort_export(
            build, [None, body.shape[1], 1, body.shape[3]], body, lambda: self._paddle(body), max_diff,
            self.TOLERANCE, self.report, "check_max_abs_diff")
        if self._session is None:
            self.report["engine"] = "paddle"
            return out
        return out[0], out[1]

    def __call__(self, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        body = np.ascontiguousarray(body, dtype=np.float32)
        if self._session is not None:
            p_t, neg = self._session.run(None, {self._session.get_inputs()[0].name: body})
            return p_t, neg
        if not self._checked:
            return self._export(body)
        return self._paddle(body)


def _teacher_targets_layer(teacher, index: np.ndarray, n_new: int, temperature: float):
    """Export wrapper (built on use): body ``[N, 480, 1, W/8]`` → ``soft_targets``' ``(p_t
    [N, T, C_new], Σ p log p [N, T])`` for ``old_class_index``'s layout."""
    import paddle
    import paddle.nn.functional as F

    grown = n_new != len(index)

    class TeacherTargetsLayer(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.teacher = teacher

        def forward(self, x):
            t = self.teacher.logits_from_body(x) / temperature
            if grown:
                t = _grown_layout(t, len(index), n_new)
            p = F.softmax(t, axis=-1)
            neg = (p * t).sum(axis=-1) - paddle.logsumexp(t, axis=-1)
            return p, neg

    return TeacherTargetsLayer()


_MASKED = -1e4
"""Logit given to classes outside the teacher's list: ``exp(-1e4 - max)`` is 0 in float32."""


def _to_layout(t, index: np.ndarray, n_new: int):
    """Teacher logits ``[N, T, C_old]`` → the student's layout ``[N, T, C_new]``: column ``j`` to
    ``index[j]``, the other columns ``_MASKED``. ``old_class_index``'s layout (a block, then the
    space class last) is two slices and a concat; any other index uses a scatter."""
    import paddle

    n_old = len(index)
    if np.array_equal(index, old_class_index(n_old, n_new)):
        return _grown_layout(t, n_old, n_new)
    shape = list(t.shape[:-1])
    flat = t.reshape([-1, n_old]).transpose([1, 0])  # [C_old, N*T]
    out = paddle.scatter(paddle.full([n_new, flat.shape[1]], _MASKED, dtype=t.dtype), paddle.to_tensor(index), flat)
    return out.transpose([1, 0]).reshape(shape + [n_new])


def _grown_layout(t, n_old: int, n_new: int):
    """``old_class_index``'s layout: ``[blank, *dict, *new (_MASKED), space]``; slices and a concat
    only, so it also runs in an exported graph with a dynamic batch."""
    import paddle

    if n_new == n_old:
        return t
    filler = paddle.zeros_like(t[..., : n_new - n_old]) + _MASKED
    return paddle.concat([t[..., : n_old - 1], filler, t[..., n_old - 1 :]], axis=-1)


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
