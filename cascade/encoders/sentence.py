"""The shared sentence encoder: one forward pass gives both pooled vectors and token vectors.

A bi-encoder needs each text's pooled vector; a ColBERT stage on plain transformer
token embeddings needs the per-token vectors of the very same forward pass. Stages
that name the same model get the same :class:`SentenceEncoder` from
:func:`get_sentence_encoder`, so a corpus or a query batch is encoded once for both:
documents through :mod:`cascade.index.encoding` (one pass fills every stage's
cache), queries through a memo that lasts one pipeline run.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cascade.core.errors import CascadeError
from cascade.core.passes import solo_passes_active
from cascade.core.timing import run_memo
from cascade.encoders.models import load_model, model_identity, pick_device, resolve_model
from cascade.kernels.precision import autocast, resolve_precision

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Encoded:
    """Encoder output for a list of texts.

    ``pooled`` (n, D) float32 or None; ``tokens`` (T, d) float32 holds every text's
    kept token vectors back to back, text ``i`` owning ``lengths[i]`` rows;
    ``truncated`` counts texts cut at the maximum length.
    """

    pooled: np.ndarray | None
    tokens: np.ndarray
    lengths: np.ndarray
    truncated: int = 0

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """Token vectors as (n, L, d) zero-padded plus an (n, L) bool mask of real tokens."""
        n, width = len(self.lengths), int(self.lengths.max(initial=0))
        out = np.zeros((n, width, self.tokens.shape[1]), np.float32)
        mask = np.arange(width)[None, :] < self.lengths[:, None]
        out[mask] = self.tokens
        return out, mask


@dataclass(frozen=True)
class DocPass:
    """A forward pass over documents, as its encoder defines it.

    ``key`` is made by the encoder from everything that changes the pass's output (model
    content, max length, prefix...): two stages whose encoders return equal keys get
    their artifacts from one shared pass. ``encode(texts, on_batch)`` runs it.
    ``recipe`` (picklable) rebuilds the pass in another process: ``recipe(device)`` loads the
    model there once and returns an ``encode`` function (Ray workers); None: this process only.
    ``precision``: the effective autocast precision the pass runs at wherever it runs (fp32, bf16,
    fp16; :mod:`cascade.kernels.precision`), also part of ``key``, resolved for ``device`` (where the
    pass was planned); None for a pass that does not say.
    """

    key: Hashable
    encode: Callable[[list[str], Callable[[int], None] | None], Encoded] = field(compare=False, repr=False)
    recipe: Callable[[str], Callable[..., Encoded]] | None = field(default=None, compare=False, repr=False)
    precision: str | None = field(default=None, compare=False)
    device: str | None = field(default=None, compare=False)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


# Texts are padded to a multiple of this many tokens (or to max_length), whatever batch they are in.
PAD_MULTIPLE = 8


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first) to limit padding."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def bucket_batches(lengths: Sequence[int], batch_size: int, max_length: int) -> list[tuple[np.ndarray, int]]:
    """``(indices, padded length)`` batches in which every text's padded length depends on itself alone.

    A text of ``n`` tokens (``min(n, max_length)`` after truncation) is padded to the next multiple
    of :data:`PAD_MULTIPLE`, capped at ``max_length``, and batched only with texts padded alike
    (longest first). The transformer then sees the same shapes for a text alone and in any batch,
    so its vectors do not depend on its neighbours: a query answered inside a server's batch
    scores exactly as it does alone, and a document encoded for an added batch as in a full build.
    """
    kept = np.minimum(np.asarray(lengths, np.int64), max_length)
    padded = np.minimum(-(-kept // PAD_MULTIPLE) * PAD_MULTIPLE, max_length)
    order = np.argsort(-padded, kind="stable")
    batches = []
    for value in np.unique(padded)[::-1]:
        group = order[padded[order] == value]
        batches += [(group[i:i + batch_size], int(value)) for i in range(0, len(group), batch_size)]
    return batches


def count_truncated(tokenizer, texts: Sequence[str], max_length: int) -> tuple[int, list[int]]:
    """How many texts exceed ``max_length`` tokens (special tokens included), and every text's length."""
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    lengths = [len(x) for x in ids]
    return sum(length > max_length for length in lengths), lengths


def keep_at_least_one(keep: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """Rows where nothing is kept keep their first attended position, so no text ends up without vectors."""
    empty = ~keep.any(axis=1)
    if empty.any():
        first = np.argmax(attention, axis=1)
        keep = keep.copy()
        keep[np.flatnonzero(empty), first[empty]] = True
    return keep


class SentenceEncoder:
    """A sentence-transformers model, loaded on first use, encoding texts in one pass.

    Token vectors are the transformer's last hidden states, L2-normalized, with the
    special tokens ([CLS], [SEP], padding...) dropped; pooled vectors are the model's
    own sentence embeddings (pooling, dense and normalize modules included). Every forward
    pass, of queries and documents alike, runs at ``precision`` resolved on ``device``
    (:func:`~cascade.kernels.precision.resolve_precision`; ``self.precision`` is the effective one).
    """

    def __init__(self, model: str | None = None, device: str | None = None, precision: str = "auto"):
        self.name = resolve_model(model)
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self._model = None
        self._lock = threading.Lock()

    # --- model -------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            def factory(name: str, local_files_only: bool):
                return SentenceTransformer(name, device=self.device, local_files_only=local_files_only)

            self._model = load_model(self.name, "sentence-transformers model", factory, "SentenceTransformer").eval()
            log.info("loaded %s on %s", self.name, self.device)
        return self._model

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def identity(self) -> dict:
        return model_identity(self.name)

    def doc_pass(self, max_length: int, prefix: str = "", batch_size: int = 32) -> DocPass:
        """The document pass (pooled and token vectors) at these settings; see :class:`DocPass`."""
        identity = tuple(sorted(self.identity().items()))
        key = ("sentence", identity, int(max_length), prefix, self.precision)
        recipe = functools.partial(sentence_pass, self.name, identity, int(max_length), prefix, int(batch_size),
                                   precision=self.precision)

        def encode(texts: list[str], on_batch: Callable[[int], None] | None = None) -> Encoded:
            return self.encode(texts, max_length, prefix, batch_size, on_batch=on_batch)

        return DocPass(key, encode, recipe, self.precision, self.device)

    @property
    def default_max_length(self) -> int:
        return int(self.model.max_seq_length or 512)

    def _drop_ids(self) -> np.ndarray:
        tok = self.tokenizer
        ids = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}
        return np.array(sorted(i for i in ids if i is not None), dtype=np.int64)

    # --- encoding ----------------------------------------------------------------------
    def encode(self, texts: Sequence[str], max_length: int, prefix: str = "", batch_size: int = 32,
               memo: bool = False, on_batch: Callable[[int], None] | None = None) -> Encoded:
        """Pooled and token vectors of ``prefix + text`` for every text, truncated to ``max_length`` tokens.

        With ``memo=True``, inside a pipeline run (:func:`cascade.core.timing.run_scope`), the result
        is kept for a repeat call with the same texts and settings during that run: stages
        sharing this encoder share the query pass, and the next run pays for its own.
        """
        key = (tuple(texts), int(max_length), prefix)
        shared = run_memo(self) if memo else None
        with self._lock:
            if shared is not None and key in shared:
                return shared[key]
            result = self._encode([prefix + t for t in texts], int(max_length), batch_size, on_batch)
            if shared is not None:
                shared[key] = result
        return result

    def _encode(self, texts: list[str], max_length: int, batch_size: int,
                on_batch: Callable[[int], None] | None) -> Encoded:
        import torch

        model, tok = self.model, self.tokenizer
        truncated, lengths = count_truncated(tok, texts, max_length)
        dim_pooled = model.get_embedding_dimension()
        pooled = np.zeros((len(texts), dim_pooled), np.float32)
        per_text: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(texts)
        drop = self._drop_ids()
        if solo_passes_active():  # a server's merged batch: each text alone, as a lone request
            batch_size = 1
        for rows, padded in bucket_batches(lengths, batch_size, max_length):
            feats = tok([texts[i] for i in rows], padding="max_length", truncation=True,
                        max_length=padded, return_tensors="pt")
            feats = {k: v.to(self.device) for k, v in feats.items()}
            with torch.inference_mode(), autocast(self.precision, self.device):
                out = model(dict(feats))
            pooled[rows] = out["sentence_embedding"].float().cpu().numpy()
            hidden = out["token_embeddings"].float().cpu().numpy()
            ids = feats["input_ids"].cpu().numpy()
            attention = feats["attention_mask"].cpu().numpy().astype(bool)
            keep = keep_at_least_one(attention & ~np.isin(ids, drop), attention)
            for j, row in enumerate(rows):
                per_text[row] = l2_normalize(hidden[j][keep[j]])
            if on_batch is not None:
                on_batch(len(rows))
        counts = np.array([len(t) for t in per_text], np.int64)
        tokens = np.concatenate(per_text) if len(texts) else np.zeros((0, 0), np.float32)
        return Encoded(pooled, tokens, counts, truncated)


def sentence_pass(name: str, identity: tuple, max_length: int, prefix: str, batch_size: int,
                  device: str, precision: str = "auto") -> Callable[..., Encoded]:
    """:meth:`SentenceEncoder.doc_pass` rebuilt in another process on ``device`` (model loaded now, once).

    The model found there must have the content the pass's key names, else nothing is encoded; the
    pass runs at the effective ``precision`` it was planned with (an error where ``device`` lacks it).
    """
    encoder = SentenceEncoder(name, device, precision)
    if tuple(sorted(encoder.identity().items())) != tuple(identity):
        raise CascadeError(f"the model {name!r} on this worker is not the one the corpus pass was planned with "
                           f"(identity {dict(encoder.identity())} here, {dict(identity)} there); give every "
                           "machine the same model files at the same path (or the same hub revision)")
    encoder.model  # noqa: B018 - load the weights once, before the first chunk
    return lambda texts, on_batch=None: encoder.encode(texts, max_length, prefix, batch_size, on_batch=on_batch)


_REGISTRY: dict[tuple[str, str, str], SentenceEncoder] = {}
_REGISTRY_LOCK = threading.Lock()


def get_sentence_encoder(model: str | None = None, device: str | None = None,
                         precision: str = "auto") -> SentenceEncoder:
    """The process-wide encoder for (model, device, effective precision): stages that agree on all three
    share it (and its passes)."""
    name, dev = resolve_model(model), pick_device(device)
    effective = resolve_precision(precision, dev)
    with _REGISTRY_LOCK:
        if (name, dev, effective) not in _REGISTRY:
            _REGISTRY[(name, dev, effective)] = SentenceEncoder(name, dev, effective)
        return _REGISTRY[(name, dev, effective)]


def clear_encoders() -> None:
    """Forget every shared encoder (frees their models)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
