"""cascade: multi-stage cascade reranking for information retrieval.

Compose stages with ``>>`` and set each one's cutoff with ``%``::

    from cascade import load_beir, evaluate
    from stages.bm25 import BM25
    ds = load_beir("path/to/scifact")
    run = (BM25() % 1000)(ds)
    print(evaluate(run, ds.qrels, ["nDCG@10", "R@1000"]))
"""
from cascade.candidates import Batch, Candidates
from cascade.data import Corpus, Dataset, load_beir, load_trec
from cascade.errors import CascadeError, ConfigError, DataError, NeedsCandidatesError
from cascade.evaluation import DEFAULT_METRICS, evaluate, per_query, stage_report
from cascade.fusion import Fusion
from cascade.run import Run, StageTrace, read_trec_run, write_trec_run
from cascade.stage import Pipeline, Stage

__all__ = [
    "Batch", "Candidates", "Corpus", "Dataset", "load_beir", "load_trec", "CascadeError", "ConfigError",
    "DataError", "NeedsCandidatesError", "DEFAULT_METRICS", "evaluate", "per_query", "stage_report",
    "Fusion", "Run", "StageTrace", "read_trec_run", "write_trec_run", "Pipeline", "Stage",
]
