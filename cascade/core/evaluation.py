"""trec_eval-grade metrics through ir-measures, overall and per stage of a pipeline."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import ir_measures
import numpy as np

from cascade.core.candidates import Candidates
from cascade.core.data import Qrels
from cascade.core.errors import ConfigError
from cascade.core.results import Run, RunDict, StageTrace, read_run
from cascade.core.sources import qrels as as_qrels, run_dict

RunLike = Run | str | os.PathLike | Mapping

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("nDCG@10", "RR@10", "R@100", "R@1000")


def parse_metrics(names: Iterable[str]) -> list:
    """ir-measures measure objects for names such as ``nDCG@10`` or ``R@1000``."""
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(str(name)))
        except (ValueError, NameError, SyntaxError, AttributeError):
            raise ConfigError(
                f"metric {name!r} is not an ir-measures name; write e.g. nDCG@10, RR@10, R@100, P@5, AP"
            ) from None
    return measures


def _ranked(run: RunLike, candidates: Candidates | None) -> tuple[tuple[str, ...], RunDict]:
    """The query ids and ``{qid: {docid: score}}`` of a Run, a TREC run file path or such a dict."""
    if isinstance(run, Run):
        return run.query_ids, run.to_dict(candidates)
    if candidates is not None:
        raise ConfigError("candidates= applies only to a Run, not to a run file or a dict")
    ranked = read_run(run) if isinstance(run, (str, os.PathLike)) else run_dict(run)
    return tuple(ranked), ranked


def per_query(run: RunLike, qrels: Qrels | str | os.PathLike, metrics: Sequence[str] = DEFAULT_METRICS,
              candidates: Candidates | None = None) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: value}}`` over every judged query of the run (0 when it retrieved nothing).

    ``run``: a :class:`Run`, a TREC run file path, or ``{qid: {docid: score}}``; ``qrels``: a dict
    ``{qid: {docid: relevance}}`` or a qrels file (TREC or BEIR TSV). Unjudged documents count as
    not relevant.
    """
    measures = parse_metrics(metrics)
    qrels = as_qrels(qrels)
    query_ids, ranked = _ranked(run, candidates)
    judged = [q for q in query_ids if q in qrels]
    unjudged = len(query_ids) - len(judged)
    if unjudged:
        log.warning("%d run queries have no judgments and are not evaluated", unjudged)
    scores = {str(m): {q: 0.0 for q in judged} for m in measures}
    run_pairs = [ir_measures.ScoredDoc(q, d, s) for q in judged for d, s in ranked.get(q, {}).items()]
    qrel_pairs = [ir_measures.Qrel(q, d, r) for q in judged for d, r in qrels[q].items()]
    for metric in ir_measures.iter_calc(measures, qrel_pairs, run_pairs):
        scores[str(metric.measure)][metric.query_id] = float(metric.value)
    return scores


def evaluate(run: RunLike, qrels: Qrels | str | os.PathLike, metrics: Sequence[str] = DEFAULT_METRICS,
             candidates: Candidates | None = None) -> dict[str, float]:
    """Mean of each metric over the judged queries: ``{"nDCG@10": 0.68, ...}``.

    ``run`` and ``qrels`` as for :func:`per_query`: e.g. ``evaluate("my.run", "qrels/test.tsv")``.
    """
    table = per_query(run, qrels, metrics, candidates)
    return {name: (sum(v.values()) / len(v) if v else 0.0) for name, v in table.items()}


def stage_report(run: Run, qrels: Qrels, quality_metric: str = "nDCG@10") -> list[dict]:
    """One row per stage: k, recall of what it kept, quality if the cascade stopped there, cost."""
    rows = []
    for trace in run.stages:
        kept = trace.candidates.doc_idx.shape[1]
        recall_name = f"R@{trace.k or max(kept, 1)}"
        values = evaluate(run, qrels, [quality_metric, recall_name], trace.candidates)
        rows.append(_stage_row(trace, values, recall_name, quality_metric))
    return rows


def _stage_row(trace: StageTrace, values: dict[str, float], recall_name: str, quality: str) -> dict:
    queries = max(trace.candidates.num_queries, 1)
    row = {
        "stage": trace.name,
        "k": trace.k,
        "recall_metric": recall_name,
        "recall": values[recall_name],
        quality: values[quality],
        "ms_per_query": 1000.0 * trace.seconds / queries,
        "index_s": trace.index_seconds,
        "index_bytes": trace.index_info.get("index_bytes"),
        "bytes_per_token": trace.index_info.get("bytes_per_token"),
    }
    for phase, seconds in sorted(trace.phases.items()):
        row[f"{phase}_ms_per_query"] = 1000.0 * seconds / queries
    return row


def make_folds(queries: Sequence[str], folds: int, seed: int = 0) -> list[tuple[str, ...]]:
    """``queries`` shuffled (by ``seed``) and cut into ``folds`` near-equal parts."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(queries):
        raise ConfigError(f"folds must be an integer from 2 to the number of queries ({len(queries)}), got {folds!r}")
    order = np.random.default_rng(seed).permutation(sorted(queries))
    return [tuple(str(q) for q in part) for part in np.array_split(order, folds)]
