"""Drawing similarity: embeddings (``embed``), the on-disk faiss index (``faiss_index``) and
synthetic drawings for tests and benchmarks (``synth``). Submodules import numpy/cv2/faiss; this
package module imports nothing."""

UNNAMED = "unnamed"
"""Embedder name recorded by an index version created without one (``FaissIndex(home, dim)``): it
carries no embedder identity, so the API cannot check queries against it. Pass ``embedder_name``."""

HNSW_M = 16
"""HNSW graph degree (faiss ``M``; OpenSearch ``method.parameters.m``) of new index versions on both
runtimes. Tuned by ``bench/search.py`` (see ``bench/README.md``)."""

HNSW_EF_CONSTRUCTION = 200
"""Candidate list size while building the graph (faiss ``efConstruction``; OpenSearch ``ef_construction``)."""

HNSW_EF_SEARCH = 64
"""Candidate list size per query (faiss ``efSearch``; OpenSearch ``method_parameters.ef_search``);
raised to ``k`` (and to the over-fetch size locally) when that is larger."""
