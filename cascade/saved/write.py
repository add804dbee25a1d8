"""Writing a saved index: every generation after the first (:mod:`cascade.saved.saving` writes that).

Each write checks its input first (document texts, metadata, ids against the live generation),
then, holding the folder's writer lock: removes what a killed writer left, encodes only the new
documents (one pass per distinct encoder pass, shared by the stages that use it, chunk by chunk),
appends them to the docstore and to every stage's arrays, writes the files that are new in the next
generation (the BM25 model, the inverted lists, the deletions), and commits it
(:class:`~cascade.saved.txn.Txn`). The index object is then reopened on the new generation.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.core.errors import ConfigError, DataError
from cascade.index import generations
from cascade.index.crashpoints import crash_point
from cascade.index.docstore import DocStore, DocWriter, StoredCorpus, copy_rows
from cascade.saved.colbert_part import ResidualPart
from cascade.saved.docs import Docs, parse_docs
from cascade.saved.txn import Txn, chain

if TYPE_CHECKING:
    from cascade.saved.index import SavedIndex

log = logging.getLogger(__name__)

CHUNK = 256  # documents encoded and appended per step


def _encode_and_append(txn: Txn, parts, entries: list[dict], docs: Docs, store_parts: dict | None,
                       live: np.ndarray) -> tuple[list[dict], dict | None]:
    """Append ``docs`` to the docstore and every part (each encoder pass run once per chunk)."""
    adders = [part.adder(txn, entry) for part, entry in zip(parts, entries)]
    passes = {}
    for part in parts:
        passes.update(part.passes())
    writer = None
    if docs.ids:
        writer = DocWriter(txn.root, store_parts, txn.epoch)
        txn.appenders += list(writer.apps.values())
    for s in range(0, len(docs.ids), CHUNK):
        texts = docs.texts[s:s + CHUNK]
        encoded = {key: doc_pass.encode(texts, None) for key, doc_pass in passes.items()}
        assert writer is not None  # opened above: there are documents
        writer.add(docs.ids[s:s + CHUNK], texts, docs.metas[s:s + CHUNK])
        for adder in adders:
            adder.add(texts, encoded)
        crash_point("chunk appended")
    new_entries = [adder.finish(live) for adder in adders]
    return new_entries, (writer.finish() if writer is not None else store_parts)


def _deleted_spec(txn: Txn, base: dict | None, live: np.ndarray, changed: bool) -> dict | None:
    if live.all():
        return None
    if not changed and base is not None:
        return base.get("deleted")
    return txn.save(txn.name("docs", "deleted"), np.flatnonzero(~live).astype(np.int64))


def _check_ids(index: SavedIndex, op: str, docs: Docs | None, ids: list[str], missing: str) -> list[str]:
    known = index.corpus.index_of
    if op == "add":
        assert docs is not None, "an add carries its documents"
        taken = [i for i in docs.ids if i in known]
        if taken:
            raise DataError(f"{len(taken)} document id(s) are already in the index, e.g. "
                            f"{', '.join(map(repr, taken[:5]))}; use index.update(docs) to replace them")
        return []
    gone = [i for i in ids if i not in known]
    if gone and (op == "update" or missing != "ignore"):
        raise DataError(f"{len(gone)} document id(s) are not in the index, e.g. {', '.join(map(repr, gone[:5]))}"
                        + ("; add new documents with index.add(docs)" if op == "update" else
                           "; check the ids, or pass missing='ignore'"))
    if gone:
        log.warning("%d of the ids to delete are not in the index (skipped), e.g. %s", len(gone), gone[:5])
    return [i for i in ids if i in known]


def write(index: SavedIndex, op: str, docs: Any = None, metadata: Mapping | None = None, ids: Any = None,
          missing: str = "error", timeout: float | None = 60.0) -> None:
    """``add``, ``update`` or ``delete`` as one new generation of ``index`` (see the module docstring)."""
    if missing not in ("error", "ignore"):
        raise ConfigError(f"missing must be 'error' or 'ignore', got {missing!r}")
    parsed = parse_docs(docs, metadata) if op in ("add", "update") else Docs([], [], [])
    if op == "delete":
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise DataError(f"delete takes a list of document ids, got {type(ids).__name__}")
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids:
            raise DataError("no document ids to delete")
    else:
        ids = list(parsed.ids) if op == "update" else []
    with generations.writer_lock(index.root, timeout):
        index.refresh()
        drop = _check_ids(index, op, parsed, ids, missing)
        if op == "delete" and not drop:
            return
        base, corpus = index.manifest, index.corpus
        live = np.ones(len(corpus), bool) if corpus.live is None else corpus.live.copy()
        dead = np.fromiter((corpus.index_of[i] for i in drop), np.int64, len(drop))
        live[dead] = False
        live = np.concatenate([live, np.ones(len(parsed.ids), bool)])
        if not live.any():
            raise DataError("this would delete every document of the index; an index keeps at least one "
                            "(save a new index instead)")
        generations.cleanup(index.root, base)  # files a killed writer left
        txn = Txn(index.root, base)
        try:
            entries, store_parts = _encode_and_append(txn, index.saved_parts, base["stages"], parsed, base["docstore"],
                                                      live)
            manifest = {"rows": len(live), "docstore": store_parts,
                        "deleted": _deleted_spec(txn, base, live, bool(len(dead))), "stages": entries,
                        "fingerprint": chain(base["fingerprint"], op, parsed.ids, parsed.texts, dead.tolist()),
                        "op": {"op": op, "added": len(parsed.ids), "deleted": len(dead)}}
            txn.commit(manifest)
        finally:
            txn.close()
        index.open_generation()
    log.info("%s: generation %d: %d added, %d deleted; %d documents", index.root, index.generation,
             len(parsed.ids), len(dead), index.corpus.num_live)


def compact(index: SavedIndex, retrain: bool = False, timeout: float | None = 60.0) -> None:
    """Rewrite every array without deleted rows (and, with ``retrain``, retrain compressed codecs)."""
    with generations.writer_lock(index.root, timeout):
        index.refresh()
        base, corpus = index.manifest, index.corpus
        if corpus.live is None and not retrain:
            log.info("%s has no deleted documents: nothing to compact", index.root)
            return
        keep = np.arange(len(corpus)) if corpus.live is None else np.flatnonzero(corpus.live)
        generations.cleanup(index.root, base)
        txn = Txn(index.root, base, new_epoch=True)
        try:
            store_parts, apps = copy_rows(index.root, base["docstore"], keep, txn.epoch)
            txn.appenders += apps
            compacted = StoredCorpus(DocStore(index.root, store_parts), None, chain(base["fingerprint"], "compact",
                                                                                   rows=keep.tolist()))
            entries = []
            for part, entry in zip(index.saved_parts, base["stages"]):
                if retrain and isinstance(part, ResidualPart):
                    entries.append(part.retrain(txn, entry, compacted))
                else:
                    entries.append(part.compact(txn, entry, keep))
            txn.commit({"rows": len(keep), "docstore": store_parts, "deleted": None, "stages": entries,
                        "fingerprint": compacted.fingerprint,
                        "op": {"op": "compact", "retrain": bool(retrain), "dropped": len(corpus) - len(keep)}})
        finally:
            txn.close()
        index.open_generation()
    log.info("%s: compacted into generation %d (%d documents)", index.root, index.generation, len(keep))
