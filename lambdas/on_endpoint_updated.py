"""Lambda: ``ocrloop.handlers.on_endpoint_updated`` behind EventBridge (rule pattern ``Names().patterns()["on_endpoint_updated"]``)."""

from ocrloop import config

from ._common import loop_handler

handler = loop_handler(config.ON_ENDPOINT_UPDATED)
