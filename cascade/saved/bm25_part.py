"""BM25 in a saved index: the tokenized documents (append-only) and a bm25s model per generation.

BM25's scores depend on the statistics of the whole collection (document count, average length,
document frequencies), so every write that adds or deletes documents rebuilds the model over the
live documents, from their stored token ids (no text is tokenized again): its scores are exactly
those of a fresh build over those documents. Measured on SciFact (5,183 documents) the rebuild
costs about a second on 2 busy cores (``experiments/index_updates/``). The model's rows are the live
rows in order; with deletions the stage maps them back (``BM25._rows``).

Files: ``s<i>.tok_ids`` (int32, every document's token ids back to back), ``s<i>.tok_offsets``
(int64, rows + 1), ``s<i>.vocab`` / ``s<i>.vocab_offsets`` (the words, UTF-8, append-only: a word's id
never changes) and the folder ``s<i>.bm25.g<generation>/`` (bm25s's own ``.npy`` and JSON files).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.core.data import Corpus
from cascade.core.errors import ConfigError, CorruptArtifactError
from cascade.encoders.sentence import Encoded
from cascade.index.appendable import new_spec, open_array
from cascade.index.crashpoints import crash_point
from cascade.saved.parts import Adder, Part, copy_token_rows, kept_offsets
from cascade.saved.txn import Txn
from cascade.stages.bm25 import _quiet_bm25s

if TYPE_CHECKING:  # installed as cascade.stages; mypy reads stages/ as the top-level package (pyproject.toml)
    from stages.bm25 import BM25

log = logging.getLogger(__name__)

STEP = 4096  # documents tokenized per step


def _empty_tokens(txn: Txn, number: int) -> dict:
    specs = {"ids": new_spec(txn.name(number, "tok_ids", True), np.int32),
             "offsets": new_spec(txn.name(number, "tok_offsets", True), np.int64),
             "vocab": new_spec(txn.name(number, "vocab", True), np.uint8),
             "vocab_offsets": new_spec(txn.name(number, "vocab_offsets", True), np.int64)}
    return specs


class _Tokens:
    """Appends tokenized documents (and new words) to the token store of ``specs``."""

    def __init__(self, txn: Txn, specs: dict, fresh: bool):
        self.txn, self.specs = txn, specs
        self.apps = {name: txn.appender(spec) for name, spec in specs.items()}
        if fresh:
            self.apps["offsets"].write(np.zeros(1, np.int64))
            self.apps["vocab_offsets"].write(np.zeros(1, np.int64))
            self.token_end, self.word_end, self.vocab = 0, 0, {}
        else:
            self.token_end = int(open_array(txn.root, specs["offsets"])[-1])
            self.word_end = int(open_array(txn.root, specs["vocab_offsets"])[-1])
            self.vocab = read_vocab(txn.root, specs)

    def add(self, docs: list[list[str]]) -> None:
        new_words: list[bytes] = []
        ids = []
        for doc in docs:
            row = []
            for word in doc:
                i = self.vocab.get(word)
                if i is None:
                    i = self.vocab[word] = len(self.vocab)
                    new_words.append(word.encode("utf-8"))
                row.append(i)
            ids.append(row)
        lengths = np.fromiter((len(r) for r in ids), np.int64, len(ids))
        flat = np.fromiter((i for r in ids for i in r), np.int32, int(lengths.sum()))
        self.apps["ids"].write(flat)
        self.apps["offsets"].write(self.token_end + np.cumsum(lengths))
        self.token_end += int(lengths.sum())
        if new_words:
            sizes = np.fromiter((len(w) for w in new_words), np.int64, len(new_words))
            self.apps["vocab"].write(np.frombuffer(b"".join(new_words), np.uint8))
            self.apps["vocab_offsets"].write(self.word_end + np.cumsum(sizes))
            self.word_end += int(sizes.sum())

    def finish(self) -> dict:
        return {name: app.finish() for name, app in self.apps.items()}


def read_vocab(root: Path, specs: dict) -> dict[str, int]:
    blob = bytes(open_array(root, specs["vocab"]))
    bounds = np.asarray(open_array(root, specs["vocab_offsets"])).tolist()
    return {blob[a:b].decode("utf-8"): i for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))}


class BM25Part(Part):
    """See the module docstring."""

    kind = "bm25"
    stage: BM25

    def files(self, entry: dict) -> list[dict]:
        return [*entry["tokens"].values(), *entry["model"]["files"]]

    def export(self, txn: Txn, corpus: Corpus) -> dict:
        stage = self.stage
        if stage.backend != "bm25s":
            raise ConfigError(f"cannot save stage {stage.name!r}: a saved index keeps BM25 with backend=bm25s "
                              f"(this one uses {stage.backend}); set backend='bm25s'")
        tokens = _Tokens(txn, _empty_tokens(txn, self.number), fresh=True)
        for s in range(0, len(corpus), STEP):
            tokens.add(stage.tokenizer(corpus.texts[s:s + STEP]))
        folder = txn.name(self.number, "bm25", ext="")
        (txn.root / folder).mkdir()
        assert stage._model is not None, f"stage {stage.name!r} is saved after it was prepared (its model loaded)"
        with _quiet_bm25s():
            stage._model.save(txn.root / folder, show_progress=False)
        return {"kind": self.kind, "tokens": tokens.finish(), "model": _model_entry(txn, folder, len(corpus)),
                "docs": len(corpus)}

    def attach(self, root: Path, entry: dict, corpus: Corpus) -> None:
        import bm25s

        stage, folder = self.stage, Path(root) / entry["model"]["folder"]
        with _quiet_bm25s():
            stage._model = bm25s.BM25.load(folder, mmap=True, show_progress=False)
        live = getattr(corpus, "live", None)
        if entry["model"]["docs"] != (len(corpus) if live is None else int(live.sum())):
            raise CorruptArtifactError(f"saved index {root}: the BM25 model of {folder.name} covers "
                                       f"{entry['model']['docs']} documents, not the index's live ones")
        stage._rows = None if live is None else np.flatnonzero(live)
        stage._num_rows, stage._path = len(corpus), folder

    def adder(self, txn: Txn, entry: dict) -> Adder:
        return _BM25Adder(entry, txn, self)

    def compact(self, txn: Txn, entry: dict, keep: np.ndarray) -> dict:
        """Token rows of the kept documents; the model (over exactly those, in order) stays as it is."""
        root, specs = txn.root, entry["tokens"]
        offsets = np.asarray(open_array(root, specs["offsets"]))
        ids = copy_token_rows(txn, txn.name(self.number, "tok_ids", True), open_array(root, specs["ids"]), offsets,
                              keep)
        new_offsets = new_spec(txn.name(self.number, "tok_offsets", True), np.int64)
        new_offsets = txn.append(new_offsets, kept_offsets(offsets, keep))
        return {**entry, "tokens": {**specs, "ids": ids, "offsets": new_offsets}}

    def rebuild(self, txn: Txn, tokens: dict, live: np.ndarray, vocab: dict[str, int] | None = None) -> dict:
        """A bm25s model over the live rows' stored tokens, saved for the new generation; its entry."""
        import bm25s

        stage, root = self.stage, txn.root
        vocab = dict(read_vocab(root, tokens) if vocab is None else vocab)
        flat, offsets = open_array(root, tokens["ids"]), np.asarray(open_array(root, tokens["offsets"]))
        rows = np.flatnonzero(live)
        docs = [np.asarray(flat[offsets[r]:offsets[r + 1]]) for r in rows]
        model = bm25s.BM25(k1=stage.k1, b=stage.b, delta=stage.delta, method=stage.method)
        folder = txn.name(self.number, "bm25", ext="")
        with _quiet_bm25s():
            model.index((docs, vocab), show_progress=False)
            (root / folder).mkdir()
            model.save(root / folder, show_progress=False)
        crash_point("bm25 model saved")
        return _model_entry(txn, folder, len(rows))


def _model_entry(txn: Txn, folder: str, docs: int) -> dict:
    names = sorted(p.name for p in (txn.root / folder).iterdir() if p.is_file())
    return {"folder": folder, "docs": docs, "files": [txn.stamp(f"{folder}/{n}") for n in names]}


class _BM25Adder(Adder):
    def __init__(self, entry: dict, txn: Txn, part: BM25Part):
        super().__init__(entry)
        self.txn, self.part = txn, part
        self.tokens: _Tokens | None = None  # opened on the first added rows

    def add(self, texts: list[str], encoded: dict[Any, Encoded]) -> None:
        if self.tokens is None:
            self.tokens = _Tokens(self.txn, self.entry["tokens"], fresh=False)
        self.tokens.add(self.part.stage.tokenizer(texts))

    def finish(self, live: np.ndarray) -> dict:
        specs = self.entry["tokens"] if self.tokens is None else self.tokens.finish()
        vocab = None if self.tokens is None else self.tokens.vocab
        model = self.part.rebuild(self.txn, specs, live, vocab)
        return {**self.entry, "tokens": specs, "model": model, "docs": model["docs"]}
