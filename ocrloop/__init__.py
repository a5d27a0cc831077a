"""ocrloop: continuous training of PaddleOCR on engineering drawings."""
__version__ = "0.1.0"
