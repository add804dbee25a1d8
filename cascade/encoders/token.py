"""The token-encoder interface of late interaction, and its plain-transformer implementation.

A :class:`TokenEncoder` turns queries into padded token-vector batches and documents
into packed token vectors (:class:`~cascade.encoders.sentence.Encoded`). :class:`PlainEncoder`
uses any transformer's normalized last hidden states (special tokens dropped) through
the shared :class:`~cascade.encoders.sentence.SentenceEncoder`, so a bi-encoder on the same
model shares its forward passes. :class:`ProjectedEncoder` is the base of the ColBERT
checkpoint formats (a transformer followed by linear projections), see
:mod:`cascade.encoders.colbert_formats`.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cascade.core.errors import CascadeError
from cascade.core.passes import solo_passes_active
from cascade.encoders.models import model_identity, pick_device, quiet_transformers
from cascade.encoders.sentence import DocPass, Encoded, SentenceEncoder, l2_normalize, length_batches
from cascade.kernels.precision import autocast, resolve_precision


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_state(path: Path, names: Sequence[str]) -> dict:
    """Tensors from ``model.safetensors`` or (weights only) ``pytorch_model.bin`` in ``path``."""
    import torch

    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CascadeError(f"{path} holds no model.safetensors or pytorch_model.bin; expected {', '.join(names)}")


class TokenEncoder:
    """Token vectors for queries and documents; see the module docstring for the formats.

    ``precision`` is the effective autocast precision of every forward pass (queries and documents).
    """

    format = "base"
    precision: str = "fp32"
    device: str | None = None

    def __init__(self, query_max_length: int, doc_max_length: int, batch_size: int):
        # every subclass resolves its lengths (its checkpoint's or the model's default) before this
        self.query_max_length, self.doc_max_length, self.batch_size = query_max_length, doc_max_length, batch_size

    def settings(self) -> dict:
        """Everything that changes document token vectors (for cache keys), the effective precision included."""
        raise NotImplementedError

    def doc_pass(self) -> DocPass:
        """The document pass; passes with equal keys are shared with other stages."""
        key = (self.format, tuple(sorted(map(str, self.settings().items()))))
        return DocPass(key, self.encode_docs, precision=self.precision, device=self.device)

    def encode_queries(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, L, dim) float32 query token vectors and their (n, L) bool mask."""
        raise NotImplementedError

    def encode_docs(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> Encoded:
        raise NotImplementedError


class PlainEncoder(TokenEncoder):
    """Normalized last hidden states of any transformer, special tokens dropped; no prefixes."""

    format = "plain"

    def __init__(self, shared: SentenceEncoder, query_max_length=None, doc_max_length=None, batch_size=32):
        super().__init__(query_max_length or shared.default_max_length,
                         doc_max_length or shared.default_max_length, batch_size)
        self.shared = shared
        self.precision, self.device = shared.precision, shared.device

    def settings(self) -> dict:
        return {"format": self.format, **self.shared.identity(), "doc_max_length": self.doc_max_length,
                "precision": self.precision}

    def doc_pass(self) -> DocPass:
        # the sentence encoder makes the key, so a bi-encoder on this model shares the pass
        return self.shared.doc_pass(self.doc_max_length, "", self.batch_size)

    def encode_queries(self, texts):
        return self.shared.encode(texts, self.query_max_length, "", self.batch_size, memo=True).padded()

    def encode_docs(self, texts, on_batch=None):
        return self.shared.encode(texts, self.doc_max_length, "", self.batch_size, on_batch=on_batch)


class ProjectedEncoder(TokenEncoder):
    """A transformer followed by linear projections, run directly with transformers (at ``precision``)."""

    def __init__(self, folder: Path, device: str | None, query_max_length, doc_max_length, batch_size,
                 precision: str = "auto"):
        super().__init__(query_max_length, doc_max_length, batch_size)
        self.folder, self.device = folder, pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self._loaded: tuple | None = None

    def _load(self) -> tuple:
        raise NotImplementedError

    def doc_pass(self) -> DocPass:
        """As :meth:`TokenEncoder.doc_pass`, with a recipe that rebuilds this encoder in another process."""
        recipe = functools.partial(projected_pass, type(self), str(self.folder), self.settings(),
                                   self.query_max_length, self.doc_max_length, self.batch_size,
                                   precision=self.precision)
        return DocPass(super().doc_pass().key, self.encode_docs, recipe, self.precision, self.device)

    @property
    def parts(self) -> tuple:
        """(tokenizer, transformer, [projection layer, ...]) loaded on first use; each layer maps hidden states."""
        if self._loaded is None:
            with quiet_transformers():
                self._loaded = self._load()
        return self._loaded

    def _forward(self, ids: np.ndarray, attention: np.ndarray, token_types: np.ndarray | None) -> np.ndarray:
        import torch

        _, model, layers = self.parts
        feats = {"input_ids": torch.as_tensor(ids), "attention_mask": torch.as_tensor(attention)}
        if token_types is not None:
            feats["token_type_ids"] = torch.as_tensor(token_types)
        with torch.inference_mode(), autocast(self.precision, self.device):
            hidden = model(**{k: v.to(self.device) for k, v in feats.items()}).last_hidden_state
            for layer in layers:
                hidden = layer(hidden)
        return hidden.float().cpu().numpy()

    def _run(self, texts: list[str], encode: Callable, keep_rows: Callable, lengths: list[int],
             on_batch=None) -> tuple[np.ndarray, np.ndarray]:
        """Encode in length-sorted batches; keep the rows ``keep_rows(ids, attention)`` selects."""
        per_text: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(texts)
        for rows in length_batches(lengths, 1 if solo_passes_active() else self.batch_size):
            ids, attention, types, model_attention = encode([texts[i] for i in rows])
            hidden = self._forward(ids, model_attention, types)
            keep = keep_rows(ids, attention)
            for j, row in enumerate(rows):
                per_text[row] = l2_normalize(hidden[j][keep[j]])
            if on_batch is not None:
                on_batch(len(rows))
        counts = np.array([len(t) for t in per_text], np.int64)
        return (np.concatenate(per_text) if texts else np.zeros((0, 0), np.float32)), counts

    def settings(self) -> dict:
        return {"format": self.format, **model_identity(str(self.folder)), "doc_max_length": self.doc_max_length,
                "precision": self.precision, **self._doc_settings()}

    def _doc_settings(self) -> dict:
        return {}


def projected_pass(cls: type, folder: str, settings: dict, query_max_length, doc_max_length, batch_size: int,
                   device: str, precision: str = "auto") -> Callable[..., Encoded]:
    """:meth:`ProjectedEncoder.doc_pass` rebuilt in another process on ``device`` (model loaded now, once),
    at the effective ``precision`` it was planned with."""
    encoder = cls(Path(folder), device, query_max_length, doc_max_length, batch_size, precision)
    if encoder.settings() != settings:
        raise CascadeError(f"the checkpoint {folder} on this worker is not the one the corpus pass was planned "
                           "with (its files or settings differ); give every machine the same checkpoint files "
                           "at the same path")
    encoder.parts  # noqa: B018 - load the weights once, before the first chunk
    return encoder.encode_docs
