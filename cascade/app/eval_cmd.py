"""``cascade eval RUN QRELS [--metrics ...]``: score a TREC run file against qrels, no corpus needed.

The run is read at full precision (tab- or space-separated, 6 columns or the 5-column
variants); documents the qrels do not judge count as not relevant. The metrics are computed
exactly as ``cascade run`` computes ``metrics.json``, so evaluating a run's ``run.trec`` prints
its ``metrics.json`` values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cascade.core.errors import DataError
from cascade.core.evaluation import DEFAULT_METRICS, evaluate, parse_metrics, per_query
from cascade.core.results import read_run
from cascade.core.sources import qrels as read_qrels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cascade eval", description="Evaluate a TREC run file against qrels (no corpus needed).")
    parser.add_argument(
        "run", metavar="RUN", help="TREC run file: 'qid Q0 docid rank score tag' lines, tab- or space-separated"
    )
    parser.add_argument(
        "qrels", metavar="QRELS", help="qrels file: TREC ('qid 0 docid rel') or BEIR TSV ('query-id corpus-id score')"
    )
    parser.add_argument("-m", "--metrics", nargs="+", default=None, metavar="METRIC",
                        help=f"ir-measures names, space- or comma-separated (default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("-c", "--complete", action="store_true",
                        help="average over every query in QRELS, a query the run lacks scoring 0 (as trec_eval -c); "
                             "default: the judged queries of the run")
    parser.add_argument("-q", "--per-query", action="store_true", help="also print each query's value")
    parser.add_argument("--json", action="store_true", help="print the means as JSON (as metrics.json holds them)")
    return parser


def metric_names(values: list[str] | None) -> list[str]:
    """Metric names from ``--metrics`` values, each possibly comma-separated."""
    if values is None:
        return list(DEFAULT_METRICS)
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise DataError("--metrics names no metric; give e.g. --metrics nDCG@10 R@100")
    return names


def load_inputs(run_path: str | Path, qrels_path: str | Path, complete: bool = False):
    """The run (``{qid: {docid: score}}``) and qrels, checked to share judged queries."""
    qrels = read_qrels(Path(qrels_path))
    ranked = read_run(run_path)
    judged = [q for q in ranked if q in qrels]
    if not qrels:
        raise DataError(f"{qrels_path} holds no judgments")
    if not judged:
        raise DataError(f"none of the {len(ranked)} queries of {run_path} is judged in {qrels_path} (the run has "
                        f"e.g. query {next(iter(ranked))!r}, the qrels {next(iter(qrels))!r}); check that the files "
                        "belong together")
    if complete:
        for qid in qrels:
            ranked.setdefault(qid, {})
    return ranked, qrels


def main(args: list[str]) -> int:
    opts = build_parser().parse_args(args)
    names = metric_names(opts.metrics)
    parse_metrics(names)  # a bad name is reported before the files are read
    ranked, qrels = load_inputs(opts.run, opts.qrels, opts.complete)
    means = evaluate(ranked, qrels, names)
    if opts.per_query:
        for name, values in per_query(ranked, qrels, names).items():
            for qid, value in values.items():
                print(f"{name}\t{qid}\t{value!r}")
    if opts.json:
        print(json.dumps(means, indent=2))
    else:
        for name, value in means.items():
            print(f"{name}\tall\t{value!r}")
    return 0
