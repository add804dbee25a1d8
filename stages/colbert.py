"""ColBERT late interaction: MaxSim against a memory-mapped token index, fp16 or residual-compressed.

With a compressed index (``nbits``) ColBERT can also go first: PLAID's centroid-pruned search
retrieves from the whole corpus; ``search=exhaustive`` scores every document (the reference).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cascade.core.candidates import Batch, Candidates
from cascade.core.data import Corpus
from cascade.core.errors import ConfigError
from cascade.core.stage import Stage, check_positive
from cascade.core.timing import timed
from cascade.encoders.colbert_formats import FORMATS, load_token_encoder
from cascade.encoders.models import pick_device, resolve_model
from cascade.encoders.token import TokenEncoder
from cascade.index.residual_index import (
    FORMAT_VERSION as RESIDUAL_FORMAT,
    ResidualIndex,
    ResidualIndexArtifact,
    check_assignment,
    check_nbits,
)
from cascade.index.store import artifact_dir
from cascade.index.token_index import TokenIndex, TokenIndexArtifact
from cascade.kernels.maxsim import DEFAULT_BLOCK_ROWS, maxsim
from cascade.kernels.precision import STAGE_NOTE, resolve_compute_dtype, resolve_precision

log = logging.getLogger(__name__)


SEARCHES = ("plaid", "exhaustive")


def carried_scores(cands: Candidates, kept: np.ndarray) -> np.ndarray:
    """The incoming scores of the documents ``kept`` (Q, K') chose from ``cands`` (-inf at padding)."""
    width = int(max(cands.doc_idx.max(initial=0), kept.max(initial=0))) + 2
    rows = np.arange(len(kept))[:, None]
    keys = (rows * width + cands.doc_idx + 1).ravel()  # padding (-1) becomes key row*width: never looked up
    order = np.argsort(keys, kind="stable")
    want = (rows * width + kept + 1).ravel()
    pos = np.minimum(np.searchsorted(keys[order], want), len(keys) - 1)
    found = (keys[order][pos] == want) & (kept.ravel() >= 0)
    out = np.where(found, cands.scores.ravel()[order][pos], -np.inf)
    return out.reshape(kept.shape).astype(np.float32)


def _token_rows(index: TokenIndex | ResidualIndex):
    """What exhaustive search reads token vectors from: the fp16 array, or rows ``a:b`` decoded."""
    if isinstance(index, ResidualIndex):
        return lambda a, b: index.decompress_rows(np.arange(a, b))
    return index.tokens


class ColBERT(Stage):
    """Late interaction: the sum over query tokens of the best document-token similarity (MaxSim).

    Every document's token vectors are computed once per (corpus, model, settings) into the
    cache dir: a float16 token index, or with ``nbits`` a ColBERTv2 residual-compressed one
    (about 1/6 of the bytes at nbits=2). Given candidates it reranks them (exact MaxSim; with
    ``prune_to``, centroid interaction first keeps the best ``prune_to``). Given none it
    retrieves: ``search=plaid`` (the default with ``nbits``) or ``exhaustive``.

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
        nbits: None (fp16 index) or 1, 2, 4 bits per dimension of the compressed index.
        search: ``plaid`` (needs ``nbits``) or ``exhaustive``; None: plaid when compressed.
        ncells, centroid_score_threshold, ndocs: PLAID's knobs; None follows ``k`` as colbert-ai does.
        prune_to: when reranking more candidates than this, keep the best ``prune_to`` by
            centroid interaction before exact MaxSim (needs ``nbits``); None scores all exactly.
        num_centroids, kmeans_niter, points_per_centroid: codec training (None: colbert-ai's
            count, 2**floor(log2(16 sqrt(tokens)))).
        assignment: how tokens find their centroid: ``exact`` (all centroids), ``coarse`` (coarse
            cells first, then the centroids of the best few; with the two-level k-means) or ``auto``
            (exact up to 16,384 centroids, coarse above); part of the index's cache key.
        compute_dtype: ``float32`` or ``bfloat16`` for the MaxSim matmuls (reranking, exhaustive search, PLAID's exact
            stage) and PLAID's centroid scores
            (faster on CPUs with AVX-512 BF16 and on GPUs); ``auto`` (the default): bfloat16 where the
            device has it natively, else float32 (``experiments/bf16_defaults``: nDCG@10 within 0.001).
        device, precision, cache_dir, progress: as for :class:`~cascade.stages.biencoder.BiEncoder`
            (``precision``: the encoder's forward passes, not MaxSim, which follows ``compute_dtype``).
    """

    def __init__(self, k: int | None = 10, model: str | None = None, format: str = "auto",
                 query_max_length: int | None = None, doc_max_length: int | None = None, batch_size: int = 32,
                 chunk_size: int = 256, block_rows: int = DEFAULT_BLOCK_ROWS, nbits: int | None = None,
                 search: str | None = None, ncells: int | None = None, centroid_score_threshold: float | None = None,
                 ndocs: int | None = None, prune_to: int | None = None, num_centroids: int | None = None,
                 kmeans_niter: int = 4, points_per_centroid: int = 32, assignment: str = "auto",
                 compute_dtype: str = "auto",
                 device: str | None = None, precision: str = "auto", cache_dir: str | None = None,
                 progress: bool = True, fusion=None, name: str | None = None):
        super().__init__(k=k, fusion=fusion, name=name or "colbert")
        if format not in FORMATS:
            raise ConfigError(f"{self.name}: format {format!r} is unknown; use one of {', '.join(FORMATS)}")
        self.model, self.format = resolve_model(model), format
        positive = lambda v, what, **kw: check_positive(v, f"{self.name}.{what}", **kw)  # noqa: E731
        self.query_max_length = positive(query_max_length, "query_max_length", null_means="the model's own")
        self.doc_max_length = positive(doc_max_length, "doc_max_length", null_means="the model's own")
        self.batch_size = positive(batch_size, "batch_size", allow_none=False)
        self.chunk_size = positive(chunk_size, "chunk_size", allow_none=False)
        self.block_rows = positive(block_rows, "block_rows", allow_none=False)
        self.nbits = check_nbits(nbits, self.name)
        if search is not None and search not in SEARCHES:
            raise ConfigError(f"{self.name}.search {search!r} is unknown; use plaid or exhaustive")
        if search == "plaid" and self.nbits is None:
            raise ConfigError(f"{self.name}: search=plaid needs the compressed index; set nbits=2 (or 1 or 4), "
                              "or use search=exhaustive on the fp16 index")
        # search_mode, not search: Stage.search(query) is the ad-hoc search method
        self.search_mode = search or ("plaid" if self.nbits else "exhaustive")
        self.ncells = positive(ncells, "ncells", null_means="follow k as colbert-ai does")
        self.ndocs = positive(ndocs, "ndocs", null_means="follow k as colbert-ai does")
        self.centroid_score_threshold = None if centroid_score_threshold is None else float(centroid_score_threshold)
        self.prune_to = positive(prune_to, "prune_to", null_means="score every candidate exactly")
        if self.prune_to is not None and self.nbits is None:
            raise ConfigError(f"{self.name}: prune_to uses the centroids of the compressed index; set nbits=2 "
                              "(or 1 or 4), or prune_to=null")
        self.num_centroids = positive(num_centroids, "num_centroids", null_means="colbert-ai's count")
        self.kmeans_niter = positive(kmeans_niter, "kmeans_niter", allow_none=False)
        self.points_per_centroid = positive(points_per_centroid, "points_per_centroid", allow_none=False)
        self.assignment = check_assignment(assignment, self.name)
        self.compute_dtype = resolve_compute_dtype(compute_dtype, device, f"{self.name}.compute_dtype")  # effective
        self.device, self.cache_dir, self.progress = device, cache_dir, progress
        self.precision = resolve_precision(precision, device, f"{self.name}.precision", STAGE_NOTE)  # effective
        self._models: dict[str, TokenEncoder] = {}  # the encoder, loaded on first use; shared by copies
        self._index: TokenIndex | ResidualIndex | None = None  # opened by load(); see loaded_index
        self._queries: tuple | None = None

    @property
    def encoder(self) -> TokenEncoder:
        """The token encoder (format detected, model loaded on first use). Copies of this stage (``%``, the
        copy that ``rerank(query, docs)`` runs) share it, so a copy never loads the model again."""
        found = self._models.get("encoder")
        if found is None:
            found = self._models.setdefault("encoder", load_token_encoder(
                self.model, self.format, self.device, self.query_max_length, self.doc_max_length, self.batch_size,
                self.precision))
        return found

    # --- index ----------------------------------------------------------------------------
    def artifacts(self, corpus: Corpus) -> list:  # of Artifact (cascade.core.indexing): a token or residual index
        enc = self.encoder
        meta = {"stage": "colbert", **enc.settings()}
        tokens = TokenIndexArtifact(artifact_dir(self.cache_dir, "colbert", corpus=corpus.fingerprint, **meta), meta,
                                    enc.doc_pass(), self.chunk_size, self.progress)
        if self.nbits is None:
            return [tokens]
        meta = {**meta, "format_version": RESIDUAL_FORMAT, "nbits": self.nbits, "num_centroids": self.num_centroids,
                "kmeans_niter": self.kmeans_niter, "points_per_centroid": self.points_per_centroid,
                "assignment": self.assignment}
        path = artifact_dir(self.cache_dir, "colbert_residual", corpus=corpus.fingerprint, **meta)
        return [ResidualIndexArtifact(path, meta, enc.doc_pass(), self.chunk_size, self.progress, token_source=tokens)]

    def load(self, corpus: Corpus, artifacts: list) -> None:
        (index,) = artifacts
        assert isinstance(index, (TokenIndexArtifact, ResidualIndexArtifact))  # the one artifacts() lists
        self._index = index.open(corpus)

    def index_info(self) -> dict:
        """Index size: total bytes and bytes per token."""
        return self._index.info() if self._index is not None else {}

    @property
    def loaded_index(self) -> TokenIndex | ResidualIndex:
        """The index :meth:`load` opened: float16 token vectors, or residual-compressed ones (``nbits``)."""
        if self._index is None:
            raise ConfigError(f"{self.name}: no token index is open; prepare the stage for a corpus first "
                              "(stage.index(corpus), or run it on a dataset)")
        return self._index

    def _compressed_index(self, what: str) -> ResidualIndex:
        index = self.loaded_index
        if not isinstance(index, ResidualIndex):
            raise ConfigError(f"{self.name}: {what} needs the compressed index; set nbits=2 (or 1 or 4)")
        return index

    @property
    def compressed(self) -> bool:
        return isinstance(self._index, ResidualIndex)

    # --- scoring ----------------------------------------------------------------------------
    def _encode_queries(self, texts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        if self._queries is None or self._queries[0] != texts:  # pruning and scoring share one pass
            with timed("encode"):
                self._queries = (texts, *self.encoder.encode_queries(texts))
        return self._queries[1], self._queries[2]

    def exact_scores(self, queries: np.ndarray, mask: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
        """Exact MaxSim of ``queries`` against candidates ``doc_idx`` (compressed: decoded tile by tile)."""
        index = self.loaded_index
        device = pick_device(self.device) if self.device else None
        if isinstance(index, ResidualIndex):
            tokens, scorer = None, index.scorer(self.compute_dtype, device)
        else:
            tokens, scorer = index.tokens, None
        return maxsim(queries, mask, tokens, index.offsets, doc_idx, block_rows=self.block_rows,
                      compute_dtype=self.compute_dtype, scorer=scorer, device=device)

    def rerank(self, batch: Batch) -> Batch:
        cands = batch.candidates
        if self.prune_to is not None and cands is not None and cands.doc_idx.shape[1] > self.prune_to:
            self.prepare(batch.corpus)
            queries, mask = self._encode_queries(batch.query_texts)
            from cascade.kernels.plaid import prune_candidates

            index = self._compressed_index("prune_to")
            with timed("prune"):
                kept = prune_candidates(queries, mask, index.codec.centroids, index.codes, index.offsets,
                                        cands.doc_idx, self.prune_to)
            batch = batch.with_candidates(Candidates(kept, carried_scores(cands, kept)).topk(None))
        return super().rerank(batch)

    def score(self, batch: Batch) -> np.ndarray:
        queries, mask = self._encode_queries(batch.query_texts)
        with timed("score"):
            return self.exact_scores(queries, mask, batch.need_candidates().doc_idx)

    # what extra_features adds (learned fusion checks models against it)
    feature_columns = ("tok_mean", "tok_max", "tok_min")

    def extra_features(self, batch: Batch, cands: Candidates) -> dict[str, np.ndarray]:
        """Per-query-token maxima of each candidate summarized (:mod:`cascade.core.features`): their mean
        (``tok_mean``, MaxSim over the number of query tokens), largest (``tok_max``) and smallest (``tok_min``).
        Computed in float32 from the index's token vectors (compressed: decoded)."""
        import torch

        queries, qmask = self._encode_queries(batch.query_texts)
        index, shape = self.loaded_index, cands.doc_idx.shape
        out = {n: np.zeros(shape, np.float32) for n in ("tok_mean", "tok_max", "tok_min")}
        starts, ends = index.offsets[:-1], index.offsets[1:]
        for q in range(shape[0]):
            qv = np.asarray(queries[q], np.float32)[np.asarray(qmask[q], bool)]
            docs = cands.doc_idx[q]
            live = np.flatnonzero((docs >= 0) & (ends[np.maximum(docs, 0)] > starts[np.maximum(docs, 0)]))
            if not len(qv) or not len(live):
                continue
            a, b = starts[docs[live]], ends[docs[live]]
            if isinstance(index, ResidualIndex):
                vecs = index.decompress_rows(np.concatenate([np.arange(s, e) for s, e in zip(a, b)]))
            else:
                vecs = np.concatenate([index.tokens[s:e] for s, e in zip(a, b)])
            sim = (torch.as_tensor(vecs).float() @ torch.from_numpy(qv).T).numpy()  # (rows, query tokens)
            best = np.maximum.reduceat(sim, np.r_[0, np.cumsum(b - a)[:-1]], axis=0)  # (live, query tokens)
            out["tok_mean"][q, live], out["tok_max"][q, live] = best.mean(1), best.max(1)
            out["tok_min"][q, live] = best.min(1)
        return out

    def retrieve(self, batch: Batch, k: int | None) -> Candidates:
        import torch

        from cascade.kernels.plaid import exhaustive_search, plaid_search
        from cascade.kernels.plaid_plan import plan_search

        k = k or len(batch.corpus)
        queries, mask = self._encode_queries(batch.query_texts)
        empty = np.array([not t.strip() for t in batch.query_texts], bool)
        mask = mask & ~empty[:, None]
        index = self.loaded_index
        rows = len(batch.corpus) if batch.row_mask is None else max(1, int(batch.row_mask.sum()))
        plan = plan_search(k, rows, self.ncells, self.centroid_score_threshold, self.ndocs)
        exhaustive = self.search_mode != "plaid" or plan.exhaustive
        if self.search_mode == "plaid" and plan.exhaustive:
            logged = self.__dict__.setdefault("_exhaustive_logged", set())  # once per corpus and k, not per batch
            if (batch.corpus.fingerprint, k, rows) not in logged:
                logged.add((batch.corpus.fingerprint, k, rows))
                log.info("%s: searching exhaustively: %s (set ndocs, ncells or centroid_score_threshold to "
                         "force PLAID)", self.name, plan.reason)
        with timed("score"):
            if not exhaustive:
                index = self._compressed_index("search=plaid")
                params = plan.plaid_kwargs()
                # bf16: the centroid scores too (half the bytes read per query; the exact stage stays MaxSim)
                centroids: Any = (index.codec.centroids_tensor(torch.bfloat16) if self.compute_dtype == "bfloat16"
                                  else index.codec.centroids)  # plaid_search takes a tensor too
                # a filtered search (or a saved index's deletions) ranks only batch.row_mask's documents
                idx, scores = plaid_search(queries, mask, centroids, index.codes, index.offsets,
                                           index.ivf_docs, index.ivf_offsets, k, exact_fn=self.exact_scores, **params,
                                           allowed=batch.row_mask, fill=batch.allowed is not None)
            else:
                tokens = _token_rows(index)
                # bf16 where MaxSim reranks in bf16: the same stage scores a document the same way first or later
                idx, scores = exhaustive_search(queries, mask, tokens, index.offsets, k, allowed=batch.row_mask,
                                                compute_dtype=self.compute_dtype)
        idx[empty], scores[empty] = -1, -np.inf  # an empty query finds nothing
        return Candidates(idx, scores).topk(k)

    def __repr__(self) -> str:
        extra = f", nbits={self.nbits}, search={self.search_mode!r}" if self.nbits else ""
        return f"ColBERT(k={self.k}, model={self.model!r}, format={self.format!r}{extra})"
