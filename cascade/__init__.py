"""cascade: multi-stage cascade reranking for information retrieval.

Compose stages with ``>>`` and set each one's cutoff with ``%``::

    from cascade import load_beir, evaluate
    from cascade.stages.bm25 import BM25
    ds = load_beir("path/to/scifact")
    run = (BM25() % 1000)(ds)
    print(evaluate(run, ds.qrels, ["nDCG@10", "R@1000"]))

Layers (a lower one never imports a higher one): ``cascade.core`` (data model, stage
interface, evaluation) and ``cascade.kernels`` (pure array functions); ``cascade.encoders``
(models and encoders); ``cascade.index`` (cached artifacts); ``cascade.stages``;
``cascade.app`` (the command line, sweeps, reports).
"""
__version__ = "0.2.0"

from cascade.core.apply import FunctionStage, apply
from cascade.core.candidates import Batch, Candidates
from cascade.core.data import Corpus, Dataset, load_beir, load_trec
from cascade.core.errors import CascadeError, ConfigError, CorruptArtifactError, DataError, NeedsCandidatesError
from cascade.core.evaluation import DEFAULT_METRICS, evaluate, per_query, stage_report
from cascade.core.fusion import Fusion
from cascade.core.results import Run, StageTrace, read_run, read_trec_run, write_trec_run
from cascade.core.search import Hit, Ranking
from cascade.core.sources import corpus, dataset, load_dataset
from cascade.core.stage import Pipeline, Stage
from cascade.core.union import UnionFusion

__all__ = [
    "__version__", "Batch", "Candidates", "Corpus", "Dataset", "load_beir", "load_trec", "CascadeError",
    "ConfigError", "CorruptArtifactError", "DataError", "NeedsCandidatesError", "DEFAULT_METRICS", "evaluate",
    "per_query", "stage_report", "Fusion", "Run", "StageTrace", "read_trec_run", "write_trec_run", "Pipeline",
    "Stage", "read_run", "corpus", "dataset", "load_dataset",
]
__all__ += ["apply", "FunctionStage", "Hit", "Ranking", "UnionFusion"]

# app-layer exports, imported on first use so that `import cascade` stays light (pandas, statistics)
_LAZY = {"Experiment": "cascade.app.experiment", "load": "cascade.saved", "SavedIndex": "cascade.saved"}
__all__ += list(_LAZY)


def _save(stage, path, **options):
    """``Stage.save``: the core calls the saved-index layer (above the stages) through this slot."""
    from cascade.saved import save

    return save(stage, path, **options)


import cascade.core.stage as _stage  # noqa: E402

_stage.SAVE_HOOK = _save


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cascade' has no attribute {name!r}")
