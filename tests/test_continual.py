"""Continual-learning parts of the training job: dictionary growth, freezing, the character-balanced
replay sampler, distillation, early stopping, checkpoint/resume equivalence, the per-class gate,
symbol rendering and leak-free splits. Real Paddle models and real rendered lines throughout."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest

from conftest_model import base_model, base_model_dir, write_channel  # noqa: F401  (fixtures)

OLD_LINES = ["⌀25 H7 ±0.02", "技术要求 未注倒角C1", "SCALE 1:2", "M12x1.75 THREAD"]


@pytest.fixture(scope="module")
def old_images():
    from ocrloop.model.lines import render_line

    return [render_line(t) for t in OLD_LINES]


@pytest.fixture(scope="module")
def student(base_model_dir):
    """One v0 ``RecModel`` shared by the tests of this module; ``reset()`` puts the v0 weights,
    head size and trainability back (cheaper than a reload)."""
    from ocrloop.model.export import load_artifact

    model, classes = load_artifact(base_model_dir)
    v0_state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    flags = {n: p.stop_gradient for n, p in model.named_parameters()}

    def reset():
        import paddle

        model.head = paddle.nn.Linear(model.head.weight.shape[0], len(classes))
        model.num_classes = len(classes)
        model.set_state_dict(v0_state)
        for n, p in model.named_parameters():
            p.stop_gradient = flags[n]
        model.eval()
        return model

    return reset, classes


def test_grown_head_keeps_old_logits_and_decoding(student, old_images):
    """New classes go between the dict and the space; every old column is copied bit for bit and
    the champion's text decodes the same, so the grown model reads old characters as before."""
    import paddle

    from ocrloop.model.continual import extend_classes, grow_head, new_characters
    from ocrloop.textline import ctc_greedy_decode, make_batch

    reset, classes = student
    model = reset()
    added = new_characters(["⌴⌀11 ↧6", "◎ ⌀0.1 A", "⌖ 0.2", "技术"], classes)
    assert added == ["⌖", "⌴", "◎"]  # sorted by code point; ⌀ ↧ 技 are already classes
    grown = extend_classes(classes, added)
    assert grown[: len(classes) - 1] == classes[:-1] and grown[-1] == " " and grown[-4:-1] == added
    x = paddle.to_tensor(make_batch(old_images))
    with paddle.no_grad():
        before = model(x).numpy()
    w_old, b_old = model.head.weight.numpy().copy(), model.head.bias.numpy().copy()
    index = grow_head(model, len(grown))
    with paddle.no_grad():
        after = model(x).numpy()
    assert after.shape == before.shape[:2] + (len(grown),) and model.num_classes == len(grown)
    # the old columns and biases are copied bit for bit; the logits agree up to float32 GEMM
    # accumulation order (a wider output matrix is blocked differently): ≈1e-5 on logits ≈10
    np.testing.assert_array_equal(model.head.weight.numpy()[:, index], w_old)
    np.testing.assert_array_equal(model.head.bias.numpy()[index], b_old)
    np.testing.assert_allclose(after[..., index], before, rtol=1e-6, atol=5e-5)
    new_cols = np.setdiff1d(np.arange(len(grown)), index)
    blank_minus_margin = np.broadcast_to(after[..., :1] - 10.0, after[..., new_cols].shape)
    np.testing.assert_allclose(after[..., new_cols], blank_minus_margin, atol=1e-4)
    assert not np.isin(after.argmax(-1), new_cols).any()  # a new class never wins before training
    decode = lambda logits, cls: [t for t, _ in ctc_greedy_decode(logits, cls)]  # noqa: E731
    assert decode(after, grown) == decode(before, classes)
    assert decode(before, classes)[1:] == OLD_LINES[1:]  # (v0 reads the ⌀ of line 0 as "0")
    with pytest.raises(ValueError):
        extend_classes(classes, ["A"])  # already a class


def test_balanced_replay_sampler_mixes_balances_and_resumes():
    from ocrloop.model.continual import BalancedReplaySampler

    texts = [f"NEW{i}" for i in range(10)] + ["abc"] * 89 + ["技"]  # one rare old character
    origins = ["new"] * 10 + ["base"] * 90
    sampler = BalancedReplaySampler(origins, texts, seed=3, replay_fraction=0.3, balance=0.0)
    batches = [sampler.next(10) for _ in range(40)]
    for b in batches:
        assert sum(origins[i] == "new" for i in b) == 7 and sum(origins[i] != "new" for i in b) == 3
    new_seen = [i for b in batches[:10] for i in b if origins[i] == "new"]
    assert sorted(new_seen[:10]) == list(range(10))  # new samples: an epoch is a permutation
    rare = sum(texts[i] == "技" for b in batches for i in b)
    # q = 0: each of the 4 replay characters (a, b, c, 技) equally likely → 技 on ≈ 1/4 of the
    # 120 replay draws; instance sampling would give ≈ 120/90 ≈ 1.3
    assert 15 <= rare <= 50
    proportional = BalancedReplaySampler(origins, texts, seed=3, replay_fraction=0.3, balance=1.0)
    rare_prop = sum(texts[i] == "技" for _ in range(40) for i in proportional.next(10))
    assert rare_prop < rare / 3
    part = BalancedReplaySampler(origins, texts, seed=3, replay_fraction=0.3, balance=0.0)
    for _ in range(13):
        part.next(10)
    resumed = BalancedReplaySampler(origins, texts, seed=3, replay_fraction=0.3, balance=0.0,
                                    **json.loads(json.dumps(part.state())))
    assert [resumed.next(10) for _ in range(27)] == batches[13:]
    only_new = BalancedReplaySampler(["new"] * 4, ["a"] * 4, seed=1, replay_fraction=0.3, balance=0.5)
    assert sorted(only_new.next(4)) == [0, 1, 2, 3]


def test_distillation_loss_is_hinton_kl_over_old_classes():
    import paddle

    from ocrloop.model.continual import distillation_loss, old_class_index

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(2, 5, 6)).astype(np.float32)
    index = old_class_index(6, 8)
    student = rng.normal(size=(2, 5, 8)).astype(np.float32)
    student[..., index] = teacher
    s = paddle.to_tensor(student, stop_gradient=False)
    assert float(distillation_loss(s, teacher, 2.0, index)) == pytest.approx(0.0, abs=1e-6)
    student2 = rng.normal(size=(2, 5, 8)).astype(np.float32)
    s2 = paddle.to_tensor(student2, stop_gradient=False)
    loss = distillation_loss(s2, paddle.to_tensor(teacher), 3.0, index)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(teacher / 3.0), log_softmax(student2[..., index] / 3.0)
    expected = 9.0 * (np.exp(lt) * (lt - ls)).sum(-1).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    loss.backward()
    grad = s2.grad.numpy()
    # new classes are outside the KD term (masked to probability 0: what is left is float32 dust)
    assert np.abs(grad[..., 6]).max() < 1e-20 < np.abs(grad[..., index]).max()
    # any index layout (scatter path) gives the same value as the gather formulation
    perm = np.array([7, 0, 3, 1, 5, 2])
    lt, ls = log_softmax(teacher / 3.0), log_softmax(student2[..., perm] / 3.0)
    expected = 9.0 * (np.exp(lt) * (lt - ls)).sum(-1).mean()
    assert float(distillation_loss(s2, teacher, 3.0, perm)) == pytest.approx(float(expected), rel=1e-4)
    with pytest.raises(ValueError):
        distillation_loss(s2, teacher, 0.0, index)


def test_head_lr_multiplier_and_freezing(student):
    import paddle

    from ocrloop.model.continual import apply_freeze
    from ocrloop.model.train import Hyperparameters, make_optimizer

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.body = paddle.nn.Linear(3, 3)
            self.head = paddle.nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.body(x))

    paddle.seed(0)
    net = Net()
    hp = Hyperparameters(max_steps=10, learning_rate=1e-3, warmup_steps=0, head_lr_mult=10.0, weight_decay=0.0)
    opt, _ = make_optimizer(net, hp)
    w_body, w_head = net.body.weight.numpy().copy(), net.head.weight.numpy().copy()
    net(paddle.ones([4, 3])).sum().backward()
    opt.step()
    # Adam's first step moves every weight by ≈ lr (sign of the gradient), times the multiplier
    assert np.abs(net.body.weight.numpy() - w_body).max() == pytest.approx(1e-3, rel=1e-2)
    assert np.abs(net.head.weight.numpy() - w_head).max() == pytest.approx(1e-2, rel=1e-2)

    model = student[0]()
    assert apply_freeze(model, "backbone_neck") > 0
    trainable = [n for n, p in model.named_parameters() if not p.stop_gradient]
    assert trainable == ["head.weight", "head.bias"]
    opt2, _ = make_optimizer(model, dataclasses.replace(hp, freeze="backbone_neck"))
    assert [len(g["params"]) for g in opt2._param_groups] == [2]  # the head group only
    with pytest.raises(ValueError):
        apply_freeze(model, "everything")


@pytest.fixture(scope="module")
def small_job(tmp_path_factory, base_model):
    """A tiny mixed training set (new symbol lines + replay lines), its grown class list and the
    frozen teacher (the shared v0 model, only read)."""
    from ocrloop.model.continual import extend_classes, new_characters
    from ocrloop.model.train import ImageCache, encode_samples, read_manifest

    items = [("⌴⌀11 ↧6", "new"), ("◎ ⌀0.1 A", "new"), ("⌖ ⌀0.2 A B", "new"), ("⊥ 0.05 A", "new"),
             ("技术要求", "base"), ("SCALE 1:2", "base"), ("材料 Q235", "base")]
    channel = write_channel(tmp_path_factory.mktemp("cl_train"), items)
    samples = read_manifest(channel)
    teacher, classes = base_model
    teacher.eval()
    grown = extend_classes(classes, new_characters([s.text for s in samples], classes))
    data, skipped = encode_samples(samples, grown, 40)
    assert skipped["total"] == 0
    return data, ImageCache(), classes, grown, teacher


def _fresh(student, hp, n_classes, reload_from=None):
    """v0 with a grown head, frozen per ``hp`` and a new optimizer. ``reload_from``: build a new
    model from that folder (a restarted process: new parameters, new optimizer accumulators —
    Paddle numbers accumulators per parameter name, so one parameter must not serve two runs that
    exchange optimizer checkpoints)."""
    from ocrloop.model.continual import apply_freeze, grow_head
    from ocrloop.model.export import load_artifact
    from ocrloop.model.train import make_optimizer

    model = load_artifact(reload_from)[0] if reload_from else student[0]()
    index = grow_head(model, n_classes)
    apply_freeze(model, hp.freeze)
    optimizer, scheduler = make_optimizer(model, hp)
    return model, optimizer, scheduler, index


def test_resume_with_replay_distillation_and_grown_head_equals_uninterrupted(tmp_path, student, small_job,
                                                                            base_model_dir):
    """Spot safety with every new feature on: a run killed after step 1 and restarted from its
    checkpoint in a newly built model (v0 weights, new optimizer) ends with the weights, sampler
    and evaluation history of an uninterrupted 2-step run. Each run builds its own model, as
    each would be its own process (Paddle numbers optimizer accumulators per parameter)."""
    import paddle

    from ocrloop.model.train import Hyperparameters, load_checkpoint, train_steps

    data, images, classes, grown, teacher = small_job
    hp = Hyperparameters(max_steps=2, batch_size=4, learning_rate=5e-5, warmup_steps=1, seed=5, freeze="backbone",
                         head_lr_mult=5.0, sampler="balanced", replay_fraction=0.5, distill_alpha=1.0,
                         distill_temperature=2.0, eval_every=1, checkpoint_every=1)
    calls = []

    def evaluate_fn(m):
        calls.append(1)
        return {"line_acc": 0.5, "char_acc": float(np.abs(m.head.weight.numpy()).sum() % 1)}

    def fresh_state():
        return {"step": 0, "samples_seen": 0, "wall_s": 0.0, "cpu_s": 0.0, "last_loss": None}

    paddle.seed(5)
    model, opt, sched, index = _fresh(student, hp, len(grown), reload_from=base_model_dir)
    full = train_steps(model, opt, sched, data, images, hp, fresh_state(), tmp_path / "full",
                       teacher=teacher, old_index=index, evaluate_fn=evaluate_fn)
    full_weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    # distillation ran; one step from the teacher's own weights the KL is ≈ 0 (CE − H in float32)
    assert full["last_distill"] is not None and abs(full["last_distill"]) < 1e-2
    assert len(full["early_stopping"]["history"]) == 2

    paddle.seed(5)
    model, opt, sched, index = _fresh(student, hp, len(grown))  # the shared model: its first optimizer
    train_steps(model, opt, sched, data, images, dataclasses.replace(hp, max_steps=1), fresh_state(), tmp_path / "run",
                teacher=teacher, old_index=index, evaluate_fn=evaluate_fn)
    model, opt, sched, index = _fresh(student, hp, len(grown), reload_from=base_model_dir)  # "killed"
    state = load_checkpoint(tmp_path / "run" / "step-000001", model, opt)
    sched.step(state["step"])
    state = train_steps(model, opt, sched, data, images, hp, state, tmp_path / "run",
                        teacher=teacher, old_index=index, evaluate_fn=evaluate_fn)
    def decisions(es):  # the early-stopping record less the CPU time each run happened to spend
        return {**es, "history": [{k: v for k, v in h.items() if k != "cpu_s"} for h in es["history"]]}

    assert state["sampler"] == full["sampler"]
    assert decisions(state["early_stopping"]) == decisions(full["early_stopping"])
    assert state["last_loss"] == pytest.approx(full["last_loss"], rel=1e-5)
    assert state["last_distill"] == pytest.approx(full["last_distill"], rel=1e-5)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value.numpy(), full_weights[name], rtol=1e-5, atol=1e-7, err_msg=name)
    # the body really stayed v0 and the old head columns really trained
    v0 = teacher.state_dict()
    for name, value in model.state_dict().items():
        if name.startswith("backbone."):
            np.testing.assert_array_equal(value.numpy(), v0[name].numpy(), err_msg=name)
    assert np.abs(model.head.weight.numpy()[:, index] - v0["head.weight"].numpy()).max() > 1e-6
    assert np.abs(model.encoder.svtr_block[0].mlp.fc1.weight.numpy() - v0["encoder.svtr_block.0.mlp.fc1.weight"].numpy()).max() > 0


def test_early_stopping_stops_on_patience_and_keeps_the_best_weights(student, small_job):
    import paddle

    from ocrloop.model.continual import FeatureCache
    from ocrloop.model.train import Hyperparameters, train_steps

    data, images, _, grown, teacher = small_job
    hp = Hyperparameters(max_steps=20, batch_size=4, learning_rate=1e-3, warmup_steps=0, freeze="backbone_neck",
                         eval_every=1, early_stopping_patience=2, sampler="balanced", distill_alpha=0.5)
    paddle.seed(1)
    model, opt, sched, index = _fresh(student, hp, len(grown))
    snapshots = {}
    line_acc = {1: 0.2, 2: 0.6, 3: 0.5, 4: 0.6}

    def evaluate_fn(m):
        step = len(snapshots) + 1
        snapshots[step] = m.head.weight.numpy().copy()
        return {"line_acc": line_acc[step], "char_acc": 0.9}

    features = FeatureCache(model, hp.max_width)
    state = train_steps(model, opt, sched, data, images, hp,
                        {"step": 0, "samples_seen": 0, "wall_s": 0.0, "cpu_s": 0.0, "last_loss": None}, None,
                        teacher=teacher, old_index=index, evaluate_fn=evaluate_fn, features=features)
    es = state["early_stopping"]
    assert state["step"] == 4 and es["stopped"] == "patience" and es["best_step"] == 2
    assert [h["line_acc"] for h in es["history"]] == [0.2, 0.6, 0.5, 0.6]
    np.testing.assert_array_equal(model.head.weight.numpy(), snapshots[2])
    assert 0 < len(features) <= len(data)  # computed once per crop seen


def test_gate_names_regressed_character_classes():
    from ocrloop import gate
    from ocrloop.config import LoopConfig

    def set_(line, recall):
        return {"line_acc": line, "char_acc": line, "char_recall": {c: {"recall": r, "n": n} for c, (r, n) in recall.items()}}

    champion = {"validation": set_(0.5, {"⌀": (0.0, 30)}),
                "olddomain": set_(1.0, {"技": (1.0, 25), "术": (1.0, 5), "A": (1.0, 40), "1": (1.0, 30)})}
    candidate = {"validation": set_(0.9, {"⌀": (0.97, 30)}),
                 "olddomain": set_(0.995, {"技": (0.8, 25), "术": (0.0, 5), "A": (0.95, 40), "1": (1.0, 30)})}
    metrics = {"champion": champion, "candidate": candidate}
    d = gate.decide(metrics, LoopConfig(gate_max_old_drop=1.0))
    assert not d.passed
    assert any("'技'" in r and "100.0% → 80.0%" in r and "n=25" in r for r in d.reasons), d.reasons
    assert not any("'术'" in r for r in d.reasons)  # support 5 < 20: not checked
    # the pooled CJK class (技 + 术: 30 occurrences, 100% → 66.7%) is a class too; largest first
    assert [g["class"] for g in d.regressions] == ["group:cjk", "技"]
    assert d.to_json()["regressions"][0]["set"] == "olddomain"
    assert any("group:cjk recall 100.0% → 66.7%" in r for r in d.reasons), d.reasons
    d2 = gate.decide(metrics, LoopConfig(gate_max_class_recall_drop=25.0))
    assert [g["class"] for g in d2.regressions] == ["group:cjk"] and not d2.passed
    assert gate.decide(metrics, LoopConfig(gate_max_class_recall_drop=40.0)).passed
    assert gate.decide(metrics, LoopConfig(gate_check_classes=False)).passed
    assert gate.char_group("技") == "cjk" and gate.char_group("⌀") == "symbol" and gate.char_group("7") == "digit"
    # the record the training job writes into the model card
    from ocrloop.model.train import gate_record

    record = gate_record(metrics, {"gate_max_old_drop": 1.0})
    assert record["passed"] is False and record["config"]["gate_max_old_drop"] == 1.0
    assert [g["class"] for g in record["all_regressions"]] == ["group:cjk", "技"]
    no_sets = gate_record({"champion": {}, "candidate": {}}, {})
    assert no_sets["passed"] is False and "not applicable" in no_sets["reasons"][0]


def test_hyperparameters_for_continual_training():
    from ocrloop.model.train import Hyperparameters, InputError

    hp = Hyperparameters.from_sagemaker({
        "freeze": "backbone", "head_lr_mult": "20", "sampler": "balanced", "replay_fraction": "0.3",
        "distill_alpha": "1.5", "distill_temperature": "2", "eval_every": "10", "early_stopping_patience": "3",
        "extend_dict": "false", "gate_config": '{"gate_max_old_drop": 0.5}', "new_chars": '"⌀⌴"',
    })
    assert (hp.freeze, hp.head_lr_mult, hp.sampler, hp.distill_alpha, hp.extend_dict) == ("backbone", 20.0, "balanced", 1.5, False)
    assert hp.gate_config == {"gate_max_old_drop": 0.5} and hp.new_chars == "⌀⌴"
    for bad in ({"freeze": "all"}, {"distill_rows": "some"}, {"sampler": "random"}, {"replay_fraction": "1.5"}, {"distill_temperature": "0"},
                {"early_stopping_patience": "2"}, {"gate_config": '{"gate_nope": 1}'}, {"gate_config": "[1]"}):
        with pytest.raises(InputError):
            Hyperparameters.from_sagemaker(bad)



def test_loop_recipe_is_what_the_training_job_reads():
    """The handler's hyperparameters (``LoopConfig.rec_hyperparameters``) as SageMaker passes them
    (strings) give the training job the configured recipe, and follow the config when it changes."""
    from ocrloop.config import LoopConfig
    from ocrloop.model.train import Hyperparameters

    for cfg in (LoopConfig(), LoopConfig(max_steps=40, new_ratio=3, replay_ratio=1, freeze="none", distill_alpha=0.0)):
        hp = Hyperparameters.from_sagemaker({k: str(v) for k, v in cfg.rec_hyperparameters().items()})
        assert (hp.max_steps, hp.batch_size, hp.learning_rate, hp.freeze, hp.head_lr_mult) == (
            cfg.max_steps, cfg.batch_size, cfg.learning_rate, cfg.freeze, cfg.head_lr_mult)
        assert hp.replay_fraction == pytest.approx(cfg.replay_ratio / (cfg.new_ratio + cfg.replay_ratio))
        assert (hp.distill_alpha, hp.distill_temperature, hp.distill_rows, hp.sampler) == (
            cfg.distill_alpha, cfg.distill_temperature, cfg.distill_rows, "balanced")
        assert 1 <= hp.warmup_steps <= max(1, cfg.max_steps // 10)

def test_symbol_lines_use_fonts_that_draw_every_symbol():
    from ocrloop.model.continual import DRAWING_SYMBOLS
    from ocrloop.model.symbols import candidate_fonts, font_coverage, fonts_for, render_symbol_lines, symbol_texts

    fonts = {f.name: font_coverage(str(f)) for f in candidate_fonts()}
    assert set(DRAWING_SYMBOLS) <= fonts["Symbola_hint.ttf"]
    assert not {"⊥", "∥"} & fonts["osifont.ttf"] and "⌴" in fonts["osifont.ttf"]
    for sym in DRAWING_SYMBOLS:
        assert len(fonts_for(sym)) >= 2, sym
    texts = symbol_texts(60, seed=4)
    assert len(set(texts)) == 60 and set(DRAWING_SYMBOLS) <= set("".join(texts))
    lines = render_symbol_lines(texts[:12], seed=4)
    again = render_symbol_lines(texts[:12], seed=4)
    for a, b in zip(lines, again):
        assert a.text == b.text and a.font == b.font and np.array_equal(a.image, b.image)
        assert a.image.dtype == np.uint8 and a.image.ndim == 3 and a.image.shape[2] == 3
        assert set(a.text) - {" "} <= fonts[a.font]
        assert a.image.min() < 100  # ink on the line


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_symbol_is_common_in_the_symbol_texts(seed):
    """No symbol is rare only because the generator's string space for it is small (the texts are
    distinct): each one is in ≥ 4 % of 400 texts (⏥ and ⌭ were at 2 % when they shared a kind)."""
    from ocrloop.model.continual import DRAWING_SYMBOLS
    from ocrloop.model.symbols import symbol_texts

    texts = symbol_texts(400, seed=seed)
    share = {sym: sum(sym in t for t in texts) / len(texts) for sym in DRAWING_SYMBOLS}
    assert min(share.values()) >= 0.04, share


def test_splits_never_leak():
    from ocrloop.model.datasets import LeakError, Line, assert_disjoint, split_by_group, symbol_sets

    img = np.zeros((8, 8, 3), np.uint8)
    lines = [Line(img, f"t{i}", "corpus", f"d{i % 9}") for i in range(90)] + [Line(img, "x", "corpus", "huge")] * 60
    train, test = split_by_group(lines, 0.25, seed=1)
    assert_disjoint(train, test)
    assert {ln.group for ln in train}.isdisjoint({ln.group for ln in test})
    assert "huge" not in {ln.group for ln in test}  # one big drawing never becomes the test set
    assert 0.2 * len(lines) <= len(test) <= 0.35 * len(lines)
    with pytest.raises(LeakError):
        assert_disjoint(train, train[:1])
    s_train, s_test = symbol_sets(30, 10, seed=2, train_copies=2)
    assert len(s_test) == 10 and len(s_train) == 60
    assert {ln.text for ln in s_train}.isdisjoint({ln.text for ln in s_test})
    assert Counter(ln.text for ln in s_train).most_common(1)[0][1] == 2


def test_old_domain_set_is_read_exactly_by_v0_and_disjoint_from_the_pool():
    from ocrloop.data.base_pool import default_recognizer
    from ocrloop.model.datasets import assert_disjoint, base_sets

    v0 = default_recognizer()
    pool, old, report = base_sets(n_pool=20, n_old=12, seed=3, recognize=v0)
    assert len(old) == 12 and len(pool) == 20 and report["offered"] >= 12
    assert [v0([ln.image])[0].strip() for ln in old] == [ln.text.strip() for ln in old]
    assert_disjoint(pool, old)
    assert {ln.text for ln in pool}.isdisjoint({ln.text for ln in old})


def test_teacher_reuses_the_frozen_backbone_and_distils_all_rows(tmp_path, student, small_job, base_model_dir):
    """With ``freeze="backbone"`` the teacher's logits from the student's backbone output equal a
    full teacher forward (same frozen weights, eval mode), so one backbone pass serves both; a
    backbone that differs from the teacher's turns the sharing off. ``distill_rows="all"``
    distils the new rows too (Learning without Forgetting), which changes the distillation term."""
    import paddle

    from ocrloop.model.train import Hyperparameters, _same_weights, set_train_mode, train_steps
    from ocrloop.textline import make_batch

    data, images, classes, grown, teacher = small_job
    hp = Hyperparameters(max_steps=1, batch_size=7, learning_rate=5e-5, warmup_steps=0, seed=5, freeze="backbone",
                         head_lr_mult=5.0, distill_alpha=1.0, checkpoint_every=1)
    model, opt, sched, index = _fresh(student, hp, len(grown), reload_from=base_model_dir)
    set_train_mode(model, hp.freeze_bn, hp.freeze)
    assert _same_weights(model.backbone, teacher.backbone)
    x = paddle.to_tensor(make_batch([images(s.image) for s, _ in data], max_width=320))
    with paddle.no_grad():
        shared = teacher.logits_from_body(model.body_features(x)).numpy()
        full = teacher(x).numpy()
    np.testing.assert_allclose(shared, full, rtol=1e-5, atol=1e-6)

    def three_steps(rows, **more):
        paddle.seed(5)
        m, o, s, i = _fresh(student, hp, len(grown), reload_from=base_model_dir)
        state = {"step": 0, "samples_seen": 0, "wall_s": 0.0, "cpu_s": 0.0, "last_loss": None}
        return train_steps(m, o, s, data, images, dataclasses.replace(hp, distill_rows=rows, max_steps=3, **more),
                           state, None, teacher=teacher, old_index=i)["last_distill"]

    # step 1 starts from the teacher's weights (KD = 0); by step 3 the student has moved
    replay_only, all_rows = three_steps("replay"), three_steps("all")
    assert replay_only > 1e-6 and all_rows > 1e-6 and abs(all_rows - replay_only) > 1e-3 * replay_only

    # "known": replay rows plus new rows that only use characters the champion reads: its classes
    # less new_chars. With ⊥ declared readable, "⊥ 0.05 A" (the PP-OCRv5 dict has ⊥) is one; the
    # lines with ⌴ ◎ ⌖ are not. By default ⊥ is a drawing symbol v0 does not read: replay rows only.
    assert "⊥" in classes and not {"⌴", "◎", "⌖"} & set(classes)
    known_rows = three_steps("known", new_chars="⌀⌴⌵↧⌖◎")
    assert abs(known_rows - replay_only) > 1e-3 * replay_only and abs(known_rows - all_rows) > 1e-3 * all_rows
    assert three_steps("known") == pytest.approx(replay_only, rel=1e-6)

    other = student[0]()
    w = other.backbone.parameters()[0]
    w.set_value(w.numpy() + 1e-3)
    assert not _same_weights(other.backbone, teacher.backbone)


@pytest.mark.parametrize("engine", ["paddle", "onnxruntime"])
def test_cached_backbone_features_train_like_the_full_forward(student, small_job, base_model_dir, engine):
    """``freeze="backbone"`` with ``FeatureCache(stage="body")``: the backbone runs once per crop
    (in Paddle, or exported to ONNX Runtime) and the neck + head train on its cached output; the
    weights after 3 steps (with distillation) equal those of a run that runs the backbone every
    step (ONNX Runtime: to float32 accumulation-order differences)."""
    import paddle

    from ocrloop.model.continual import FeatureCache
    from ocrloop.model.train import Hyperparameters, train_steps

    data, images, classes, grown, teacher = small_job
    hp = Hyperparameters(max_steps=3, batch_size=4, learning_rate=5e-5, warmup_steps=1, seed=5, freeze="backbone",
                         head_lr_mult=5.0, sampler="balanced", replay_fraction=0.5, distill_alpha=1.0,
                         distill_rows="all", checkpoint_every=10)
    runs = []
    for cached in (False, True):
        paddle.seed(5)
        model, opt, sched, index = _fresh(student, hp, len(grown), reload_from=base_model_dir)
        features = FeatureCache(model, 320, stage="body", engine=engine) if cached else None
        state = {"step": 0, "samples_seen": 0, "wall_s": 0.0, "cpu_s": 0.0, "last_loss": None}
        state = train_steps(model, opt, sched, data, images, hp, state, None, teacher=teacher, old_index=index,
                            features=features)
        runs.append((state, {k: v.numpy().copy() for k, v in model.state_dict().items()}, features))
    (plain, w_plain, _), (cached, w_cached, features) = runs
    assert 0 < len(features) <= len(data)
    assert features.report["engine"] == engine and "fallback" not in features.report
    if engine == "onnxruntime":
        assert features.report["check_rel_diff"] <= FeatureCache.ORT_TOLERANCE
    rtol = 1e-4 if engine == "paddle" else 1e-3
    assert cached["last_loss"] == pytest.approx(plain["last_loss"], rel=rtol)
    # the KL value is CE − H of float32 sums ≈ 10: ONNX Runtime's sums cancel to within ≈ 2e-4
    assert cached["last_distill"] == pytest.approx(plain["last_distill"], rel=1e-3, abs=1e-4 if engine == "paddle" else 1e-3)
    # ONNX Runtime: Adam's normalised step turns float32 noise on parameters whose true gradient
    # is 0 (the attention's key bias) into moves of up to ±LR per step, so allow steps × LR there
    atol = 1e-6 if engine == "paddle" else hp.max_steps * hp.learning_rate * hp.head_lr_mult
    for name, value in w_plain.items():
        np.testing.assert_allclose(w_cached[name], value, rtol=rtol, atol=atol, err_msg=name)
    with pytest.raises(ValueError):
        FeatureCache(teacher, 320, stage="pixels")


def test_onnxruntime_features_fall_back_to_paddle_when_the_export_disagrees(student, small_job, monkeypatch):
    """The export check is real: with a zero tolerance ONNX Runtime's float32 differences fail it,
    the cache says why and serves Paddle's features (bit for bit those of a Paddle cache)."""
    from ocrloop.model.continual import FeatureCache

    data, images, *_ = small_job
    keys = [s.image for s, _ in data[:5]]
    crops = [images(k) for k in keys]
    model = student[0]()
    monkeypatch.setattr(FeatureCache, "ORT_TOLERANCE", 0.0)
    strict = FeatureCache(model, 320, stage="neck", engine="onnxruntime")
    got = strict.features(keys, crops)
    assert strict.report["engine"] == "paddle" and "differs from Paddle" in strict.report["fallback"]
    np.testing.assert_array_equal(got, FeatureCache(model, 320, stage="neck").features(keys, crops))
    with pytest.raises(ValueError):
        FeatureCache(model, 320, engine="tensorrt")


def test_teacher_targets_on_onnxruntime_match_paddle(small_job, base_model_dir):
    """``TeacherTargets``: the champion's neck + head + soft targets exported to ONNX Runtime give
    Paddle's ``soft_targets`` (p_t to 1e-4, in the student's grown layout with 0 on new classes);
    a layout other than ``old_class_index``'s is not exported and Paddle serves, saying why."""
    import paddle

    from ocrloop.model.continual import TeacherTargets, old_class_index, soft_targets
    from ocrloop.textline import make_batch

    data, images, classes, grown, teacher = small_job
    x = paddle.to_tensor(make_batch([images(s.image) for s, _ in data], max_width=320))
    with paddle.no_grad():
        body = teacher.body_features(x)
        ref_p, ref_neg, mask = soft_targets(teacher.logits_from_body(body), 2.0, old_class_index(len(classes), len(grown)),
                                            len(grown))
    targets = TeacherTargets(teacher, old_class_index(len(classes), len(grown)), len(grown), 2.0)
    for _ in range(2):  # the checked first call, then the session alone
        p_t, neg = targets(body.numpy())
        assert targets.report["engine"] == "onnxruntime", targets.report
        np.testing.assert_allclose(p_t, ref_p.numpy(), atol=1e-4)
        np.testing.assert_allclose(neg, ref_neg.numpy(), atol=1e-2, rtol=1e-4)
    assert p_t.shape == (len(data), body.shape[3], len(grown)) and p_t[..., len(classes) - 1 : -1].max() == 0.0
    np.testing.assert_array_equal(targets.mask, mask.numpy())

    index = np.concatenate([[len(grown) - 1], np.arange(len(classes) - 1)])  # space first: another layout
    other = TeacherTargets(teacher, index, len(grown), 2.0)
    p_other, _ = other(body.numpy()[:2])
    assert other.report["engine"] == "paddle" and "old_class_index" in other.report["fallback"]
    assert p_other.shape == (2, body.shape[3], len(grown))


def test_loop_config_offers_the_training_jobs_choices():
    """``LoopConfig`` checks ``freeze`` / ``distill_rows`` against the same choices the training job
    accepts, so a bad CDK context or config file fails when it is read."""
    from ocrloop.config import LoopConfig
    from ocrloop.model.continual import FREEZE_CHOICES
    from ocrloop.model.train import DISTILL_ROWS

    assert LoopConfig.FREEZE_CHOICES == FREEZE_CHOICES and LoopConfig.DISTILL_ROWS == DISTILL_ROWS
    assert LoopConfig.from_mapping({"freeze": "none", "distill_alpha": 0}).freeze == "none"
    for bad in ({"freeze": "neck"}, {"distill_rows": "some"}, {"distill_temperature": 0}):
        with pytest.raises(ValueError):
            LoopConfig.from_mapping(bad)
