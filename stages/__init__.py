"""Ranking stages, one module each: ``bm25``, ``biencoder``, ``colbert``, ``cross_encoder``."""
