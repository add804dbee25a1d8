"""Token encoders for late interaction, one interface over three checkpoint formats.

* ``plain``: any transformer's last hidden states, L2-normalized, special tokens
  dropped (the default, on the packaged all-MiniLM-L6-v2); shares its forward pass
  with a bi-encoder on the same model through :class:`~cascade.encoders.sentence.SentenceEncoder`.
* ``colbert_ai``: Stanford colbert-ai checkpoints (a BERT plus a ``linear``
  projection, ``[unused0]``/``[unused1]`` query/document markers, queries padded
  with ``[MASK]`` to a fixed length, punctuation skipped in documents).
* ``pylate``: PyLate checkpoints (a sentence-transformers folder with Dense
  projection modules and ``[Q] ``/``[D] `` prefix tokens).
"""
from __future__ import annotations

import json
import logging
import string
from pathlib import Path

import numpy as np

from cascade.encoders.sentence import Encoded, count_truncated, get_sentence_encoder, keep_at_least_one
from cascade.core.errors import CascadeError, ConfigError
from cascade.encoders.models import load_model, resolve_model
from cascade.encoders.token import PlainEncoder, ProjectedEncoder, TokenEncoder, load_state, read_json

log = logging.getLogger(__name__)

FORMATS = ("auto", "plain", "colbert_ai", "pylate")


def detect_format(folder: Path) -> str:
    """``colbert_ai``, ``pylate`` or ``plain``, from the files of a checkpoint folder."""
    config = read_json(folder / "config.json")
    if (folder / "artifact.metadata").is_file() or "HF_ColBERT" in (config.get("architectures") or []):
        return "colbert_ai"
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
    types = [str(m.get("type", "")) for m in modules]
    has_dense = any(t.endswith("Dense") for t in types)
    if has_dense and not any(t.endswith("Pooling") for t in types):
        return "pylate"
    if "query_prefix" in read_json(folder / "config_sentence_transformers.json") and has_dense:
        return "pylate"
    return "plain"


def local_folder(resolved: str, what: str = "ColBERT checkpoint") -> Path:
    """A local folder for ``resolved``: itself, or a (cached or downloaded) hub snapshot."""
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    skip = ["*.onnx", "onnx/*", "openvino/*", "*.tar", "*.tar.gz", "*.h5", "*.msgpack", "*.ot"]  # other runtimes
    return Path(load_model(resolved, what, lambda name, local_files_only: snapshot_download(
        name, local_files_only=local_files_only, ignore_patterns=skip)))


class ColbertAIEncoder(ProjectedEncoder):
    """Stanford colbert-ai checkpoints (``HF_ColBERT``: BERT + ``linear``; ``artifact.metadata``)."""

    format = "colbert_ai"

    def __init__(self, folder: Path, device=None, query_max_length=None, doc_max_length=None, batch_size=32):
        meta = read_json(folder / "artifact.metadata")
        super().__init__(folder, device, query_max_length or int(meta.get("query_maxlen", 32)),
                         doc_max_length or int(meta.get("doc_maxlen", 180)), batch_size)
        self.q_marker = meta.get("query_token_id", "[unused0]")
        self.d_marker = meta.get("doc_token_id", "[unused1]")
        self.mask_punctuation = bool(meta.get("mask_punctuation", True))
        self.attend_to_mask_tokens = bool(meta.get("attend_to_mask_tokens", False))

    def _doc_settings(self) -> dict:
        return {"marker": self.d_marker, "mask_punctuation": self.mask_punctuation}

    def _load(self) -> tuple:
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.folder)
        model = AutoModel.from_pretrained(self.folder).to(self.device).eval()
        state = load_state(self.folder, ["linear.weight"])
        if "linear.weight" not in state:
            raise CascadeError(f"{self.folder} is not a colbert-ai checkpoint: its weights have no linear.weight")
        self.skip_ids = sorted({tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
                               if self.mask_punctuation else set())
        return tok, model, [(state["linear.weight"].float().to(self.device), None, lambda x: x)]

    def _tensorize(self, texts: list[str], max_length: int, query: bool):
        tok = self.parts[0]
        enc = tok([". " + t for t in texts], padding="max_length" if query else "longest",
                  truncation=True, max_length=max_length, return_tensors="np")
        ids, attention = enc["input_ids"].copy(), enc["attention_mask"].copy()
        ids[:, 1] = tok.convert_tokens_to_ids(self.q_marker if query else self.d_marker)
        model_attention = attention
        if query:
            ids[ids == tok.pad_token_id] = tok.mask_token_id
            if self.attend_to_mask_tokens:
                model_attention = np.where(ids == tok.mask_token_id, 1, attention)
        return ids, attention, enc.get("token_type_ids"), model_attention

    def encode_queries(self, texts):
        texts = list(texts)
        tokens, counts = self._run(texts, lambda b: self._tensorize(b, self.query_max_length, True),
                                   lambda ids, att: np.ones(ids.shape, bool), [0] * len(texts))
        return Encoded(None, tokens, counts).padded()

    def encode_docs(self, texts, on_batch=None):
        texts, tok = list(texts), self.parts[0]
        truncated, lengths = count_truncated(tok, [". " + t for t in texts], self.doc_max_length)

        def keep(ids, attention):
            mask = attention.astype(bool) & ~np.isin(ids, self.skip_ids) & (ids != tok.pad_token_id)
            return keep_at_least_one(mask, attention)

        tokens, counts = self._run(texts, lambda b: self._tensorize(b, self.doc_max_length, False), keep,
                                   lengths, on_batch)
        return Encoded(None, tokens, counts, truncated)


class PyLateEncoder(ProjectedEncoder):
    """PyLate checkpoints: Transformer + Dense modules, ``[Q] ``/``[D] `` prefix tokens, [MASK] expansion."""

    format = "pylate"

    def __init__(self, folder: Path, device=None, query_max_length=None, doc_max_length=None, batch_size=32):
        cfg = read_json(folder / "config_sentence_transformers.json")
        super().__init__(folder, device, query_max_length or int(cfg.get("query_length") or 32),
                         doc_max_length or int(cfg.get("document_length") or 180), batch_size)
        self.q_prefix = cfg.get("query_prefix", "[Q] ")
        self.d_prefix = cfg.get("document_prefix", "[D] ")
        self.expansion = bool(cfg.get("do_query_expansion", True))
        self.attend_expansion = bool(cfg.get("attend_to_expansion_tokens", False)) and self.expansion
        self.skiplist_words = list(cfg.get("skiplist_words") or string.punctuation)
        self.modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))

    def _doc_settings(self) -> dict:
        return {"prefix": self.d_prefix, "skiplist": self.skiplist_words}

    def _load(self) -> tuple:
        import torch
        from transformers import AutoModel, AutoTokenizer

        first = next((m for m in self.modules if str(m.get("type", "")).endswith("Transformer")), None)
        if first is None:
            raise CascadeError(f"{self.folder}/modules.json names no Transformer module; not a PyLate checkpoint")
        base = self.folder / first.get("path", "")
        self.lowercase = bool(read_json(base / "sentence_bert_config.json").get("do_lower_case", False))
        tok = AutoTokenizer.from_pretrained(base)
        for prefix in (self.q_prefix, self.d_prefix):
            if prefix and tok.convert_tokens_to_ids(prefix) in (None, tok.unk_token_id):
                raise CascadeError(f"the tokenizer of {self.folder} has no {prefix!r} token; PyLate checkpoints "
                                   "save their prefix tokens - is this folder complete?")
        model = AutoModel.from_pretrained(base).to(self.device).eval()
        layers = []
        for module in self.modules:
            if str(module.get("type", "")).endswith("Dense"):
                path = self.folder / module["path"]
                cfg, state = read_json(path / "config.json"), load_state(path, ["linear.weight"])
                act = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity"))
                if act.endswith("Identity"):
                    fn = lambda x: x  # noqa: E731
                elif act.endswith("Tanh"):
                    fn = torch.tanh
                else:
                    raise CascadeError(f"{path}: Dense activation {act} is not supported (Identity or Tanh)")
                bias = state.get("linear.bias")
                layers.append((state["linear.weight"].float().to(self.device),
                               None if bias is None else bias.float().to(self.device), fn))
        self.skip_ids = sorted({tok.convert_tokens_to_ids(w) for w in self.skiplist_words})
        return tok, model, layers

    def _tensorize(self, texts: list[str], query: bool):
        tok = self.parts[0]
        prefix = self.q_prefix if query else self.d_prefix
        length = self.query_max_length if query else self.doc_max_length
        texts = [t.lower() for t in texts] if self.lowercase else texts
        pad = "max_length" if query and self.expansion else "longest"
        enc = tok(texts, padding=pad, truncation=True, max_length=length - 1 if prefix else length,
                  return_tensors="np")
        ids, attention = enc["input_ids"], enc["attention_mask"]
        if tok.mask_token_id is not None:  # PyLate pads (expands) with [MASK]
            ids = np.where(attention == 0, tok.mask_token_id, ids)
        types = enc.get("token_type_ids")
        if prefix:
            insert = lambda a, v: np.concatenate([a[:, :1], np.full((len(a), 1), v, a.dtype), a[:, 1:]], 1)  # noqa
            ids, attention = insert(ids, tok.convert_tokens_to_ids(prefix)), insert(attention, 1)
            types = None if types is None else insert(types, 0)
        model_attention = np.ones_like(attention) if query and self.attend_expansion else attention
        return ids, attention, types, model_attention

    def encode_queries(self, texts):
        texts = list(texts)
        keep = (lambda ids, att: np.ones(ids.shape, bool)) if self.expansion else (lambda ids, att: att.astype(bool))
        tokens, counts = self._run(texts, lambda b: self._tensorize(b, True), keep, [0] * len(texts))
        return Encoded(None, tokens, counts).padded()

    def encode_docs(self, texts, on_batch=None):
        texts, tok = list(texts), self.parts[0]
        room = self.doc_max_length - (1 if self.d_prefix else 0)
        truncated, lengths = count_truncated(tok, texts, room)

        def keep(ids, attention):
            return keep_at_least_one(attention.astype(bool) & ~np.isin(ids, self.skip_ids), attention)

        tokens, counts = self._run(texts, lambda b: self._tensorize(b, False), keep, lengths, on_batch)
        return Encoded(None, tokens, counts, truncated)


def load_token_encoder(model: str | None = None, format: str = "auto", device: str | None = None,
                       query_max_length: int | None = None, doc_max_length: int | None = None,
                       batch_size: int = 32) -> TokenEncoder:
    """The token encoder for ``model`` (None: the packaged MiniLM) in the given or detected format."""
    if format not in FORMATS:
        raise ConfigError(f"ColBERT format {format!r} is unknown; use one of {', '.join(FORMATS)}")
    resolved = resolve_model(model)
    if format == "auto":
        format = detect_format(local_folder(resolved))
        log.info("ColBERT checkpoint %s: %s format", resolved, format)
    if format == "plain":
        return PlainEncoder(get_sentence_encoder(resolved, device), query_max_length, doc_max_length, batch_size)
    cls = ColbertAIEncoder if format == "colbert_ai" else PyLateEncoder
    return cls(local_folder(resolved), device, query_max_length, doc_max_length, batch_size)
