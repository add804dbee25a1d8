"""ColBERT late interaction: MaxSim of query tokens against a memory-mapped token index of the corpus."""
from __future__ import annotations

import logging

import numpy as np

from cascade.cache import artifact_dir
from cascade.candidates import Batch
from cascade.colbert_formats import FORMATS, TokenEncoder, load_token_encoder
from cascade.corpus_encoding import CorpusView
from cascade.data import Corpus
from cascade.errors import ConfigError
from cascade.kernels import DEFAULT_BLOCK_ROWS, maxsim
from cascade.models import resolve_model
from cascade.neural import EncoderStage
from cascade.stage import check_positive
from cascade.timing import timed
from cascade.token_index import TokenIndex

log = logging.getLogger(__name__)


class ColBERT(EncoderStage):
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
        device, cache_dir, progress: as for :class:`~stages.biencoder.BiEncoder`.
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

    def corpus_views(self, corpus: Corpus) -> list[CorpusView]:
        enc = self.encoder
        meta = {"stage": "colbert", **enc.settings()}
        path = artifact_dir(self.cache_dir, "colbert", corpus=corpus.fingerprint, **meta)
        return [CorpusView("tokens", path, meta, enc.pass_key(), enc.encode_docs)]

    def load(self, corpus: Corpus, views: list[CorpusView]) -> None:
        self._index = TokenIndex.load(views[0].path, corpus.fingerprint, len(corpus))

    def score(self, batch: Batch) -> np.ndarray:
        with timed("encode"):
            queries, mask = self.encoder.encode_queries(batch.query_texts)
        with timed("score"):
            return maxsim(queries, mask, self._index.tokens, self._index.offsets, batch.candidates.doc_idx,
                          self.block_rows)

    def __repr__(self) -> str:
        return f"ColBERT(k={self.k}, model={self.model!r}, format={self.format!r})"
