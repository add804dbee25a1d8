"""Bi-encoder: sentence-transformers embeddings; exact retrieval over the corpus or rescoring of candidates."""
from __future__ import annotations

import logging

import numpy as np

from cascade.core.candidates import Batch, Candidates
from cascade.core.data import Corpus
from cascade.core.errors import ConfigError
from cascade.core.stage import Stage, check_positive
from cascade.core.timing import timed
from cascade.encoders.models import resolve_model
from cascade.encoders.sentence import SentenceEncoder, get_sentence_encoder, l2_normalize
from cascade.index.store import artifact_dir
from cascade.index.vectors import VectorsArtifact
from cascade.kernels.dense import dot_scores, topk_dot
from cascade.kernels.precision import STAGE_NOTE, resolve_precision

log = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "dot")


class BiEncoder(Stage):
    """Dense retrieval / reranking with a sentence-transformers model.

    Document vectors are computed once per (corpus, model, settings) into the cache
    dir and memory-mapped. Given no candidates it returns the exact top ``k`` of
    the whole corpus (scanned in chunks); given candidates it scores only those.

    Args:
        k: documents kept per query.
        model: a sentence-transformers / Hugging Face name or a local folder; None
            means the packaged all-MiniLM-L6-v2 (works offline).
        query_max_length, doc_max_length: token limits; None uses the model's own
            ``max_seq_length``. Longer documents are truncated (the count is logged).
        query_prefix, doc_prefix: text put before queries / documents (e.g. ``"query: "`` for E5).
        similarity: ``cosine`` (vectors L2-normalized) or ``dot``.
        batch_size: texts per forward pass; chunk_size: documents per saved (resumable) chunk.
        retrieval_chunk: documents scored at once when retrieving (bounds memory).
        device: ``cpu``, ``cuda``...; None picks a GPU when there is one.
        precision: autocast precision of the forward passes, documents and queries alike: ``auto`` (bf16
            on CPUs with AVX-512 BF16 or AMX, fp16 on GPUs, else fp32), ``fp32``, ``bf16`` or ``fp16``
            (GPUs only). The effective one is part of the cache key (:mod:`cascade.kernels.precision`).
        cache_dir: where document vectors are saved (default $CASCADE_CACHE_DIR or ~/.cache/cascade).
        progress: show a progress bar while encoding the corpus.
    """

    def __init__(self, k: int | None = 100, model: str | None = None, query_max_length: int | None = None,
                 doc_max_length: int | None = None, query_prefix: str = "", doc_prefix: str = "",
                 similarity: str = "cosine", batch_size: int = 32, chunk_size: int = 256,
                 retrieval_chunk: int = 32768, device: str | None = None, precision: str = "auto",
                 cache_dir: str | None = None, progress: bool = True, fusion=None, name: str | None = None):
        super().__init__(k=k, fusion=fusion, name=name or "biencoder")
        if similarity not in SIMILARITIES:
            raise ConfigError(f"{self.name}: similarity {similarity!r} is unknown; use cosine or dot")
        self.model = resolve_model(model)
        self.query_max_length = check_positive(query_max_length, f"{self.name}.query_max_length",
                                              null_means="the model's own")
        self.doc_max_length = check_positive(doc_max_length, f"{self.name}.doc_max_length",
                                              null_means="the model's own")
        self.batch_size = check_positive(batch_size, f"{self.name}.batch_size", allow_none=False)
        self.chunk_size = check_positive(chunk_size, f"{self.name}.chunk_size", allow_none=False)
        self.retrieval_chunk = check_positive(retrieval_chunk, f"{self.name}.retrieval_chunk", allow_none=False)
        self.query_prefix, self.doc_prefix = str(query_prefix or ""), str(doc_prefix or "")
        self.similarity, self.device, self.cache_dir, self.progress = similarity, device, cache_dir, progress
        self.precision = resolve_precision(precision, device, f"{self.name}.precision", STAGE_NOTE)  # effective
        self._vectors: np.ndarray | None = None

    @property
    def encoder(self) -> SentenceEncoder:
        """The shared encoder of this model (loaded on first use)."""
        return get_sentence_encoder(self.model, self.device, self.precision)

    def _lengths(self) -> tuple[int, int]:
        default = self.encoder.default_max_length
        return self.query_max_length or default, self.doc_max_length or default

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize(x) if self.similarity == "cosine" else np.asarray(x, np.float32)

    # --- index ----------------------------------------------------------------------
    def artifacts(self, corpus: Corpus) -> list:  # of Artifact (cascade.core.indexing): a VectorsArtifact
        enc, (_, doc_len) = self.encoder, self._lengths()
        meta = {"stage": "biencoder", **enc.identity(), "doc_max_length": doc_len,
                "doc_prefix": self.doc_prefix, "similarity": self.similarity, "precision": enc.precision}
        path = artifact_dir(self.cache_dir, "dense", corpus=corpus.fingerprint, **meta)
        return [VectorsArtifact(path, meta, enc.doc_pass(doc_len, self.doc_prefix, self.batch_size),
                                self.chunk_size, self.progress, transform=self._normalize)]

    def load(self, corpus: Corpus, artifacts: list) -> None:
        (vectors,) = artifacts
        assert isinstance(vectors, VectorsArtifact)  # the one artifacts() lists
        self._vectors = vectors.open(corpus)

    @property
    def vectors(self) -> np.ndarray:
        """The (N, D) document vectors :meth:`load` opened (memory-mapped)."""
        if self._vectors is None:
            raise ConfigError(f"{self.name}: no document vectors are open; prepare the stage for a corpus first "
                              "(stage.index(corpus), or run it on a dataset)")
        return self._vectors

    def index_info(self) -> dict:
        """Index size: bytes of the document vectors."""
        return {"index_bytes": int(self._vectors.nbytes)} if self._vectors is not None else {}

    # --- queries --------------------------------------------------------------------
    def query_vectors(self, texts) -> np.ndarray:
        """(Q, D) query vectors (shared with other stages of this model through the encoder's memo)."""
        query_len, _ = self._lengths()
        pooled = self.encoder.encode(texts, query_len, self.query_prefix, self.batch_size, memo=True).pooled
        assert pooled is not None  # a sentence encoder's pass pools
        return self._normalize(pooled)

    def retrieve(self, batch: Batch, k: int | None) -> Candidates:
        with timed("encode"):
            queries = self.query_vectors(batch.query_texts)
        with timed("score"):
            idx, scores = topk_dot(queries, self.vectors, k or len(batch.corpus), self.retrieval_chunk,
                                   allowed=batch.row_mask)  # a filtered search, a saved index's deletions
        empty = np.array([not t.strip() for t in batch.query_texts], bool)
        idx[empty], scores[empty] = -1, -np.inf  # an empty query matches nothing
        return Candidates(idx, scores).topk(k)

    def score(self, batch: Batch) -> np.ndarray:
        with timed("encode"):
            queries = self.query_vectors(batch.query_texts)
        with timed("score"):
            return dot_scores(queries, self.vectors, batch.need_candidates().doc_idx)

    def __repr__(self) -> str:
        return f"BiEncoder(k={self.k}, model={self.model!r})"
