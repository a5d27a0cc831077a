"""Deploy form of PP-LCNetV3: re-parameterised convolutions for export (exact, inference only).

Training keeps PP-LCNetV3's multi-branch ``LearnableRepLayer`` (a k×k conv + BN, a 1×1 conv + BN,
an identity BN, then a learnable affine block ``s·x + c``, the "LAB"), so every parameter stays
trainable. At inference the branches are one linear map of the input, so PaddleOCR exports them as
one conv (``LearnableRepLayer.rep`` in ``ppocr/modeling/backbones/rec_lcnetv3.py``; the method
comes from RepVGG, Ding et al. 2021, arXiv:2101.03697, §3.3). ``fuse_for_inference`` does the same
on paddlex's layers and also folds the two affine blocks that sit next to a linear op:

* the LAB after the branches into the fused conv: ``s·(W∗x + b) + c = (s·W)∗x + (s·b + c)``;
* the LAB after a depthwise layer's activation into the following 1×1 pointwise conv when no
  squeeze-excitation sits between them: ``W∗(a·y + c) + b = (a·W)∗y + (b + c·ΣW)``. A 1×1 conv has
  no padding, so this is exact; before a k×k conv the zero padding would see ``c`` where it should
  see 0, so those blocks stay.

On ONNX Runtime (1 thread, the 2-core CI CPU) the fused PP-OCRv5 mobile rec runs a batch of two
48 × 96 / 192 / 320 px crops 1.23 / 1.26 / 1.30× faster than the multi-branch graph
(``bench/README.md``); outputs agree to float32 rounding.

This module imports paddle at import time: import it lazily from core code.
"""

from __future__ import annotations

import copy

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def _bn_scale_shift(bn: nn.Layer) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Eval-mode BatchNorm as ``y = scale·x + shift`` per channel (float32 ``[C]`` each)."""
    std = paddle.sqrt(bn._variance + bn._epsilon)
    scale = bn.weight / std
    return scale, bn.bias - bn._mean * scale


def _conv_bn(layer: nn.Layer, kernel: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """A ``PPLCNetV3ConvLayer`` (conv without bias, BN) as one conv kernel ``[O, I/g, k, k]`` and
    bias ``[O]``; a smaller kernel is zero-padded to ``kernel`` (centred, like its padding)."""
    scale, shift = _bn_scale_shift(layer.normalization)
    w = layer.convolution.weight * scale.reshape([-1, 1, 1, 1])
    pad = (kernel - w.shape[-1]) // 2
    if pad:
        w = F.pad(w, [pad, pad, pad, pad])
    return w, shift


def _identity_bn(bn: nn.Layer, channels: int, groups: int, kernel: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """The identity-BN branch as a conv kernel ``[C, C/g, k, k]`` (1 at the centre of each
    channel's own input) and bias ``[C]``."""
    per_group = channels // groups
    eye = paddle.zeros([channels, per_group, kernel, kernel], dtype="float32")
    idx = paddle.arange(channels)
    eye[idx, idx % per_group, kernel // 2, kernel // 2] = 1.0
    scale, shift = _bn_scale_shift(bn)
    return eye * scale.reshape([-1, 1, 1, 1]), shift


class FusedRepLayer(nn.Layer):
    """A ``PPLCNetV3LearnableRepLayer`` in deploy form: ``conv`` (with bias), then, unless the
    layer has stride 2, hardswish and the output affine ``out_scale·x + out_bias`` (``None``:
    folded into the next conv)."""

    def __init__(self, conv: nn.Conv2D, activation: bool, out_affine: tuple[paddle.Tensor, paddle.Tensor] | None):
        super().__init__()
        self.conv = conv
        self.activation = activation
        self.out_scale = self.out_bias = None
        if activation and out_affine is not None:
            self.out_scale = self.create_parameter([1], default_initializer=nn.initializer.Assign(out_affine[0]))
            self.out_bias = self.create_parameter([1], default_initializer=nn.initializer.Assign(out_affine[1]))

    def forward(self, x):
        x = self.conv(x)
        if self.activation:
            x = F.hardswish(x)
            if self.out_scale is not None:
                x = self.out_scale * x + self.out_bias
        return x


def fuse_rep_layer(rep: nn.Layer, in_affine: tuple[paddle.Tensor, paddle.Tensor] | None = None,
                   keep_out_affine: bool = True) -> FusedRepLayer:
    """One ``PPLCNetV3LearnableRepLayer`` (eval mode) as a ``FusedRepLayer``.

    Args:
        rep: the layer; its branch convs share kernel size, stride, groups and padding ``k // 2``.
        in_affine: ``(a, c)``, scalar tensors ``[1]``: the input is ``a·y + c`` of the new layer's
            input ``y`` (the previous layer's output affine, folded here). Only for 1×1 kernels.
        keep_out_affine: ``False`` leaves the output affine out (the caller folds it onward).

    Raises:
        ValueError: ``in_affine`` given for a kernel larger than 1×1 (not exact with zero padding).
    """
    main = rep.conv_symmetric[0].convolution
    kernel = main.weight.shape[-1]
    groups = main._groups
    out_ch, in_per_group = main.weight.shape[0], main.weight.shape[1]
    with paddle.no_grad():
        weight = paddle.zeros(main.weight.shape, dtype="float32")
        bias = paddle.zeros([out_ch], dtype="float32")
        branches = [_conv_bn(c, kernel) for c in rep.conv_symmetric]
        if rep.conv_small_symmetric is not None:
            branches.append(_conv_bn(rep.conv_small_symmetric, kernel))
        if rep.identity is not None:
            branches.append(_identity_bn(rep.identity, out_ch, groups, kernel))
        for w, b in branches:
            weight = weight + w
            bias = bias + b
        s, c = rep.lab.scale, rep.lab.bias
        weight, bias = weight * s, bias * s + c
        if in_affine is not None:
            if kernel != 1:
                raise ValueError(f"an input affine folds exactly into a 1x1 conv only, not {kernel}x{kernel}")
            a, c_in = in_affine
            bias = bias + c_in * weight.sum(axis=[1, 2, 3])
            weight = weight * a
        conv = nn.Conv2D(in_per_group * groups, out_ch, kernel, stride=main._stride, padding=main._padding,
                         groups=groups, bias_attr=True)
        conv.weight.set_value(weight)
        conv.bias.set_value(bias)
    act = rep.act.lab
    out_affine = (act.scale.detach().clone(), act.bias.detach().clone()) if keep_out_affine else None
    return FusedRepLayer(conv, activation=rep.stride != 2, out_affine=out_affine)


def fuse_for_inference(model: nn.Layer) -> nn.Layer:
    """A deploy-form copy of ``model`` (any layer holding paddlex PP-LCNetV3 blocks, e.g. a
    ``RecModel``): every ``PPLCNetV3DepthwiseSeparableConvLayer``'s two rep layers become
    ``FusedRepLayer``s (module doc). ``model`` itself is not changed; the copy is in eval mode.
    Same inputs and outputs; differences are float32 rounding (≈1e-6 relative)."""
    from paddlex.inference.models.image_classification.modeling.pplcnetv3 import (
        PPLCNetV3DepthwiseSeparableConvLayer,
    )

    fused = copy.deepcopy(model)
    fused.eval()
    for layer in fused.sublayers():
        if not isinstance(layer, PPLCNetV3DepthwiseSeparableConvLayer):
            continue
        dw, pw = layer.depthwise_convolution, layer.pointwise_convolution
        # The depthwise output affine moves into the 1x1 pointwise conv unless a squeeze-excitation
        # (a data-dependent channel scale) sits between them or the depthwise layer has no activation.
        fold = isinstance(layer.squeeze_excitation_module, nn.Identity) and dw.stride != 2
        in_affine = (dw.act.lab.scale, dw.act.lab.bias) if fold else None
        layer.depthwise_convolution = fuse_rep_layer(dw, keep_out_affine=not fold)
        layer.pointwise_convolution = fuse_rep_layer(pw, in_affine=in_affine)
    return fused
