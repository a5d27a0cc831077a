"""The PP-OCRv5 mobile rec model: Paddle network, weight import, artifacts, fine-tuning.

Modules (import them directly; this package imports nothing, so ``import ocrloop.model`` stays
free of paddle/onnxruntime):

* ``arch`` — ``RecModel`` (float32 ``[N, 3, 48, W]`` → logits ``[N, W/8, C]``) built from
  paddlex's PP-LCNetV3 and SVTR layers, ``RecInferenceModel`` (softmax, for export);
* ``onnx_import`` — deployed ONNX weights → ``RecModel`` by execution order and shape;
* ``base`` — ``ensure_base_model()``: the cached v0 model version folder;
* ``export`` — ``export_artifact`` / ``load_artifact``: the model version folder contract;
* ``train`` — the SageMaker-contract training job (``training_image/train.py`` calls ``main``);
* ``continual`` — dictionary growth, freezing, the character-balanced replay sampler and
  distillation used by ``train``;
* ``symbols`` — rendered GD&T / hole-callout lines (⌀ ⌴ ⌵ ↧ ⌖ ⏥ ⌭ ⊥ ∥ ◎ ⌒) in fonts that draw them;
* ``datasets`` — new-domain / replay / old-domain channels with leak-free splits (benchmark data);
* ``lines`` — rendered text lines for checks and tests.
"""
