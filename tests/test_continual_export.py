"""A short real fine-tune through the training entrypoint that teaches v0 new drawing symbols
(dictionary extension, head-only training on a frozen body, replay), then proof that every export
reads them: ONNX Runtime on ``model.onnx``, RapidOCR configured with the model and its dict,
Paddle Inference on ``inference.json`` with the ``inference.yml`` dict, and stock ``paddleocr`` 3.x
loading the folder with ``model_dir``."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest_model import base_model_dir, paddle_inference_probs, write_channel  # noqa: F401  (fixture)

# v0's dict lacks ⌴ ⌵ ⌖ ◎ ⌒ entirely.
ADDED = ["⌒", "⌖", "⌴", "⌵", "◎"]
HP = {
    "max_steps": "60",
    "batch_size": "8",
    "learning_rate": "5e-5",
    "head_lr_mult": "100",
    "warmup_steps": "3",
    "freeze": "backbone_neck",
    "sampler": "balanced",
    "replay_fraction": "0.25",
    "seed": "3",
    "checkpoint_every": "60",
    "eval_batch_size": "16",
    "model_version": "v1-symbols",
    "gate_config": '{"gate_max_old_drop": 0.0}',
}


def _write(channel_dir, items):
    """A channel from ``(BGR image, text, origin)`` items: ``images/NNNN.png`` + ``manifest.jsonl``."""
    import cv2

    (channel_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, text, origin) in enumerate(items):
        rel = f"images/{i:04d}.png"
        assert cv2.imwrite(str(channel_dir / rel), image)
        rows.append({"image": rel, "text": text, "origin": origin})
    (channel_dir / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")


TRAIN_TEXTS = ADDED + ["⌴⌀11 ↧6", "⌵⌀12×90°", "⌖ ⌀0.1 A B", "◎ ⌀0.02 A", "⌒ 0.2 A", "⌴⌀20 ↧8.5", "⌵⌀9 X 90°",
                       "⌖ ⌀0.05 C", "◎ ⌀0.1 B", "⌒ 0.05", "⌀6.6 ⌴⌀11 ↧6.5", "⌖ 0.3 A B C", "⌵⌀15.3x82°",
                       "◎ ⌀0.04 D", "⌒ 0.1 B A", "⌴⌀14 ↧9"]
TEST_TEXTS = ["⌴⌀16 ↧7", "⌵⌀10×90°", "⌖ ⌀0.2 A", "◎ ⌀0.05 B", "⌒ 0.3 C", "⌴⌀8 ↧4.5", "⌖ ⌀0.08 B C", "⌵⌀18 X 90°"]
REPLAY_TEXTS = ["技术要求", "SCALE 1:2", "材料 Q235", "REV C", "未注圆角R2", "SHEET 2 OF 4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_model_dir):
    """Run the job once (in-process ``main``, as the container entrypoint does)."""
    from ocrloop.model.lines import render_line
    from ocrloop.model.symbols import render_symbol_lines
    from ocrloop.model.train import main

    assert not set(TRAIN_TEXTS) & set(TEST_TEXTS)  # held out by string
    root = tmp_path_factory.mktemp("opt_ml_symbols")
    data = root / "input" / "data"
    train = render_symbol_lines(TRAIN_TEXTS, seed=11, copies=3, frame_prob=0.0)
    test = render_symbol_lines(TEST_TEXTS, seed=12, copies=1, frame_prob=0.0)
    _write(data / "train", [(ln.image, ln.text, "new") for ln in train]
           + [(render_line(t), t, "base") for t in REPLAY_TEXTS])
    _write(data / "validation", [(ln.image, ln.text, "new") for ln in test])
    write_channel(data / "olddomain", ["技术要求", "SHEET 2 OF 4", "未注圆角R2", "REV C"])
    data.joinpath("model").symlink_to(base_model_dir, target_is_directory=True)
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(HP))
    mp = pytest.MonkeyPatch()
    mp.setenv("OCRLOOP_ML_ROOT", str(root))
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["train"])
    finally:
        mp.undo()
    failure = root / "output" / "failure"
    assert rc == 0, buf.getvalue()[-3000:] + (failure.read_text()[:3000] if failure.exists() else "")
    return root, test, buf.getvalue()


def test_fine_tune_learns_new_symbols_and_records_them(trained):
    root, _, out = trained
    metrics = json.loads((root / "model" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["chars"]["added"] == ADDED
    assert metrics["chars"]["num_classes"] == metrics["chars"]["num_classes_champion"] + 5
    assert metrics["train"]["frozen"] == "backbone_neck" and metrics["train"]["feature_cache_entries"] > 0
    cand, champ = metrics["candidate"]["validation"], metrics["champion"]["validation"]
    assert champ["line_acc"] == 0.0 and champ["new_char_recall"]["recall"] < 0.3
    assert cand["new_char_recall"]["recall"] >= 0.9, cand["char_recall"]
    assert cand["line_acc"] >= 0.6, cand  # v0: 0 (measured 0.75: "×" read as "x" and a lost digit)
    # old characters still read: no old-domain line lost, every old character still recalled
    assert metrics["candidate"]["olddomain"]["line_acc"] >= metrics["champion"]["olddomain"]["line_acc"]
    assert metrics["candidate"]["olddomain"]["old_char_recall"]["recall"] == 1.0
    # METRIC lines for SageMaker: per new character, new/old recall, normalised edit distance
    assert re.search(r"^METRIC validation_recall_u2334=[0-9.]+$", out, re.M)
    assert re.search(r"^METRIC validation_new_char_recall=[0-9.]+$", out, re.M)
    assert re.search(r"^METRIC olddomain_norm_edit_distance=[0-9.]+$", out, re.M)
    card = json.loads((root / "model" / "model_card.json").read_text(encoding="utf-8"))
    assert card["gate"]["config"]["gate_max_old_drop"] == 0.0 and card["gate"]["reasons"]
    assert card["gate"]["passed"] == metrics["gate"]["passed"]
    assert (root / "model" / "dict.txt").read_text(encoding="utf-8").splitlines()[-5:] == ADDED


def test_onnx_runtime_and_rapidocr_read_the_new_symbols(trained):
    from rapidocr import RapidOCR

    from ocrloop.model.export import ort_session
    from ocrloop.textline import ctc_greedy_decode, load_dict, make_batch

    root, test, _ = trained
    model_dir = root / "model"
    classes = load_dict(model_dir / "dict.txt")
    sess = ort_session(model_dir / "model.onnx")
    probs = sess.run(None, {sess.get_inputs()[0].name: make_batch([ln.image for ln in test])})[0]
    ort_texts = [t for t, _ in ctc_greedy_decode(probs, classes)]
    engine = RapidOCR(params={"Rec.model_path": str(model_dir / "model.onnx"),
                              "Rec.rec_keys_path": str(model_dir / "dict.txt"),
                              "Global.use_det": False, "Global.use_cls": False, "Global.log_level": "error",
                              "EngineConfig.onnxruntime.intra_op_num_threads": 1})
    rapid_texts = [engine(ln.image, use_det=False, use_cls=False, use_rec=True).txts[0] for ln in test]
    labels = [ln.text for ln in test]
    for texts in (ort_texts, rapid_texts):
        _assert_reads_new_symbols(texts, labels)


def test_paddle_inference_model_reads_the_new_symbols(trained):
    from paddlex.inference.models.text_recognition.processors import CTCLabelDecode
    from paddlex.inference.models.utils.model_config import load_model_config

    from ocrloop.textline import make_batch

    root, test, _ = trained
    model_dir = root / "model"
    cfg = load_model_config(model_dir)
    decode = CTCLabelDecode(character_list=cfg["PostProcess"]["character_dict"])
    assert set(ADDED) <= set(decode.character)
    probs = paddle_inference_probs(model_dir, make_batch([ln.image for ln in test]))
    texts, _ = decode([probs])
    assert np.isfinite(probs).all()
    _assert_reads_new_symbols(texts, [ln.text for ln in test])


STOCK_PADDLEOCR = r"""
import importlib.metadata, json, sys

import cv2

from ocrloop.paddlex_compat import accept_installed_opencv

accept_installed_opencv()  # before paddlex is imported: it caches the answer
from paddleocr import TextRecognition

rec = TextRecognition(model_name="PP-OCRv5_mobile_rec", model_dir=sys.argv[1], device="cpu", enable_mkldnn=False)
images = [cv2.imread(p) for p in sys.argv[2:]]
print(json.dumps({"paddleocr": importlib.metadata.version("paddleocr"),
                  "texts": [r["rec_text"] for r in rec.predict(images, batch_size=8)]}, ensure_ascii=False))
"""


def test_stock_paddleocr_loads_the_export_with_model_dir_and_reads_the_new_symbols(trained, tmp_path):
    """Stock ``paddleocr`` 3.x (``TextRecognition(model_dir=...)``: PaddleX's predictor with the
    artifact's ``inference.yml`` for pre-processing and the character dict) reads the new symbols.

    Run in a fresh interpreter, so ``ocrloop.paddlex_compat.accept_installed_opencv`` runs before
    paddlex is imported (we install ``opencv-python-headless``, paddlex checks for
    ``opencv-contrib-python`` by distribution name)."""
    import subprocess
    import sys

    import cv2

    root, test, _ = trained
    paths = []
    for i, ln in enumerate(test):
        paths.append(str(tmp_path / f"{i:03d}.png"))
        assert cv2.imwrite(paths[-1], ln.image)
    proc = subprocess.run([sys.executable, "-c", STOCK_PADDLEOCR, str(root / "model"), *paths],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["paddleocr"].startswith("3.")
    _assert_reads_new_symbols(out["texts"], [ln.text for ln in test])


def _assert_reads_new_symbols(texts, labels):
    """Held-out lines: ≥ 60 % read exactly (v0: 0 %), the five new symbols recalled ≥ 90 % in all
    and each at least half of its occurrences (Levenshtein-aligned, ``train.char_recall``)."""
    from ocrloop.model.train import char_recall

    assert sum(t == label for t, label in zip(texts, labels)) >= 0.6 * len(labels), list(zip(labels, texts))
    recall = char_recall(list(texts), labels)
    hits = sum(recall[c]["recall"] * recall[c]["n"] for c in ADDED)
    assert hits >= 0.9 * sum(recall[c]["n"] for c in ADDED), {c: recall[c] for c in ADDED}
    assert all(recall[c]["recall"] >= 0.5 for c in ADDED), {c: recall[c] for c in ADDED}
