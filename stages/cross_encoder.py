"""Cross-encoder: a sentence-transformers ``CrossEncoder`` scores every (query, candidate) pair."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cascade.core.candidates import Batch
from cascade.core.data import Corpus
from cascade.core.passes import solo_passes_active
from cascade.core.stage import Stage, check_positive
from cascade.core.timing import timed
from cascade.encoders.models import load_model, pick_device, resolve_model

log = logging.getLogger(__name__)

DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L-6-v2"


class CrossEncoder(Stage):
    """Rerank candidates with a cross-encoder reading query and document together (the costliest, best stage).

    Args:
        k: documents kept per query.
        model: a CrossEncoder name (online) or a local folder; there is no packaged one,
            so offline runs need a local copy (the error says how to make one).
        max_length: tokens of the (query, document) pair; longer pairs are truncated. None (the
            default) keeps the checkpoint's own saved limit (its tokenizer's ``model_max_length``,
            what ``sentence_transformers.CrossEncoder(model)`` uses), so scores equal the model's own;
            a number overrides it.
        batch_size: pairs per forward pass.
        device: ``cpu``, ``cuda``...; None picks a GPU when there is one.

    Scores are the model's raw logits (no sigmoid), so fusion sees an unsquashed scale.
    """

    def __init__(self, k: int | None = 10, model: str = DEFAULT_MODEL, max_length: int | None = None,
                 batch_size: int = 32, device: str | None = None, fusion=None, name: str | None = None):
        super().__init__(k=k, fusion=fusion, name=name or "cross_encoder")
        self.model = resolve_model(model)
        self.max_length = check_positive(max_length, f"{self.name}.max_length", null_means="the model's own")
        self.batch_size = check_positive(batch_size, f"{self.name}.batch_size", allow_none=False)
        self.device = device
        self._models: dict[str, Any] = {}  # the model, loaded on first use; shared by copies of this stage

    def _load(self):
        """The model, loaded on first use; copies of this stage (``%``, the copy that ``rerank(query, docs)``
        runs) share it, so a copy never loads it again."""
        found = self._models.get("model")
        if found is None:
            from sentence_transformers import CrossEncoder as STCrossEncoder

            def factory(name: str, local_files_only: bool):
                return STCrossEncoder(name, device=pick_device(self.device), max_length=self.max_length,
                                      local_files_only=local_files_only)

            found = self._models.setdefault("model", load_model(self.model, "cross-encoder", factory, "CrossEncoder"))
        return found

    def load(self, corpus: Corpus, artifacts: list) -> None:
        """Nothing to index; load the model now so a bad model fails before any query work."""
        self._load()

    def score(self, batch: Batch) -> np.ndarray:
        cands = batch.need_candidates()
        rows, cols = np.nonzero(cands.mask)
        texts = batch.corpus.texts
        pairs = [(batch.query_texts[q], texts[d]) for q, d in zip(rows, cands.doc_idx[rows, cols])]
        out = np.zeros(cands.doc_idx.shape, np.float32)
        with timed("score"):
            if pairs:
                out[rows, cols] = self._predict(pairs, np.bincount(rows, minlength=len(batch.query_texts)))
        return out

    def _predict(self, pairs: list, per_query) -> np.ndarray:
        """Logits of ``pairs`` (grouped by query, ``per_query`` pairs each); inside
        :func:`cascade.core.passes.solo_passes` one query's pairs per call, as that query alone."""
        import torch

        model = self._load()
        groups = [len(pairs)]
        if solo_passes_active():
            groups = [int(n) for n in per_query if n]
        flat, start = [], 0
        for n in groups:
            flat.append(np.asarray(model.predict(pairs[start:start + n], batch_size=self.batch_size,
                                                 show_progress_bar=False, activation_fn=torch.nn.Identity(),
                                                 convert_to_numpy=True), np.float32).reshape(n))
            start += n
        return np.concatenate(flat)

    def __repr__(self) -> str:
        return f"CrossEncoder(k={self.k}, model={self.model!r})"
