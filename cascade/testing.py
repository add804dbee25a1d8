"""Tiny randomly initialised checkpoints in every supported format, for tests and examples.

Each builder writes a complete model folder (a 2-layer BERT with the all-MiniLM-L6-v2
tokenizer, hidden size 32 by default) that the stages load like a real checkpoint:
``tiny_sentence_transformer`` (plain / bi-encoder), ``tiny_colbert_ai`` (Stanford
colbert-ai layout), ``tiny_pylate`` (PyLate layout) and ``tiny_cross_encoder``.
Building one takes well under a second and needs no network.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from cascade.encoders.models import default_model_path, quiet_transformers

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _bert_config(hidden: int = 32, layers: int = 2, max_positions: int = 512, **extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=2 * hidden, max_position_embeddings=max_positions, **extra)


def _copy_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    source = default_model_path()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)


def tiny_bert(folder: str | Path, seed: int = 0, hidden: int = 32) -> Path:
    """A random 2-layer ``BertModel`` with the MiniLM tokenizer, saved with ``save_pretrained``."""
    import torch
    from transformers import BertModel

    folder = Path(folder)
    torch.manual_seed(seed)
    _copy_tokenizer(folder)
    with quiet_transformers():
        BertModel(_bert_config(hidden)).eval().save_pretrained(folder)
    return folder


def tiny_sentence_transformer(folder: str | Path, seed: int = 0, hidden: int = 32, max_seq_length: int = 64,
                              normalize: bool = True) -> Path:
    """A sentence-transformers folder: Transformer (tiny BERT) + mean Pooling (+ Normalize unless
    ``normalize=False``)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = Path(folder)
    bert = tiny_bert(folder.with_name(folder.name + "-bert"), seed, hidden)
    with quiet_transformers():
        modules = [Transformer(str(bert), max_seq_length=max_seq_length), Pooling(hidden, "mean")]
        modules += [Normalize()] if normalize else []
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def tiny_colbert_ai(folder: str | Path, seed: int = 0, hidden: int = 32, dim: int = 16, query_maxlen: int = 16,
                    doc_maxlen: int = 48, attend_to_mask_tokens: bool = False) -> Path:
    """A colbert-ai ``HF_ColBERT`` checkpoint: ``bert.*`` + ``linear.weight`` weights and ``artifact.metadata``."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertModel

    folder = Path(folder)
    torch.manual_seed(seed)
    _copy_tokenizer(folder)
    config = _bert_config(hidden)
    bert = BertModel(config).eval()
    linear = torch.nn.Linear(hidden, dim, bias=False)
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    state["linear.weight"] = linear.weight.detach().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = ["HF_ColBERT"]
    config.save_pretrained(folder)
    metadata = {"query_maxlen": query_maxlen, "doc_maxlen": doc_maxlen, "dim": dim, "mask_punctuation": True,
                "attend_to_mask_tokens": attend_to_mask_tokens, "query_token_id": "[unused0]",
                "doc_token_id": "[unused1]", "similarity": "cosine"}
    (folder / "artifact.metadata").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return folder


def tiny_pylate(folder: str | Path, seed: int = 0, hidden: int = 32, dim: int = 16, query_length: int = 16,
                document_length: int = 48, do_query_expansion: bool = True, use_residual: bool = False) -> Path:
    """A PyLate checkpoint: Transformer (with ``[Q] ``/``[D] `` tokens) + Dense, PyLate's config keys.

    The files are the ones PyLate 1.6.0 saves (checked against its own ``ColBERT.save``, see
    ``tests/reference/pylate_residual_reference.py``): ``modules.json`` naming
    ``sentence_transformers.models.Transformer`` and ``pylate.models.Dense.Dense``, a Dense
    ``config.json`` with exactly ``in_features, out_features, bias, activation_function,
    use_residual``, and ``1_Dense/model.safetensors`` holding ``linear.weight`` (plus
    ``residual.weight`` when ``use_residual`` and ``hidden != dim``).
    """
    import string

    import torch
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Transformer

    folder = Path(folder)
    bert = tiny_bert(folder.with_name(folder.name + "-bert"), seed, hidden)
    torch.manual_seed(seed + 1)
    with quiet_transformers():
        transformer = Transformer(str(bert), max_seq_length=document_length)
        transformer.tokenizer.add_tokens(["[Q] ", "[D] "])
        transformer.auto_model.resize_token_embeddings(len(transformer.tokenizer), mean_resizing=False)
        dense = Dense(hidden, dim, bias=False, activation_function=torch.nn.Identity())
        SentenceTransformer(modules=[transformer, dense], device="cpu").save(str(folder))
    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:  # as PyLate writes them
        if module["type"].endswith("Dense"):
            module["type"] = "pylate.models.Dense.Dense"
        elif module["type"].endswith("Transformer"):
            module["type"] = "sentence_transformers.models.Transformer"
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": document_length,
                                                                  "do_lower_case": False}, indent=2))
    dense_config = {"in_features": hidden, "out_features": dim, "bias": False,
                    "activation_function": "torch.nn.modules.linear.Identity", "use_residual": use_residual}
    (folder / "1_Dense" / "config.json").write_text(json.dumps(dense_config, indent=2))
    if use_residual and hidden != dim:  # PyLate's Dense adds a learned projection of its input
        weights = {"linear.weight": dense.linear.weight.detach().contiguous(),
                   "residual.weight": torch.nn.Linear(hidden, dim, bias=False).weight.detach().contiguous()}
        save_file(weights, str(folder / "1_Dense" / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config.update(model_type="ColBERT", similarity_fn_name="MaxSim", query_prefix="[Q] ", document_prefix="[D] ",
                  query_length=query_length, document_length=document_length, attend_to_expansion_tokens=False,
                  skiplist_words=list(string.punctuation), do_query_expansion=do_query_expansion)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2))
    return folder


def tiny_cross_encoder(folder: str | Path, seed: int = 0, hidden: int = 32, max_length: int | None = None) -> Path:
    """A ``BertForSequenceClassification`` with one label: what sentence-transformers' CrossEncoder loads.

    ``max_length`` saves the checkpoint's own limit where sentence-transformers keeps it (the
    tokenizer's ``model_max_length`` in ``tokenizer_config.json``, as ``CrossEncoder.save`` writes it).
    """
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = Path(folder)
    torch.manual_seed(seed)
    _copy_tokenizer(folder)
    with quiet_transformers():
        BertForSequenceClassification(_bert_config(hidden, num_labels=1)).eval().save_pretrained(folder)
        if max_length is not None:
            AutoTokenizer.from_pretrained(folder, model_max_length=max_length).save_pretrained(folder)
    return folder
