"""trec_eval-grade metrics through ir-measures, overall and per stage of a pipeline."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import ir_measures

from cascade.core.candidates import Candidates
from cascade.core.data import Qrels
from cascade.core.errors import ConfigError
from cascade.core.results import Run, StageTrace

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


def per_query(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS,
              candidates: Candidates | None = None) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: value}}`` over every judged query of the run (0 when it retrieved nothing)."""
    measures = parse_metrics(metrics)
    judged = [q for q in run.query_ids if q in qrels]
    unjudged = len(run.query_ids) - len(judged)
    if unjudged:
        log.warning("%d run queries have no judgments and are not evaluated", unjudged)
    scores = {str(m): {q: 0.0 for q in judged} for m in measures}
    ranked = run.to_dict(candidates)
    run_pairs = [ir_measures.ScoredDoc(q, d, s) for q in judged for d, s in ranked.get(q, {}).items()]
    qrel_pairs = [ir_measures.Qrel(q, d, r) for q in judged for d, r in qrels[q].items()]
    for metric in ir_measures.iter_calc(measures, qrel_pairs, run_pairs):
        scores[str(metric.measure)][metric.query_id] = float(metric.value)
    return scores


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS,
             candidates: Candidates | None = None) -> dict[str, float]:
    """Mean of each metric over the judged queries: ``{"nDCG@10": 0.68, ...}``."""
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
