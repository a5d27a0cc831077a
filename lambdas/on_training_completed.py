"""Lambda: ``ocrloop.handlers.on_training_completed`` behind EventBridge (rule pattern ``Names().patterns()["on_training_completed"]``)."""

from ocrloop import config

from ._common import loop_handler

handler = loop_handler(config.ON_TRAINING_COMPLETED)
