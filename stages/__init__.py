"""Ranking stages, one module each (installed as ``cascade.stages``): ``bm25``, ``biencoder``,
``colbert``, ``cross_encoder``."""
