"""Time MaxSim over 100 and 1000 candidates per query: cascade's kernel vs a per-document loop vs a padded einsum.

Document token counts are SciFact's (all-MiniLM-L6-v2 tokenizer, special tokens dropped,
truncated at 256 like the default ColBERT stage); vectors are random unit vectors stored
in float16 like the real token index. Every method's scores are checked against the kernel's.

    python experiments/maxsim_bench/bench.py                 # dims 384 (MiniLM) and 128 (ColBERTv2)
    python experiments/maxsim_bench/bench.py --dims 128 --repeats 5
    python experiments/maxsim_bench/bench.py --doc-max-length 64   # passage-sized documents
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cascade.app.tables import markdown_table
from cascade.kernels.maxsim import maxsim, maxsim_naive

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scifact"


def scifact_lengths(max_length: int = 256) -> np.ndarray:
    """Token count of every SciFact document (MiniLM tokenizer, [CLS]/[SEP] dropped, truncated)."""
    from transformers import AutoTokenizer

    from cascade import load_beir
    from cascade.encoders.models import default_model_path

    texts = load_beir(SCIFACT).corpus.texts
    tok = AutoTokenizer.from_pretrained(default_model_path())
    ids = tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return np.minimum([len(x) for x in ids], max_length - 2).clip(min=1)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def naive_torch(queries, mask, tokens, offsets, doc_idx):
    """One small matmul per (query, document), in Python loops (torch, like the kernel)."""
    out = np.full(doc_idx.shape, -np.inf, np.float32)
    tok = torch.from_numpy(tokens)
    for qi in range(doc_idx.shape[0]):
        q = torch.from_numpy(queries[qi][mask[qi]])
        for ki, d in enumerate(doc_idx[qi]):
            if d >= 0:
                out[qi, ki] = (tok[offsets[d]:offsets[d + 1]].float() @ q.T).max(dim=0).values.sum().item()
    return out


def padded_einsum(queries, mask, tokens, offsets, doc_idx):
    """Candidates padded to the longest document: a (Q, K, L, dim) tensor, one query at a time (memory)."""
    out = np.full(doc_idx.shape, -np.inf, np.float32)
    lengths = np.diff(offsets)
    for qi in range(doc_idx.shape[0]):
        docs = doc_idx[qi][doc_idx[qi] >= 0]
        width = int(lengths[docs].max())
        pos = np.arange(width)[None, :]
        valid = pos < lengths[docs][:, None]
        rows = np.where(valid, offsets[docs][:, None] + pos, 0)
        padded = torch.from_numpy(tokens[rows.ravel()]).reshape(1, len(docs), width, -1).float()  # 4-D
        sim = torch.einsum("qld,qktd->qklt", torch.from_numpy(queries[qi:qi + 1]), padded)
        sim = sim.masked_fill(~torch.from_numpy(valid)[None, :, None, :], float("-inf"))
        best = sim.max(dim=-1).values  # (1, K, Lq)
        qmask = torch.from_numpy(mask[qi:qi + 1])[:, None, :]
        out[qi, : len(docs)] = torch.where(qmask, best, torch.zeros(())).sum(-1)[0].numpy()
    return out


def timed_ms_per_query(fn, args, repeats: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / args[-1].shape[0], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 128])
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--query-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doc-max-length", type=int, default=256,
                        help="truncate documents here (256: the ColBERT stage default; 64: passage-sized)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lengths = scifact_lengths(args.doc_max_length)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    print(f"corpus: {len(lengths)} docs, {offsets[-1]} tokens (mean {lengths.mean():.0f}/doc); "
          f"torch threads: {torch.get_num_threads()}")
    rows = []
    for dim in args.dims:
        tokens = unit(rng.standard_normal((offsets[-1], dim), dtype=np.float32)).astype(np.float16)
        for k in args.candidates:
            num_q = 32 if k <= 100 else 8
            queries = unit(rng.standard_normal((num_q, args.query_tokens, dim), dtype=np.float32))
            mask = np.ones((num_q, args.query_tokens), bool)
            mask[:, 20:] = rng.random((num_q, args.query_tokens - 20)) > 0.5  # some query padding
            cands = np.stack([rng.choice(len(lengths), k, replace=False) for _ in range(num_q)])
            call = (queries, mask, tokens, offsets, cands)
            ours, ref = timed_ms_per_query(maxsim, call, args.repeats)
            row = {"dim": dim, "candidates": k, "queries": num_q, "kernel_ms/q": ours}
            for name, fn, reps in [("naive_torch", naive_torch, args.repeats), ("naive_numpy", maxsim_naive, 1),
                                   ("padded_einsum", padded_einsum, args.repeats)]:
                ms, out = timed_ms_per_query(fn, call, reps)
                assert np.allclose(out, ref, atol=1e-3), f"{name} disagrees with the kernel"
                row[f"{name}_ms/q"] = ms
                row[f"{name}/kernel"] = ms / ours
            rows.append(row)
            print(markdown_table([row]), flush=True)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
