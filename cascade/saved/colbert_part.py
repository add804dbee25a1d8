"""ColBERT in a saved index: the fp16 token index, or the residual-compressed one with its inverted lists.

fp16 (``colbert_tokens``): ``s<i>.tokens`` (T, dim) float16 and ``s<i>.offsets`` (rows + 1), both
append-only; added documents' token vectors are appended.

Compressed (``colbert_residual``): ``codes``, ``residuals``, ``norm_deltas`` and ``offsets`` are
append-only; the codec (``centroids``, ``bucket_cutoffs``, ``bucket_weights``) is fixed until
``compact(retrain=True)``; the inverted lists are rewritten for every generation: the previous lists
without deleted documents, merged with the (centroid, document) pairs of the added ones (each list
stays sorted, the new documents having the highest rows). Added documents are compressed with the
existing codec, and the *drift* of that codec is measured: the mean cosine between each new token
vector and its decoded form, against the same figure for a sample of the documents the index was
built from (``drift`` in the manifest, :meth:`~cascade.saved.index.SavedIndex.codec_drift`).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.core.data import Corpus
from cascade.encoders.sentence import DocPass, Encoded
from cascade.index.appendable import Appender, load_file, new_spec, open_array
from cascade.index.residual_index import ResidualIndex
from cascade.index.token_index import TokenIndex
from cascade.kernels.residual import ResidualCodec
from cascade.saved.parts import Adder, Part, copy_rows, copy_token_rows, kept_offsets
from cascade.saved.txn import Txn

if TYPE_CHECKING:  # installed as cascade.stages; mypy reads stages/ as the top-level package (pyproject.toml)
    from stages.colbert import ColBERT

log = logging.getLogger(__name__)

DRIFT_SAMPLE_DOCS = 64  # documents encoded at save to measure the codec's own reconstruction
DRIFT_WARN = 0.25  # warn when new tokens lose this much more cosine than the sample (relative to its loss)
CODEC = ("centroids", "bucket_cutoffs", "bucket_weights")


class TokensPart(Part):
    """The fp16 token index (see the module docstring)."""

    kind = "colbert_tokens"
    stage: ColBERT
    arrays: tuple[str, ...] = ("tokens",)

    def files(self, entry: dict) -> list[dict]:
        return [entry["offsets"], *(entry[a] for a in self.arrays)]

    def passes(self) -> dict[Any, DocPass]:
        doc_pass = self.stage.encoder.doc_pass()
        return {doc_pass.key: doc_pass}

    def export(self, txn: Txn, corpus: Corpus) -> dict:
        index = self.stage._index
        assert isinstance(index, TokenIndex), f"an fp16 token part exports a TokenIndex, not {type(index).__name__}"
        return {"kind": self.kind, "tokens": copy_rows(txn, txn.name(self.number, "tokens", True), index.tokens),
                "offsets": copy_rows(txn, txn.name(self.number, "offsets", True), np.asarray(index.offsets))}

    def attach(self, root: Path, entry: dict, corpus: Corpus) -> None:
        offsets = np.array(open_array(root, entry["offsets"]))
        self.stage._index = TokenIndex(open_array(root, entry["tokens"]), offsets, {"saved": str(root)})

    def adder(self, txn: Txn, entry: dict) -> Adder:
        return _TokensAdder(entry, txn, self)

    def chunk_arrays(self, enc: Encoded) -> dict[str, np.ndarray]:
        """The rows of each token array for one chunk of added documents."""
        return {"tokens": np.asarray(enc.tokens, np.float16)}

    def compact(self, txn: Txn, entry: dict, keep: np.ndarray) -> dict:
        root, offsets = txn.root, np.asarray(open_array(txn.root, entry["offsets"]))
        out = {name: copy_token_rows(txn, txn.name(self.number, name, True), open_array(root, entry[name]), offsets,
                                     keep) for name in self.arrays}
        new_offsets = txn.append(new_spec(txn.name(self.number, "offsets", True), np.int64),
                                 kept_offsets(offsets, keep))
        return {**entry, **out, "offsets": new_offsets}


class _TokensAdder(Adder):
    def __init__(self, entry: dict, txn: Txn, part: TokensPart):
        super().__init__(entry)
        self.txn, self.part = txn, part
        self.apps: dict[str, Appender] | None = None  # opened on the first added rows
        self.key = next(iter(part.passes()))
        self.end = self.next_doc = 0  # set with apps: the last token row, the row of the next document

    def add(self, texts: list[str], encoded: dict[Any, Encoded]) -> None:
        enc = encoded[self.key]
        if self.apps is None:
            self.apps = {name: self.txn.appender(self.entry[name]) for name in ("offsets", *self.part.arrays)}
            self.end = int(open_array(self.txn.root, self.entry["offsets"])[-1])
            self.next_doc = int(self.entry["offsets"]["shape"][0]) - 1  # the row of the next added document
        for name, rows in self.chunk_arrays(enc).items():
            self.apps[name].write(rows)
        self.apps["offsets"].write(self.end + np.cumsum(np.asarray(enc.lengths, np.int64)))
        self.end += int(np.sum(enc.lengths))
        self.next_doc += len(enc.lengths)

    def chunk_arrays(self, enc: Encoded) -> dict[str, np.ndarray]:
        return self.part.chunk_arrays(enc)

    def finish(self, live: np.ndarray) -> dict:
        if self.apps is None:
            return self.entry
        return {**self.entry, **{name: app.finish() for name, app in self.apps.items()}}


class ResidualPart(TokensPart):
    """The residual-compressed index with PLAID's inverted lists (see the module docstring)."""

    kind = "colbert_residual"
    arrays = ("codes", "residuals", "norm_deltas")

    def files(self, entry: dict) -> list[dict]:
        return [*super().files(entry), *entry["codec"].values(), *entry["ivf"].values()]

    def codec(self, root: Path, entry: dict, for_adding: bool = False) -> ResidualCodec:
        """The stored codec: as the index's open gives it for search, or as its build assigns (``for_adding``)."""
        centroids, cutoffs, weights = (load_file(root, entry["codec"][name]) for name in CODEC)
        if not for_adding:
            return ResidualCodec(centroids.astype(np.float32), cutoffs, weights, entry["nbits"], centroids.shape[1])
        codec = ResidualCodec(centroids.astype(np.float16), cutoffs, weights, entry["nbits"], centroids.shape[1])
        return codec.with_assignment(entry.get("assignment", "auto"), 0)  # as the build's before_pass (seed 0)

    def export(self, txn: Txn, corpus: Corpus) -> dict:
        index, n = self.stage._index, self.number
        assert isinstance(index, ResidualIndex), f"a residual part exports a ResidualIndex, not {type(index).__name__}"
        entry = {"kind": self.kind, "nbits": int(index.codec.nbits), "assignment": getattr(self.stage, "assignment",
                                                                                              "auto"),
                 "offsets": copy_rows(txn, txn.name(n, "offsets", True), np.asarray(index.offsets)),
                 **{name: copy_rows(txn, txn.name(n, name, True), getattr(index, name)) for name in self.arrays},
                 "codec": {name: txn.save(txn.name(n, name, True), np.asarray(getattr(index.codec, name)).astype(
                     np.float16 if name == "centroids" else np.float32)) for name in CODEC},
                 "ivf": {"docs": txn.save(txn.name(n, "ivf_docs"), np.asarray(index.ivf_docs, np.int32)),
                         "offsets": txn.save(txn.name(n, "ivf_offsets"), np.asarray(index.ivf_offsets, np.int64))}}
        entry["drift"] = {"baseline": self.sample_drift(txn.root, entry, corpus), "added": _stats()}
        return entry

    def sample_drift(self, root: Path, entry: dict, corpus: Corpus) -> dict:
        """The codec's reconstruction on a sample of ``corpus`` (the documents it was trained for)."""
        rows = np.sort(np.random.default_rng(0).choice(len(corpus), min(DRIFT_SAMPLE_DOCS, len(corpus)),
                                                       replace=False))
        enc = next(iter(self.passes().values())).encode([corpus.texts[int(r)] for r in rows], None)
        stats = _stats()
        _add_drift(stats, self.codec(root, entry, for_adding=True), enc.tokens)
        return stats

    def attach(self, root: Path, entry: dict, corpus: Corpus) -> None:
        arrays = {name: open_array(root, entry[name]) for name in self.arrays}
        offsets = np.array(open_array(root, entry["offsets"]))
        ivf_docs, ivf_offsets = load_file(root, entry["ivf"]["docs"]), load_file(root, entry["ivf"]["offsets"])
        nbytes = sum(int(np.prod(a.shape)) * a.itemsize for a in arrays.values()) + offsets.nbytes \
            + ivf_docs.nbytes + ivf_offsets.nbytes
        meta = {"saved": str(root), "nbits": entry["nbits"], "assignment": entry.get("assignment")}
        self.stage._index = ResidualIndex(self.codec(root, entry), arrays["codes"], arrays["residuals"],
                                          arrays["norm_deltas"], offsets, ivf_docs, ivf_offsets, meta, nbytes)

    def adder(self, txn: Txn, entry: dict) -> Adder:
        return _ResidualAdder(entry, txn, self)

    def chunk_arrays(self, enc: Encoded) -> dict[str, np.ndarray]:
        raise RuntimeError("the compressed index's adder compresses chunks itself")

    def compact(self, txn: Txn, entry: dict, keep: np.ndarray) -> dict:
        out = super().compact(txn, entry, keep)
        rows = int(entry["offsets"]["shape"][0]) - 1
        renumber = np.full(rows, -1, np.int64)
        renumber[keep] = np.arange(len(keep))
        docs, offsets = _filtered_ivf(txn.root, entry, renumber >= 0)
        out["ivf"] = {"docs": txn.save(txn.name(self.number, "ivf_docs"), renumber[docs].astype(np.int32)),
                      "offsets": txn.save(txn.name(self.number, "ivf_offsets"), offsets)}
        return out

    def info(self, entry: dict) -> dict:
        return {"codec_drift": drift_report(entry)}

    def retrain(self, txn: Txn, entry: dict, corpus: Corpus) -> dict:
        """A compressed index of ``corpus`` built from scratch (codec trained again, every document encoded
        again), as a fresh build makes it; built in a scratch cache inside the folder, then kept as this part."""
        import copy

        from cascade.core.indexing import build_all

        scratch = txn.root / f".retrain-s{self.number}-g{txn.generation}.tmp"
        stage = copy.copy(self.stage)
        stage.cache_dir, stage.progress = str(scratch), False
        try:
            artifacts = stage.artifacts(corpus)
            build_all(artifacts, corpus)
            stage._index = artifacts[0].open(corpus)
            return ResidualPart(self.number, stage).export(txn, corpus)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _filtered_ivf(root: Path, entry: dict, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverted lists of ``entry`` without documents not ``live`` (docs int64, offsets int64)."""
    docs, offsets = load_file(root, entry["ivf"]["docs"]), load_file(root, entry["ivf"]["offsets"])
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    keep = live[docs]
    counts = np.bincount(owner[keep], minlength=len(offsets) - 1)
    return docs[keep].astype(np.int64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _stats() -> dict:
    return {"tokens": 0, "cosine_sum": 0.0}


def _add_drift(stats: dict, codec: ResidualCodec, tokens: np.ndarray) -> None:
    tokens = np.asarray(tokens, np.float32)
    if not len(tokens):
        return
    codes, residuals = codec.compress(tokens)
    decoded = codec.decompress(codes, residuals, deltas=codec.norm_deltas(codes, residuals))
    stats["tokens"] += len(tokens)
    stats["cosine_sum"] += float(np.einsum("ij,ij->i", tokens, decoded).sum())


def drift_report(entry: dict) -> dict:
    """Mean cosine of decoded to original token vectors: the build sample's, the added documents', and
    ``loss_ratio`` = (1 - added) / (1 - sample): above ``1 + DRIFT_WARN`` the codec fits new text worse."""
    drift = entry.get("drift", {})
    base, added = drift.get("baseline", _stats()), drift.get("added", _stats())
    mean = lambda s: s["cosine_sum"] / s["tokens"] if s["tokens"] else None  # noqa: E731
    out = {"sample_tokens": base["tokens"], "sample_cosine": mean(base), "added_tokens": added["tokens"],
           "added_cosine": mean(added)}
    if out["sample_cosine"] is not None and out["added_cosine"] is not None and out["sample_cosine"] < 1:
        out["loss_ratio"] = (1 - out["added_cosine"]) / (1 - out["sample_cosine"])
    return out


class _ResidualAdder(_TokensAdder):
    def __init__(self, entry: dict, txn: Txn, part: ResidualPart):
        super().__init__(entry, txn, part)
        self.codec = part.codec(txn.root, entry, for_adding=True)
        self.keys: list[np.ndarray] = []
        self.added = dict(entry.get("drift", {}).get("added", _stats()))
        self.code_dtype = np.dtype(entry["codes"]["dtype"])

    def chunk_arrays(self, enc: Encoded) -> dict[str, np.ndarray]:
        """Compress the chunk with the index's codec; collect its (centroid, document) pairs and drift."""
        tokens = np.asarray(enc.tokens, np.float32)
        codes, residuals = self.codec.compress(tokens)
        deltas = self.codec.norm_deltas(codes, residuals)
        decoded = self.codec.decompress(codes, residuals, deltas=deltas)
        self.added["tokens"] += len(tokens)
        self.added["cosine_sum"] += float(np.einsum("ij,ij->i", tokens, decoded).sum())
        lengths = np.asarray(enc.lengths, np.int64)
        docs = np.repeat(np.arange(self.next_doc, self.next_doc + len(lengths), dtype=np.int64), lengths)
        self.keys.append(np.unique((codes.astype(np.int64) << 32) | docs))
        return {"codes": codes.astype(self.code_dtype), "residuals": residuals, "norm_deltas": deltas}

    def finish(self, live: np.ndarray) -> dict:
        entry = super().finish(live)
        docs, offsets = _filtered_ivf(self.txn.root, self.entry, live)
        if self.keys:
            keys = np.concatenate(self.keys)
            keys = keys[live[keys & 0xFFFFFFFF]]
            owner = np.concatenate([np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)), keys >> 32])
            every = np.concatenate([docs, keys & 0xFFFFFFFF])
            order = np.argsort(owner, kind="stable")  # old documents then new ones in each list, both sorted
            docs = every[order]
            offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(offsets) - 1))])
        entry["ivf"] = {"docs": self.txn.save(self.txn.name(self.part.number, "ivf_docs"), docs.astype(np.int32)),
                        "offsets": self.txn.save(self.txn.name(self.part.number, "ivf_offsets"),
                                                 offsets.astype(np.int64))}
        entry["drift"] = {**self.entry.get("drift", {}), "added": self.added}
        report = drift_report(entry)
        if report.get("loss_ratio") is not None and report["loss_ratio"] > 1 + DRIFT_WARN:
            log.warning("codec drift: added documents' tokens decode at mean cosine %.4f against %.4f for the "
                        "documents the codec was trained on (loss ratio %.2f); consider compact(retrain=True)",
                        report["added_cosine"], report["sample_cosine"], report["loss_ratio"])
        return entry

