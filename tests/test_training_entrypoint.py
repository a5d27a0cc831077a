"""training_image/train.py under the SageMaker container contract, run as a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest_model import base_model_dir, make_job_root, write_channel  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "training_image" / "train.py"
METRIC = re.compile(r"^METRIC ([a-z_]+)=([-+0-9.eE]+|nan|inf)$", re.M)

HP = {
    "max_steps": "2",
    "batch_size": "4",
    "learning_rate": "3e-5",
    "warmup_steps": "1",
    "seed": "11",
    "freeze_bn": "true",
    "checkpoint_every": "1",
    "eval_batch_size": "8",
    "max_width": "320",
    "model_version": "v1-test",
    "parent_version": "v0-ppocrv5-mobile-rec",
    "dataset_versions": '["ds-0001"]',
}


def run_entrypoint(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OCRLOOP_ML_ROOT=str(root), PYTHONPATH=str(REPO))
    env.pop("OCRLOOP_TRAIN_THREADS", None)  # the job's default: every usable CPU
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metrics_of(stdout: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, value in METRIC.findall(stdout):
        out.setdefault(name, []).append(float(value))
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, base_model_dir):
    root = make_job_root(tmp_path_factory.mktemp("opt_ml"), base_model_dir, HP)
    proc = run_entrypoint(root, "train")
    return root, proc


def test_entrypoint_writes_model_metrics_and_metric_lines(first_run):
    from ocrloop.model.export import ARTIFACT_FILES, is_complete

    root, proc = first_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (root / "output" / "failure").exists()
    model_dir = root / "model"
    assert is_complete(model_dir) and {p.name for p in model_dir.iterdir()} == set(ARTIFACT_FILES)

    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    assert json.loads((root / "output" / "data" / "metrics.json").read_text(encoding="utf-8")) == metrics
    for who in ("champion", "candidate"):
        assert metrics[who]["validation"]["n"] == 4 and metrics[who]["olddomain"]["n"] == 4
        for split in ("validation", "olddomain"):
            assert 0.0 <= metrics[who][split]["line_acc"] <= 1.0 and 0.0 <= metrics[who][split]["char_acc"] <= 1.0
    train = metrics["train"]
    assert (train["steps"], train["batch_size"], train["samples_seen"], train["skipped_samples"]) == (2, 4, 8, 0)
    assert train["wall_s"] > 0 and train["cpu_s"] > 0 and train["final_loss"] > 0
    assert train["cpu_threads"] == len(os.sched_getaffinity(0))  # Paddle's CPU kernels use every usable CPU
    assert metrics["export"]["paddle_onnx_max_abs_diff"] <= 1e-4
    # the validation lines are full of ⌀: its per-character recall is reported
    assert metrics["champion"]["validation"]["char_recall"]["⌀"]["n"] == 3
    # both models are scored as served (model.onnx under ONNX Runtime); the champion's served model
    # reads these lines as its Paddle weights do
    assert metrics["engines"] == {"champion": "onnxruntime", "candidate": "onnxruntime"}
    from ocrloop.model.export import load_artifact, paddle_probs
    from ocrloop.model.train import ImageCache, JobPaths, evaluate, read_inputs, with_char_groups

    model, classes = load_artifact(root / "input" / "data" / "model")
    new_chars = set(metrics["chars"]["new"])
    for split, samples in read_inputs(JobPaths(root)).eval_sets.items():
        by_paddle = evaluate(lambda x: paddle_probs(model, x), samples, classes, ImageCache(), 8)
        assert with_char_groups(by_paddle, new_chars) == metrics["champion"][split]

    scraped = metrics_of(proc.stdout)
    # SageMaker MetricDefinitions-style regexes find them
    assert float(re.search(r"validation_line_acc=([0-9.]+)", proc.stdout).group(1)) == pytest.approx(
        metrics["candidate"]["validation"]["line_acc"], abs=1e-5
    )
    assert len(scraped["train_loss"]) == 2
    assert scraped["champion_olddomain_char_acc"][0] == pytest.approx(
        metrics["champion"]["olddomain"]["char_acc"], abs=1e-5
    )
    assert scraped["olddomain_line_acc"][0] == pytest.approx(metrics["candidate"]["olddomain"]["line_acc"], abs=1e-5)
    assert scraped["paddle_onnx_max_abs_diff"][0] <= 1e-4

    card = json.loads((model_dir / "model_card.json").read_text(encoding="utf-8"))
    assert card["model_version"] == "v1-test" and card["parent_version"] == "v0-ppocrv5-mobile-rec"
    assert card["dataset_versions"] == ["ds-0001"] and card["base_model"] == "PP-OCRv5_mobile_rec"
    assert card["hyperparameters"]["learning_rate"] == 3e-5 and card["hyperparameters"]["freeze_bn"] is True
    assert card["eval"]["candidate"] == metrics["candidate"] and card["export_check"]["passed"]
    assert card["input_data_config"]["train"]["ContentType"] == "application/jsonlines"
    assert sorted(p.name for p in (root / "checkpoints").glob("step-*")) == ["step-000001", "step-000002"]


def test_sigkilled_job_restarted_ends_like_the_uninterrupted_run(tmp_path, first_run, base_model_dir):
    """Spot safety, for real: the entrypoint process is SIGKILLed (as a reclaimed spot instance is)
    as soon as its first checkpoint lands, started again on the same /opt/ml tree, resumes from
    step 1 and ends with the weights and metrics of the uninterrupted run (``first_run``, same
    seed, same data)."""
    import signal
    import time

    import numpy as np
    import paddle

    ref_root, ref_proc = first_run
    assert ref_proc.returncode == 0
    root = make_job_root(tmp_path, base_model_dir, HP)
    env = dict(os.environ, OCRLOOP_ML_ROOT=str(root), PYTHONPATH=str(REPO))
    env.pop("OCRLOOP_TRAIN_THREADS", None)  # the job's default: every usable CPU
    proc = subprocess.Popen([sys.executable, str(ENTRYPOINT), "train"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = root / "checkpoints" / "step-000001" / "state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and first.exists()
    assert not (root / "checkpoints" / "step-000002").exists()  # killed mid-run, before step 2
    assert not (root / "model" / "metrics.json").exists()

    again = run_entrypoint(root, "train")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert metrics_of(again.stdout)["resumed_from_step"] == [1.0]
    ours = paddle.load(str(root / "checkpoints" / "step-000002" / "model.pdparams"))
    ref = paddle.load(str(ref_root / "checkpoints" / "step-000002" / "model.pdparams"))
    assert ours.keys() == ref.keys()
    for name in ref:
        np.testing.assert_allclose(ours[name].numpy(), ref[name].numpy(), rtol=1e-5, atol=1e-7, err_msg=name)
    m_ours = json.loads((root / "model" / "metrics.json").read_text(encoding="utf-8"))
    m_ref = json.loads((ref_root / "model" / "metrics.json").read_text(encoding="utf-8"))
    assert m_ours["candidate"] == m_ref["candidate"]
    assert m_ours["train"]["final_loss"] == pytest.approx(m_ref["train"]["final_loss"], rel=1e-5)
    assert (m_ours["train"]["steps"], m_ours["train"]["samples_seen"]) == (2, 8)


def test_resumes_from_the_latest_checkpoint(first_run, monkeypatch, capsys):
    """A restarted job (here: in-process, same ``main`` as the entrypoint, to save a Paddle
    start-up) continues from the newest checkpoint instead of step 0."""
    from ocrloop.model.train import main

    root, proc = first_run
    assert proc.returncode == 0
    hp = dict(HP, max_steps="3")
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hp))
    monkeypatch.setenv("OCRLOOP_ML_ROOT", str(root))
    rc = main(["train"])
    out = capsys.readouterr()
    assert rc == 0, out.out[-3000:] + out.err[-3000:]
    scraped = metrics_of(out.out)
    assert scraped["resumed_from_step"] == [2.0]
    assert len(scraped["train_loss"]) == 1  # only step 3 ran
    # LR of step 3 under max_steps=3: warmup 1 step, then cosine over 2 steps, at its midpoint
    assert scraped["learning_rate"] == [pytest.approx(1.5e-5, rel=1e-4)]
    train = json.loads((root / "model" / "metrics.json").read_text())["train"]
    assert (train["steps"], train["samples_seen"], train["resumed_from_step"]) == (3, 12, 2)
    assert sorted(p.name for p in (root / "checkpoints").glob("step-*")) == ["step-000002", "step-000003"]
    state = json.loads((root / "checkpoints" / "step-000003" / "state.json").read_text())
    assert state["step"] == 3 and state["sampler"] == {"epoch": 1, "pos": 4}


def test_bad_manifest_writes_failure_and_exits_nonzero(tmp_path, base_model_dir):
    root = make_job_root(tmp_path, base_model_dir, HP)
    manifest = root / "input" / "data" / "validation" / "manifest.jsonl"
    manifest.write_text(manifest.read_text() + '{"image": "images/missing.png", "text": "X"}\n')
    proc = run_entrypoint(root)
    assert proc.returncode != 0
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("InputError:") and "missing.png" in failure and "not found" in failure
    assert not (root / "model").exists()


def test_unknown_command_is_refused(tmp_path):
    proc = run_entrypoint(tmp_path, "serve", timeout=60)
    assert proc.returncode == 2
    assert "only trains" in (tmp_path / "output" / "failure").read_text()


def test_champion_from_model_tar_gz(tmp_path):
    from ocrloop.model.train import InputError, locate_champion

    src = tmp_path / "src"
    src.mkdir()
    (src / "rec.pdparams").write_bytes(b"weights")
    (src / "dict.txt").write_text("a\n")
    (src / "model.onnx").write_bytes(b"graph")
    channel = tmp_path / "model"
    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tf:
        for p in src.iterdir():
            tf.add(p, arcname=p.name)
    found = locate_champion(channel, tmp_path / "scratch")
    assert (found / "rec.pdparams").read_bytes() == b"weights"
    assert locate_champion(src, tmp_path / "scratch1") == src
    with pytest.raises(InputError, match="neither rec.pdparams nor model.tar.gz"):
        locate_champion(tmp_path / "src" / "..", tmp_path / "scratch2")
    # the gate scores the champion as served: a folder without its model.onnx is refused
    (src / "model.onnx").unlink()
    with pytest.raises(InputError, match="no model.onnx"):
        locate_champion(src, tmp_path / "scratch3")


def test_manifest_paths_must_stay_inside_the_channel(tmp_path):
    from ocrloop.model.train import InputError, read_manifest

    channel = write_channel(tmp_path / "train", ["M6"])
    assert read_manifest(channel)[0].text == "M6"
    (channel / "manifest.jsonl").write_text('{"image": "../../etc/passwd", "text": "x"}\n')
    with pytest.raises(InputError, match="leaves the channel"):
        read_manifest(channel)
    (channel / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match=":1: invalid JSON"):
        read_manifest(channel)


def test_inputdataconfig_channels_must_exist(tmp_path, base_model_dir):
    from ocrloop.model.train import InputError, JobPaths, read_inputs

    root = make_job_root(tmp_path, base_model_dir, HP)
    assert set(read_inputs(JobPaths(root)).eval_sets) == {"validation", "olddomain"}
    idc = root / "input" / "config" / "inputdataconfig.json"
    idc.write_text(json.dumps({"train": {}, "model": {}, "holdout2": {}}))
    with pytest.raises(InputError, match="holdout2"):
        read_inputs(JobPaths(root))
    idc.write_text(json.dumps({"train": {"TrainingInputMode": "Pipe"}}))
    with pytest.raises(InputError, match="Pipe"):
        read_inputs(JobPaths(root))
