"""Drawing similarity: embeddings (``embed``), the on-disk faiss index (``faiss_index``) and
synthetic drawings for tests and benchmarks (``synth``). Submodules import numpy/cv2/faiss; this
package module imports nothing."""

UNNAMED = "unnamed"
"""Embedder name recorded by an index version created without one (``FaissIndex(home, dim)``): it
carries no embedder identity, so the API cannot check queries against it. Pass ``embedder_name``."""
