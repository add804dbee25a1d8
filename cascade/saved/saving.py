"""Saving an indexed pipeline as a new index folder: the first generation (later ones: :mod:`cascade.saved.write`)."""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import cascade
from cascade.core.errors import ConfigError, DataError
from cascade.core.stage import Pipeline, Stage
from cascade.index import generations
from cascade.index.docstore import DocWriter
from cascade.saved import settings
from cascade.saved.docs import check_meta
from cascade.saved.index import SavedIndex, make_part
from cascade.saved.txn import Txn

log = logging.getLogger(__name__)


def save(stage: Stage, path: str | Path, metadata: Mapping | None = None) -> SavedIndex:
    """Write ``stage`` (a pipeline or one stage), indexed with ``.index(corpus)``, as a new index folder.

    ``metadata``: ``{doc_id: {field: value}}`` for :meth:`SavedIndex.search`'s ``where=`` filters. The
    folder is built beside ``path`` and renamed into place, so it exists whole or not at all.
    """
    corpus = getattr(stage, "_search_corpus", None)
    if corpus is None:
        raise ConfigError(f"{stage.name}: index a corpus before saving: pipe.index(corpus).save(DIR)")
    if getattr(corpus, "live", None) is not None:
        raise ConfigError("this index has deleted documents; compact() it first, or copy its folder as it is "
                          "(cp -r / rsync)")
    pipeline = stage if isinstance(stage, Pipeline) else Pipeline([stage])
    shape, leaves = settings.describe_pipeline(pipeline)
    records = [settings.describe_stage(s) for s in leaves]
    if metadata is not None:
        unknown = [k for k in metadata if str(k) not in corpus.index_of]
        if unknown:
            raise DataError(f"metadata names documents not in the corpus: {', '.join(map(repr, unknown[:5]))}")
    metas = {str(k): check_meta(v, str(k)) for k, v in (metadata or {}).items()}
    path = Path(path).expanduser().absolute()
    if path.exists():
        raise DataError(f"{path} already exists; save into a new folder (or delete that one first)")
    pipeline.prepare(corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.saving-"))
    try:
        txn = Txn(tmp, None)
        writer = DocWriter(tmp, None, 0)
        txn.appenders += list(writer.apps.values())
        for s in range(0, len(corpus), 4096):
            ids = corpus.ids[s:s + 4096]
            writer.add(ids, corpus.texts[s:s + 4096], [metas.get(i) for i in ids])
        store_parts = writer.finish()
        parts = [make_part(i, s) for i, s in enumerate(leaves)]
        entries = [part.export(txn, corpus) for part in parts]
        meta = {"format": generations.FORMAT, "format_version": generations.FORMAT_VERSION,
                "cascade_version": cascade.__version__, "created": time.time(), "uuid": uuid.uuid4().hex,
                "pipeline": shape, "stages": records, "parts": [e["kind"] for e in entries]}
        generations.write_json(tmp / generations.INDEX, meta)
        txn.commit({"rows": len(corpus), "docstore": store_parts, "deleted": None, "stages": entries,
                    "fingerprint": corpus.fingerprint, "op": {"op": "save", "added": len(corpus)}})
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved an index of %d documents to %s", len(corpus), path)
    return SavedIndex(path)
