"""Lambda: ``ocrloop.handlers.on_labeling_completed`` behind EventBridge (rule pattern ``Names().patterns()["on_labeling_completed"]``)."""

from ocrloop import config

from ._common import loop_handler

handler = loop_handler(config.ON_LABELING_COMPLETED)
