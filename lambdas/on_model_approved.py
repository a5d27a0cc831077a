"""Lambda: ``ocrloop.handlers.on_model_approved`` behind EventBridge (rule pattern ``Names().patterns()["on_model_approved"]``)."""

from ocrloop import config

from ._common import loop_handler

handler = loop_handler(config.ON_MODEL_APPROVED)
