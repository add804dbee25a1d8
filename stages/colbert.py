"""ColBERT late interaction: MaxSim of query tokens against a memory-mapped token index of the corpus."""
from __future__ import annotations

import logging

import numpy as np

from cascade.core.candidates import Batch
from cascade.core.data import Corpus
from cascade.core.errors import ConfigError
from cascade.core.stage import Stage, check_positive
from cascade.core.timing import timed
from cascade.encoders.colbert_formats import FORMATS, load_token_encoder
from cascade.encoders.models import resolve_model
from cascade.encoders.token import TokenEncoder
from cascade.index.store import artifact_dir
from cascade.index.token_index import TokenIndex, TokenIndexArtifact
from cascade.kernels.maxsim import DEFAULT_BLOCK_ROWS, maxsim

log = logging.getLogger(__name__)


class ColBERT(Stage):
    """Rerank candidates by late interaction (sum over query tokens of the best document-token similarity).

    Every document's token vectors are precomputed once per (corpus, model, settings)
    into a float16 token index in the cache dir. The stage reranks candidates; it
    cannot retrieve from the whole corpus (put BM25 or a bi-encoder before it).

    Args:
        k: documents kept per query.
        model: checkpoint name or folder; None means the packaged all-MiniLM-L6-v2 in
            ``plain`` format (its token embeddings; shares the forward pass with a
            BiEncoder on the same model).
        format: ``auto`` (detect), ``plain``, ``colbert_ai`` or ``pylate``.
        query_max_length, doc_max_length: token limits; None takes the checkpoint's own
            (colbert-ai ``artifact.metadata``, PyLate config, or the model's max_seq_length).
        batch_size, chunk_size: texts per forward pass; documents per saved (resumable) chunk.
        block_rows: bound on token slots MaxSim plans at once per block of queries (memory).
        device, cache_dir, progress: as for :class:`~cascade.stages.biencoder.BiEncoder`.
    """

    def __init__(self, k: int | None = 10, model: str | None = None, format: str = "auto",
                 query_max_length: int | None = None, doc_max_length: int | None = None, batch_size: int = 32,
                 chunk_size: int = 256, block_rows: int = DEFAULT_BLOCK_ROWS, device: str | None = None,
                 cache_dir: str | None = None, progress: bool = True, fusion=None, name: str | None = None):
        super().__init__(k=k, fusion=fusion, name=name or "colbert")
        if format not in FORMATS:
            raise ConfigError(f"{self.name}: format {format!r} is unknown; use one of {', '.join(FORMATS)}")
        self.model, self.format = resolve_model(model), format
        self.query_max_length = check_positive(query_max_length, f"{self.name}.query_max_length",
                                              null_means="the model's own")
        self.doc_max_length = check_positive(doc_max_length, f"{self.name}.doc_max_length",
                                              null_means="the model's own")
        self.batch_size = check_positive(batch_size, f"{self.name}.batch_size", allow_none=False)
        self.chunk_size = check_positive(chunk_size, f"{self.name}.chunk_size", allow_none=False)
        self.block_rows = check_positive(block_rows, f"{self.name}.block_rows", allow_none=False)
        self.device, self.cache_dir, self.progress = device, cache_dir, progress
        self._encoder: TokenEncoder | None = None
        self._index: TokenIndex | None = None

    @property
    def encoder(self) -> TokenEncoder:
        """The token encoder (format detected, model loaded on first use)."""
        if self._encoder is None:
            self._encoder = load_token_encoder(self.model, self.format, self.device, self.query_max_length,
                                               self.doc_max_length, self.batch_size)
        return self._encoder

    def artifacts(self, corpus: Corpus) -> list[TokenIndexArtifact]:
        enc = self.encoder
        meta = {"stage": "colbert", **enc.settings()}
        path = artifact_dir(self.cache_dir, "colbert", corpus=corpus.fingerprint, **meta)
        return [TokenIndexArtifact(path, meta, enc.doc_pass(), self.chunk_size, self.progress)]

    def load(self, corpus: Corpus, artifacts: list[TokenIndexArtifact]) -> None:
        self._index = artifacts[0].open(corpus)

    def index_info(self) -> dict:
        """Index size: total bytes and bytes per token."""
        return self._index.info() if self._index is not None else {}

    def score(self, batch: Batch) -> np.ndarray:
        with timed("encode"):
            queries, mask = self.encoder.encode_queries(batch.query_texts)
        with timed("score"):
            return maxsim(queries, mask, self._index.tokens, self._index.offsets, batch.candidates.doc_idx,
                          self.block_rows)

    def __repr__(self) -> str:
        return f"ColBERT(k={self.k}, model={self.model!r}, format={self.format!r})"
