"""Real Paddle fine-tuning steps on rendered lines: CTC loss, AdamW, frozen BatchNorm statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest_model import base_model_dir, write_channel  # noqa: F401  (fixture)

SHORT_LINES = [("⌀12 H7", "new"), ("±0.05", "new"), ("45°", "new"), ("R3", "replay")]


@pytest.fixture(scope="module")
def short_data(tmp_path_factory, base_model_dir):
    from ocrloop.model.train import ImageCache, encode_samples, read_manifest
    from ocrloop.textline import load_dict

    channel = write_channel(tmp_path_factory.mktemp("train"), SHORT_LINES)
    classes = load_dict(base_model_dir / "dict.txt")
    data, skipped = encode_samples(read_manifest(channel), classes, 40)
    assert skipped["total"] == 0 and len(data) == 4
    return data, ImageCache()


def _bn_stats(model):
    from ocrloop.model.arch import batchnorm_layers

    return [(bn._mean.numpy().copy(), bn._variance.numpy().copy()) for bn in batchnorm_layers(model)]


def _batch_loss(model, data, images):
    import paddle

    from ocrloop.model.train import ctc_batch_loss
    from ocrloop.textline import make_batch

    model.eval()
    with paddle.no_grad():
        x = make_batch([images(s.image) for s, _ in data], max_width=320)
        return float(ctc_batch_loss(model, x, [lab for _, lab in data]))


def test_real_training_steps_change_weights_with_frozen_bn(base_model_dir, short_data):
    from ocrloop.model.export import load_artifact
    from ocrloop.model.train import Hyperparameters, make_optimizer, train_steps

    data, images = short_data
    model, _ = load_artifact(base_model_dir)
    hp = Hyperparameters(max_steps=3, batch_size=4, learning_rate=5e-5, warmup_steps=1, freeze_bn=True, seed=3)
    head_before = model.head.weight.numpy().copy()
    conv = model.backbone.encoder.blocks[4].layers[0].pointwise_convolution.conv_symmetric[0].convolution
    conv_before = conv.weight.numpy().copy()
    bn_before = _bn_stats(model)
    loss_before = _batch_loss(model, data, images)

    optimizer, scheduler = make_optimizer(model, hp)
    state = {"step": 0, "samples_seen": 0, "wall_s": 0.0, "cpu_s": 0.0, "last_loss": None}
    state = train_steps(model, optimizer, scheduler, data, images, hp, state, ckpt_root=None)

    assert state["step"] == 3 and state["samples_seen"] == 12
    assert math.isfinite(state["last_loss"]) and state["last_loss"] > 0
    assert state["sampler"] == {"epoch": 2, "pos": 4}
    assert np.abs(model.head.weight.numpy() - head_before).max() > 1e-7
    assert np.abs(conv.weight.numpy() - conv_before).max() > 1e-7
    for (m0, v0), (m1, v1) in zip(bn_before, _bn_stats(model)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    # three steps on these four lines fit them better
    assert _batch_loss(model, data, images) < loss_before


def test_unfrozen_bn_updates_running_statistics(base_model_dir, short_data):
    from ocrloop.model.export import load_artifact
    from ocrloop.model.train import Hyperparameters, make_optimizer, train_steps

    data, images = short_data
    model, _ = load_artifact(base_model_dir)
    hp = Hyperparameters(max_steps=1, batch_size=4, learning_rate=3e-5, warmup_steps=0, freeze_bn=False)
    bn_before = _bn_stats(model)
    optimizer, scheduler = make_optimizer(model, hp)
    state = {"step": 0, "samples_seen": 0, "wall_s": 0.0, "cpu_s": 0.0, "last_loss": None}
    train_steps(model, optimizer, scheduler, data, images, hp, state, ckpt_root=None)
    changed = sum(not np.array_equal(m0, m1) for (m0, _), (m1, _) in zip(bn_before, _bn_stats(model)))
    assert changed > 0


def test_learning_rate_schedule_warmup_then_cosine():
    import paddle

    from ocrloop.model.train import Hyperparameters, make_optimizer

    layer = paddle.nn.Linear(4, 2)
    hp = Hyperparameters(max_steps=10, learning_rate=4e-5, warmup_steps=3)
    optimizer, scheduler = make_optimizer(layer, hp)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.get_lr())
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-5) and lrs[3] == pytest.approx(4e-5)
    assert all(a < b for a, b in zip(lrs[:3], lrs[1:4]))  # warmup rises
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))  # cosine decays
    assert lrs[-1] < 0.1 * 4e-5


def test_encode_samples_skips_and_counts(base_model_dir, tmp_path):
    from ocrloop.model.train import Sample, encode_samples
    from ocrloop.textline import load_dict

    classes = load_dict(base_model_dir / "dict.txt")
    samples = [
        Sample(tmp_path / "a.png", "⌀12 ±0.1"),
        Sample(tmp_path / "b.png", "   "),
        Sample(tmp_path / "c.png", "M6 \U0001d11e"),  # musical G clef: not in the PP-OCRv5 dict
        Sample(tmp_path / "d.png", "A" * 30),  # 30 letters + 29 blanks between repeats > 40 steps
        Sample(tmp_path / "e.png", "AB" * 15),  # 30 steps, no repeats: fits
    ]
    kept, skipped = encode_samples(samples, classes, 40)
    assert [s.text for s, _ in kept] == ["⌀12 ±0.1", "AB" * 15]
    assert kept[0][1] == [classes.index(ch) for ch in "⌀12 ±0.1"]
    assert skipped == {
        "empty": 1,
        "out_of_dict": 1,
        "too_long": 1,
        "total": 3,
        "unknown_chars": {"\U0001d11e": 1},
    }


def test_hyperparameters_from_sagemaker_strings():
    from ocrloop.model.train import Hyperparameters, InputError

    hp = Hyperparameters.from_sagemaker(
        {
            "max_steps": "120",
            "batch_size": "8",
            "learning_rate": "2e-05",
            "freeze_bn": "False",
            "dataset_versions": '["ds-0001", "ds-0002"]',
            "parent_version": '"v3"',  # JSON-encoded by the SageMaker Python SDK
            "sagemaker_program": "ignored",
        }
    )
    assert (hp.max_steps, hp.batch_size, hp.learning_rate, hp.freeze_bn) == (120, 8, 2e-5, False)
    assert hp.dataset_versions == ["ds-0001", "ds-0002"] and hp.parent_version == "v3"
    assert Hyperparameters.from_sagemaker({}).freeze_bn is True
    with pytest.raises(InputError, match="unknown"):
        Hyperparameters.from_sagemaker({"max_step": "3"})
    with pytest.raises(InputError, match="batch_size"):
        Hyperparameters.from_sagemaker({"batch_size": "0"})
    with pytest.raises(InputError, match="freeze_bn"):
        Hyperparameters.from_sagemaker({"freeze_bn": "maybe"})


def test_epoch_sampler_resumes_the_same_order():
    from ocrloop.model.train import EpochSampler

    full = EpochSampler(7, seed=5)
    batches = [full.next(3) for _ in range(6)]
    assert sorted(batches[0] + batches[1] + [batches[2][0]]) == list(range(7))  # an epoch is a permutation
    part = EpochSampler(7, seed=5)
    for _ in range(2):
        part.next(3)
    resumed = EpochSampler(7, seed=5, **part.state())
    assert [resumed.next(3) for _ in range(4)] == batches[2:]


def test_optimizer_state_survives_a_restart_with_different_parameter_names(tmp_path):
    """Paddle keys optimizer accumulators by auto-generated parameter names (a per-process counter);
    checkpoints store them by model path, so a process that built other layers first resumes the
    exact same AdamW state."""
    import paddle

    from ocrloop.model.train import Hyperparameters, load_checkpoint, make_optimizer, save_checkpoint

    def net():
        paddle.seed(1)
        return paddle.nn.Sequential(
            paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 5)
        )

    def step(model, optimizer, scheduler, x):
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()

    hp = Hyperparameters(max_steps=4, learning_rate=1e-2, warmup_steps=1)
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype("float32"))
    a = net()
    opt_a, sched_a = make_optimizer(a, hp)
    step(a, opt_a, sched_a, x)
    save_checkpoint(tmp_path, a, opt_a, {"step": 1})
    step(a, opt_a, sched_a, x)  # the uninterrupted run's step 2

    paddle.nn.Linear(7, 7)  # shifts the name counters, as a different process history would
    b = net()
    assert [p.name for p in b.parameters()] != [p.name for p in a.parameters()]
    opt_b, sched_b = make_optimizer(b, hp)
    assert load_checkpoint(tmp_path / "step-000001", b, opt_b)["step"] == 1
    step(b, opt_b, sched_b, x)  # the resumed run's step 2
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(pa.numpy(), pb.numpy(), rtol=1e-6, atol=1e-7)


def test_training_threads_default_to_the_usable_cpus(monkeypatch):
    import os

    from ocrloop.model.train import TRAIN_THREADS_ENV, InputError, training_threads

    monkeypatch.delenv(TRAIN_THREADS_ENV, raising=False)
    assert training_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(TRAIN_THREADS_ENV, " 3 ")
    assert training_threads() == 3
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(TRAIN_THREADS_ENV, bad)
        with pytest.raises(InputError, match=TRAIN_THREADS_ENV):
            training_threads()


def test_metric_values_print_without_exponent():
    from ocrloop.model.train import format_metric

    assert format_metric(3e-05) == "0.00003"
    assert format_metric(0.8125) == "0.8125"
    assert format_metric(1.0) == "1" and format_metric(0) == "0"
    assert format_metric(2.32458e-05) == "0.0000232458"
    assert format_metric(float("nan")) == "nan"


def test_char_recall_counts_aligned_characters():
    from ocrloop.model.train import char_recall

    recall = char_recall(["025 H7", "4×⌀6", "R5"], ["⌀25 H7", "4×⌀6", "R5 ±0.1"])
    assert recall["⌀"] == {"recall": 0.5, "n": 2}  # read as "0" once, right once
    assert recall["2"] == {"recall": 1.0, "n": 1}
    assert recall["±"] == {"recall": 0.0, "n": 1}
    assert " " not in recall
    with pytest.raises(ValueError):
        char_recall(["a"], [])
