"""Lambda: ``ocrloop.handlers.start_labeling`` behind EventBridge (rule pattern ``Names().patterns()["start_labeling"]``)."""

from ocrloop import config

from ._common import loop_handler

handler = loop_handler(config.START_LABELING)
