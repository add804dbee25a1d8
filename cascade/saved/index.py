"""A saved index opened: a ready pipeline over its documents, and the one way to change them.

``SavedIndex`` is a :class:`~cascade.core.stage.Pipeline` whose stages are rebuilt from the folder's
settings and opened on its live generation (:mod:`cascade.index.generations`); ``search``,
``rerank``, ``run`` and :func:`cascade.Experiment` use it as any pipeline, over its
:class:`~cascade.index.docstore.StoredCorpus`. ``add``, ``delete``, ``update`` and ``compact`` each
write one new generation under the folder's writer lock (:mod:`cascade.saved.write`) and then
reopen the index on it; a reader that opened the folder earlier keeps its own snapshot.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.core.data import Corpus, Dataset
from cascade.core.errors import ConfigError, CorruptArtifactError
from cascade.core.stage import Pipeline, Stage
from cascade.index import appendable, generations
from cascade.index.appendable import load_file
from cascade.index.docstore import DocStore, StoredCorpus
from cascade.saved import settings
from cascade.saved.bm25_part import BM25Part
from cascade.saved.colbert_part import ResidualPart, TokensPart
from cascade.saved.parts import DensePart, Part
from cascade.saved.write import compact, write
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT

log = logging.getLogger(__name__)

OPEN_ATTEMPTS = 5  # generations switched by a writer while opening: follow CURRENT again


def make_part(number: int, stage) -> Part:
    """The part that keeps ``stage``'s index."""
    if isinstance(stage, BM25):
        return BM25Part(number, stage)
    if isinstance(stage, BiEncoder):
        return DensePart(number, stage)
    if isinstance(stage, ColBERT):
        return TokensPart(number, stage) if stage.nbits is None else ResidualPart(number, stage)
    return Part(number, stage)


def manifest_files(manifest: dict, parts: list[Part]) -> list[dict]:
    """Every file spec a generation uses (docstore, deletions, each part's)."""
    specs = list(manifest["docstore"].values())
    if manifest.get("deleted"):
        specs.append(manifest["deleted"])
    for part, entry in zip(parts, manifest["stages"]):
        specs += part.files(entry)
    return specs


class SavedIndex(Pipeline):
    """The saved index in folder ``root`` (see the module docstring).

    Args:
        root: the index folder.
        models: ``{stage name: model path}`` for local models that live elsewhere on this machine (their
            content must be the one that built the index).
        device: where the neural stages run (None: a GPU when there is one).
    """

    def __init__(self, root: str | Path, models: Mapping[str, str] | None = None, device: str | None = None):
        root = Path(root).expanduser().absolute()
        meta = generations.read_index(root)
        models = dict(models or {})
        names = [record["name"] for record in meta["stages"]]
        unknown = sorted(set(models) - set(names))
        if unknown:
            raise ConfigError(f"models names stages the index does not have: {unknown}; its stages are {names}")
        leaves = [settings.build_stage(record, models.get(record["name"]), device) for record in meta["stages"]]
        self.saved_parts = [make_part(i, stage) for i, stage in enumerate(leaves)]
        kinds = [p.kind for p in self.saved_parts]
        if kinds != meta["parts"]:
            raise CorruptArtifactError(f"saved index {root}: its stages keep {meta['parts']}, but its settings "
                                       f"make {kinds}")
        shape = meta["pipeline"]
        super().__init__(settings.build_pipeline(shape, leaves), k=shape.get("k"), name=shape.get("name", "index"))
        self.root, self.meta = root, meta
        self.open_generation()

    # --- opening ----------------------------------------------------------------------------------
    def open_generation(self) -> None:
        """Open the live generation (verified), following ``CURRENT`` again if a writer switches it meanwhile."""
        for attempt in range(OPEN_ATTEMPTS):
            generation = generations.current(self.root)
            try:
                self._open(generations.read_manifest(self.root, generation))
                return
            except (FileNotFoundError, CorruptArtifactError):
                if attempt + 1 < OPEN_ATTEMPTS and generations.current(self.root) != generation:
                    continue  # a writer moved on and removed the old generation's files: open the new one
                raise

    def _open(self, manifest: dict) -> None:
        appendable.verify(self.root, manifest_files(manifest, self.saved_parts))
        store = DocStore(self.root, manifest["docstore"])
        if store.rows != manifest["rows"]:
            raise CorruptArtifactError(f"saved index {self.root}: its docstore holds {store.rows} rows, its manifest "
                                       f"{manifest['rows']}")
        live = None
        if manifest.get("deleted"):
            live = np.ones(store.rows, bool)
            live[load_file(self.root, manifest["deleted"])] = False
        corpus = StoredCorpus(store, live, manifest["fingerprint"], str(self.root))
        for part, entry in zip(self.saved_parts, manifest["stages"]):
            part.attach(self.root, entry, corpus)
            part.stage._prepared_for = corpus.fingerprint
        self.manifest, self.corpus, self._search_corpus = manifest, corpus, corpus

    def refresh(self) -> bool:
        """Reopen on the live generation if another writer made a newer one; whether it did."""
        if generations.current(self.root) == self.generation:
            return False
        self.open_generation()
        return True

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    # --- as a pipeline --------------------------------------------------------------------------------
    def index(self, corpus: Any) -> SavedIndex:
        raise ConfigError("a saved index searches its own documents; add to it with index.add(docs), or index "
                          "another corpus with a new pipeline")

    def replace(self, children: Sequence[Stage]) -> Pipeline:
        """A plain pipeline of ``children`` (this index's shape and cutoff): other stages are not what the
        folder keeps, so the copy is not bound to it (e.g. the copy that ``rerank(query, docs)`` runs over a
        list of texts, or :meth:`without_fusion`'s)."""
        return Pipeline(list(children), k=self.k, name=self.name)

    def prepare(self, corpus: Corpus, engine: Any = None) -> dict[str, float]:
        if corpus is self.corpus or corpus.fingerprint == self.corpus.fingerprint:
            return {}
        raise ConfigError(f"this pipeline searches the saved index {self.root} ({self.corpus.num_live} documents), "
                          "not another corpus; run it on a dataset over the index's documents: "
                          "index.dataset(queries, qrels) (or cascade.dataset(index.corpus, queries, qrels))")

    def dataset(self, queries: Any, qrels: Any = None, name: str | None = None) -> Dataset:
        """A :class:`Dataset` of ``queries`` (and ``qrels``) over this index's documents, for ``run``,
        :func:`cascade.evaluate` and :func:`cascade.Experiment`; no corpus file needed."""
        from cascade.core.sources import dataset

        return dataset(self.corpus, queries, qrels, name or self.root.name)

    def __len__(self) -> int:
        return self.corpus.num_live

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.corpus.index_of

    def doc(self, doc_id: str) -> dict:
        """``{"id", "text", "metadata"}`` of a live document."""
        row = self.corpus.index_of.get(str(doc_id))
        if row is None:
            raise KeyError(f"document {doc_id!r} is not in the index {self.root}")
        store = self.corpus.store
        return {"id": str(doc_id), "text": store.text(row), "metadata": store.meta(row)}

    # --- writing (each call writes one generation) ---------------------------------------------
    def add(self, docs: Any, metadata: Mapping | None = None, timeout: float | None = 60.0) -> SavedIndex:
        """Add new documents (ids not in the index; see :func:`cascade.saved.docs.parse_docs` for the forms)."""
        write(self, "add", docs=docs, metadata=metadata, timeout=timeout)
        return self

    def update(self, docs: Any, metadata: Mapping | None = None, timeout: float | None = 60.0) -> SavedIndex:
        """Replace documents that are in the index (same ids) by these versions: a delete and an add, in one step."""
        write(self, "update", docs=docs, metadata=metadata, timeout=timeout)
        return self

    def delete(self, ids: Any, missing: str = "error", timeout: float | None = 60.0) -> SavedIndex:
        """Delete documents by id; an id not in the index is an error (``missing="ignore"``: logged and skipped)."""
        write(self, "delete", ids=ids, missing=missing, timeout=timeout)
        return self

    def compact(self, retrain: bool = False, timeout: float | None = 60.0) -> SavedIndex:
        """Rewrite the files without deleted documents; ``retrain=True`` also trains every compressed
        ColBERT's codec again on the live documents (their token vectors are encoded again)."""
        compact(self, retrain, timeout)
        return self

    # --- reporting ------------------------------------------------------------------------------
    def codec_drift(self) -> dict[str, dict]:
        """Per compressed ColBERT stage: how well its codec reconstructs added documents' token vectors
        against the documents it was trained on (see :func:`cascade.saved.colbert_part.drift_report`)."""
        return {p.stage.name: p.info(e)["codec_drift"] for p, e in zip(self.saved_parts, self.manifest["stages"])
                if isinstance(p, ResidualPart)}

    def info(self) -> dict:
        """Generation, rows, live documents, bytes on disk, and each stage's part."""
        files = manifest_files(self.manifest, self.saved_parts)
        nbytes = sum(int(s["bytes"]) if "bytes" in s else 0 for s in files)
        nbytes += sum((self.root / s["file"]).stat().st_size for s in files if "ranges" in s)
        return {"path": str(self.root), "generation": self.generation, "rows": self.manifest["rows"],
                "documents": self.corpus.num_live, "deleted": self.manifest["rows"] - self.corpus.num_live,
                "bytes": nbytes, "stages": [{"stage": p.stage.name, "kind": p.kind, **p.info(e)}
                                            for p, e in zip(self.saved_parts, self.manifest["stages"])]}

    def __repr__(self) -> str:
        return (f"SavedIndex({str(self.root)!r}, generation {self.generation}, {self.corpus.num_live} documents: "
                f"{' >> '.join(repr(s) for s in self.stages)})")
