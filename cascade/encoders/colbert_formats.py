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

from cascade.core.errors import CascadeError, ConfigError
from cascade.encoders.models import load_model, resolve_model
from cascade.encoders.sentence import Encoded, count_truncated, get_sentence_encoder, keep_at_least_one
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

    def __init__(self, folder: Path, device=None, query_max_length=None, doc_max_length=None, batch_size=32,
                 precision: str = "auto"):
        meta = read_json(folder / "artifact.metadata")
        super().__init__(folder, device, query_max_length or int(meta.get("query_maxlen", 32)),
                         doc_max_length or int(meta.get("doc_maxlen", 180)), batch_size, precision)
        self.q_marker = meta.get("query_token_id", "[unused0]")
        self.d_marker = meta.get("doc_token_id", "[unused1]")
        self.mask_punctuation = bool(meta.get("mask_punctuation", True))
        self.attend_to_mask_tokens = bool(meta.get("attend_to_mask_tokens", False))

    def _doc_settings(self) -> dict:
        return {"marker": self.d_marker, "mask_punctuation": self.mask_punctuation}

    def _load(self) -> tuple:
        import torch
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.folder)
        model = AutoModel.from_pretrained(self.folder).to(self.device).eval()
        state = load_state(self.folder, ["linear.weight"])
        if "linear.weight" not in state:
            raise CascadeError(f"{self.folder} is not a colbert-ai checkpoint: its weights have no linear.weight")
        self.skip_ids = sorted({tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
                               if self.mask_punctuation else set())
        weight = state["linear.weight"].float().to(self.device)
        return tok, model, [lambda hidden: torch.nn.functional.linear(hidden, weight)]

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


class _PyLateDense:
    """One PyLate ``Dense`` module, computed as PyLate 1.6's ``Dense.forward`` does::

        out = activation(x @ linear.weight.T + linear.bias)
        if use_residual: out = out + (x if in_features == out_features else x @ residual.weight.T)

    :meth:`load` refuses every setting it cannot compute exactly so (an unknown key or
    activation, a value of the wrong kind, weights that disagree with the config), so a
    checkpoint never loads with a setting silently dropped.
    """

    KEYS = ("in_features", "out_features", "bias", "activation_function", "use_residual",
            "module_input_name", "module_output_name")  # the last two: sentence-transformers 6's Dense
    ACTIVATIONS = {"torch.nn.modules.linear.Identity": None, "torch.nn.Identity": None,
                   "torch.nn.modules.activation.Tanh": "tanh", "torch.nn.Tanh": "tanh"}

    def __init__(self, weight, bias, activation: str | None, residual):
        self.weight, self.bias, self.activation, self.residual = weight, bias, activation, residual
        self.out_features = int(weight.shape[0])

    def __call__(self, hidden):
        import torch

        out = torch.nn.functional.linear(hidden, self.weight, self.bias)
        if self.activation == "tanh":
            out = torch.tanh(out)
        if self.residual is True:
            out = out + hidden
        elif self.residual is not None:
            out = out + torch.nn.functional.linear(hidden, self.residual)
        return out

    @classmethod
    def load(cls, path: Path, width: int, device) -> _PyLateDense:
        """The Dense module saved in ``path``, whose input has ``width`` features."""
        file = path / "config.json"
        if not file.is_file():
            raise CascadeError(f"{file} is missing: PyLate reads each Dense module's settings from it")

        def refuse(setting: str, problem: str, fix: str) -> CascadeError:
            return CascadeError(f"{file}: Dense setting {setting} {problem}; cascade refuses it rather than "
                                f"score differently from PyLate. Fix: {fix}")

        cfg = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise refuse("file", "is not a JSON object", "save the module again with PyLate")
        for key in cfg:
            if key not in cls.KEYS:
                raise refuse(repr(key), f"is unknown (cascade implements {', '.join(cls.KEYS)}), and PyLate 1.6's "
                             "Dense takes no such argument either",
                             "remove it from the file if it does not change the vectors, else encode with the "
                             "library that wrote it")

        def integer(key: str) -> int:
            value = cfg.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise refuse(key, f"is {value!r}, not a positive integer", f"write the layer's {key} as a number")
            return value

        def flag(key: str, default: bool) -> bool:
            value = cfg.get(key, default)
            if not isinstance(value, bool):
                raise refuse(key, f"is {value!r}, not true or false", f"write {key} as true or false")
            return value

        for key, allowed in (("module_input_name", ("token_embeddings",)),
                             ("module_output_name", ("token_embeddings", None))):  # None: as the input
            if cfg.get(key, "token_embeddings") not in allowed:
                raise refuse(f"{key}={cfg[key]!r}", "is not implemented: cascade projects the token embeddings, "
                             "as PyLate's Dense does", f"set {key} to \"token_embeddings\" (or remove it) if "
                             "this Dense is meant to project tokens")
        in_features, out_features = integer("in_features"), integer("out_features")
        has_bias, use_residual = flag("bias", True), flag("use_residual", False)
        activation = cfg.get("activation_function")
        if activation not in cls.ACTIVATIONS:
            raise refuse(f"activation_function={activation!r}", "is not implemented (cascade computes "
                         "torch.nn.modules.linear.Identity and torch.nn.modules.activation.Tanh)",
                         "encode with PyLate, or add the activation to cascade's PyLate loader "
                         "(cascade/encoders/colbert_formats.py)")
        if in_features != width:
            raise refuse("in_features", f"is {in_features} but the layer before it outputs {width} features",
                         "make in_features the width of the previous layer (PyLate would fail on it too)")

        state = load_state(path, ["linear.weight"])
        expected: dict[str, tuple[int, ...]] = {"linear.weight": (out_features, in_features)}
        if has_bias:
            expected["linear.bias"] = (out_features,)
        if use_residual and in_features != out_features:
            expected["residual.weight"] = (out_features, in_features)
        why = {"linear.bias": "bias", "residual.weight": "use_residual (with in_features != out_features)"}
        for name, shape in expected.items():
            if name not in state:
                raise refuse(why.get(name, "weights"), f"needs a {name} tensor, which {path} lacks",
                             "set the config to match the saved weights, or save the module again")
            if tuple(state[name].shape) != shape:
                raise refuse("in_features/out_features", f"is {in_features}/{out_features} but {name} has shape "
                             f"{tuple(state[name].shape)}", "make the config match the saved weights")
        extra = sorted(set(state) - set(expected))
        if extra:
            which = "bias" if "linear.bias" in extra else "use_residual" if "residual.weight" in extra else "weights"
            raise refuse(which, f"leaves the saved tensor(s) {', '.join(extra)} unused",
                         "set the config to match the saved weights (PyLate refuses unexpected tensors too)")
        weight = state["linear.weight"].float().to(device)
        bias = state["linear.bias"].float().to(device) if has_bias else None
        residual = (None if not use_residual else True if in_features == out_features
                    else state["residual.weight"].float().to(device))
        return cls(weight, bias, cls.ACTIVATIONS[activation], residual)


class PyLateEncoder(ProjectedEncoder):
    """PyLate checkpoints: Transformer + Dense modules, ``[Q] ``/``[D] `` prefix tokens, [MASK] expansion."""

    format = "pylate"

    def __init__(self, folder: Path, device=None, query_max_length=None, doc_max_length=None, batch_size=32,
                 precision: str = "auto"):
        cfg = read_json(folder / "config_sentence_transformers.json")
        super().__init__(folder, device, query_max_length or int(cfg.get("query_length") or 32),
                         doc_max_length or int(cfg.get("document_length") or 180), batch_size, precision)
        self.q_prefix = cfg.get("query_prefix", "[Q] ")
        self.d_prefix = cfg.get("document_prefix", "[D] ")
        self.expansion = bool(cfg.get("do_query_expansion", True))
        self.attend_expansion = bool(cfg.get("attend_to_expansion_tokens", False)) and self.expansion
        self.skiplist_words = list(cfg.get("skiplist_words") or string.punctuation)
        self.modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))

    def _doc_settings(self) -> dict:
        return {"prefix": self.d_prefix, "skiplist": self.skiplist_words}

    def _load(self) -> tuple:
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
        layers, width = [], int(model.config.hidden_size)
        for module in self.modules:
            kind = str(module.get("type", ""))
            if module is first:
                continue
            if not kind.endswith("Dense"):  # PyLate turns every module after the first into a Dense
                raise CascadeError(f"{self.folder}/modules.json: module {module.get('name')!r} is a {kind}; a PyLate "
                                   "checkpoint is a Transformer followed by Dense modules only, and cascade would "
                                   "skip it. Remove it from modules.json if it does not change the token vectors")
            layer = _PyLateDense.load(self.folder / module.get("path", ""), width, self.device)
            layers.append(layer)
            width = layer.out_features
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
                       batch_size: int = 32, precision: str = "auto") -> TokenEncoder:
    """The token encoder for ``model`` (None: the packaged MiniLM) in the given or detected format, its
    forward passes at ``precision`` (see :mod:`cascade.kernels.precision`)."""
    if format not in FORMATS:
        raise ConfigError(f"ColBERT format {format!r} is unknown; use one of {', '.join(FORMATS)}")
    resolved = resolve_model(model)
    if format == "auto":
        format = detect_format(local_folder(resolved))
        log.info("ColBERT checkpoint %s: %s format", resolved, format)
    if format == "plain":
        return PlainEncoder(get_sentence_encoder(resolved, device, precision), query_max_length, doc_max_length,
                            batch_size)
    cls = ColbertAIEncoder if format == "colbert_ai" else PyLateEncoder
    return cls(local_folder(resolved), device, query_max_length, doc_max_length, batch_size, precision)
