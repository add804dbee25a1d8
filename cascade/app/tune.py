"""Budget-aware tuning: the configuration with the best quality under a per-query latency budget, honestly.

Choosing the best of many configurations on the same queries it is then scored on overstates its
quality. :func:`tune` reports two things: the configuration chosen on all queries (what to run),
and the cross-validated quality of the choosing procedure: queries are split into k folds; in
each fold the best configuration under the budget is chosen on the other folds' queries and
scored on the held-out ones, so every query's score comes from a choice that never saw it.
Those per-query scores are tested against the baseline's with the sweep's paired test
(:mod:`cascade.app.significance`).

``cascade tune DIR --budget-ms 10`` runs it over a finished sweep (:func:`tune_sweep`);
``Experiment(...).best_under(ms=10)`` over the pipelines of an experiment. Latency is each
configuration's measured ms/query (wall time of all its stages, index build/load excluded).
"""
from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cascade.app.significance import Comparison, check_test, compare
from cascade.core.errors import ConfigError, DataError
from cascade.core.evaluation import make_folds  # noqa: F401 - also part of this module's API


@dataclass(frozen=True)
class Candidate:
    """One configuration: its name, measured ms/query, per-query metric values and how to run it."""

    name: str
    ms_per_query: float
    scores: Mapping[str, float] = field(repr=False)
    command: str | None = None
    obj: Any = field(default=None, compare=False, repr=False)  # e.g. the pipeline, in Python


@dataclass(frozen=True)
class Fold:
    """One fold: the queries held out, the configuration chosen on the others, its two means."""

    held_out: tuple[str, ...]
    chosen: str
    train_value: float
    held_out_value: float


@dataclass(frozen=True)
class TuneResult:
    """The tuned choice under ``budget_ms`` and the cross-validated quality of making it."""

    budget_ms: float
    metric: str
    test: str
    chosen: Candidate  # chosen on all queries: what to run
    value: float  # its mean on all queries (in-sample: the choice saw them)
    baseline: Candidate
    baseline_value: float
    cv_value: float  # mean over queries of the held-out scores of each fold's choice
    cv: Comparison  # those per-query scores against the baseline's (delta, p_value)
    folds: tuple[Fold, ...]
    queries: int
    under_budget: int
    candidates: int

    @property
    def stable(self) -> int:
        """How many folds chose the same configuration as the choice on all queries."""
        return sum(f.chosen == self.chosen.name for f in self.folds)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("chosen", "baseline"):
            out[key] = {"name": out[key]["name"], "ms_per_query": out[key]["ms_per_query"],
                        "command": out[key]["command"]}
        out["folds"] = [{**f, "held_out": len(f["held_out"])} for f in out["folds"]]
        return out


def _mean(scores: Mapping[str, float], queries: Sequence[str]) -> float:
    return float(np.mean([scores[q] for q in queries])) if len(queries) else float("nan")


def choose(candidates: Sequence[Candidate], budget_ms: float, queries: Sequence[str]) -> Candidate:
    """The candidate with the best mean over ``queries`` among those within ``budget_ms``.

    Ties go to the faster one, then to the earlier one.
    """
    feasible = [c for c in candidates if c.ms_per_query <= budget_ms]
    if not feasible:
        fastest = min(candidates, key=lambda c: c.ms_per_query)
        raise ConfigError(f"no configuration runs within {budget_ms:g} ms/query; the fastest, {fastest.name}, "
                          f"takes {fastest.ms_per_query:.2f}: raise the budget or sweep cheaper settings")
    order = {id(c): i for i, c in enumerate(candidates)}
    return max(feasible, key=lambda c: (_mean(c.scores, queries), -c.ms_per_query, -order[id(c)]))


def cross_validate(candidates: Sequence[Candidate], budget_ms: float,
                   folds: Sequence[Sequence[str]]) -> tuple[dict[str, float], list[Fold]]:
    """Per-query held-out scores of the choice made without each query, and the folds' choices."""
    held: dict[str, float] = {}
    record = []
    for i, test_queries in enumerate(folds):
        train = [q for j, part in enumerate(folds) if j != i for q in part]
        best = choose(candidates, budget_ms, train)
        held.update({q: float(best.scores[q]) for q in test_queries})
        record.append(Fold(tuple(test_queries), best.name, _mean(best.scores, train),
                           _mean(best.scores, list(test_queries))))
    return held, record


def tune(
    candidates: Sequence[Candidate],
    baseline: Candidate,
    budget_ms: float,
    folds: int | Sequence[Sequence[str]] = 5,
    seed: int = 0,
    test: str = "ttest",
    metric: str = "",
) -> TuneResult:
    """The best candidate under ``budget_ms`` and the cross-validated gain of choosing it over ``baseline``.

    ``folds`` is a number of folds (queries shuffled by ``seed``) or the folds themselves
    (lists of query ids covering the shared queries once each).
    """
    check_test(test)
    if not candidates:
        raise ConfigError("no configurations to choose from (no finished jobs?)")
    if not isinstance(budget_ms, (int, float)) or isinstance(budget_ms, bool) or not budget_ms > 0:
        raise ConfigError(f"the budget must be a positive number of ms per query, got {budget_ms!r}")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ConfigError(f"configuration names must be unique, got {names}")
    shared = set(baseline.scores).intersection(*(c.scores for c in candidates))
    if not shared:
        raise DataError("the configurations and the baseline have no evaluated query in common")
    queries = sorted(shared)
    parts = make_folds(queries, folds, seed) if isinstance(folds, int) else [tuple(p) for p in folds]
    flat = [q for p in parts for q in p]
    if sorted(flat) != queries:
        raise ConfigError("the folds must hold every shared query exactly once")
    chosen = choose(candidates, budget_ms, queries)
    held, record = cross_validate(candidates, budget_ms, parts)
    result = compare({q: baseline.scores[q] for q in queries}, held, test)
    assert result is not None  # shared queries are not empty
    return TuneResult(float(budget_ms), metric, test, chosen, _mean(chosen.scores, queries), baseline,
                      _mean(baseline.scores, queries), _mean(held, queries), result, tuple(record), len(queries),
                      sum(c.ms_per_query <= budget_ms for c in candidates), len(candidates))


# --- over a finished sweep: cascade tune DIR ----------------------------------------------------

def _command(path: Path) -> str:
    """``cascade run`` with the job's overrides (sweep.* reporting settings left out)."""
    import yaml

    lines = [str(o) for o in yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text(encoding="utf-8")) or []]
    kept = [o for o in lines if not o.partition("=")[0].lstrip("+~").startswith("sweep.")]
    return shlex.join(["cascade", "run", *kept])


def learned_in_sample(job_path: Path) -> bool:
    """Whether a job's config has a learned stage (cascade.stages.ltr.LearnedFusion) with ``in_sample: true``."""
    import yaml

    config = job_path / ".hydra" / "config.yaml"
    if not config.is_file():
        return False
    found, todo = False, [yaml.safe_load(config.read_text(encoding="utf-8"))]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if str(node.get("_target_", "")).endswith("ltr.LearnedFusion") and node.get("in_sample") is True:
                found = True
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def sweep_candidates(root: str | Path, metric: str | None = None,
                     baseline: Any = None, in_sample: bool = False) -> tuple[list[Candidate], Candidate, dict]:
    """The finished jobs of a sweep folder as candidates, the baseline job, and the sweep's settings.

    ``metric`` and ``baseline`` default to the sweep's ``sweep.metric`` and ``sweep.baseline``. A job whose
    learned stage scored the queries it was trained on (``in_sample: true``) is refused unless ``in_sample``;
    then its name says "(in-sample)".
    """
    from cascade.app import sweep

    path = sweep.check_sweep_dir(root)
    settings = sweep.sweep_settings(path)
    metric = metric or str(settings["metric"])
    jobs = sweep.find_jobs(path)
    sweep.label_jobs(jobs)
    ok = [j for j in jobs if j["status"] == "ok"]
    if not ok:
        raise sweep.NotASweepError(f"{path} holds no finished job (metrics.json); finish the sweep first")
    candidates = []
    for job in ok:
        table = json.loads((job["path"] / "per_query.json").read_text(encoding="utf-8"))
        if metric not in table:
            raise ConfigError(f"metric {metric!r} is not in {job['path'] / 'per_query.json'} "
                              f"(it has {', '.join(table)}); choose one of those with --metric")
        ms = job["summary"].get("ms_per_query")
        if ms is None:
            raise DataError(f"{job['path'] / 'summary.json'} has no ms_per_query; rerun that job")
        label = job["label"]
        if learned_in_sample(job["path"]):
            if not in_sample:
                raise ConfigError(f"job {label} ({job['path']}) has a learned stage scored on the queries it was "
                                  "trained on (in_sample: true): its figures are in-sample. Cross-validate it with "
                                  "cascade.Experiment, or pass --in-sample to tune with it labelled in-sample")
            label = f"{label} (in-sample)"
        candidates.append(Candidate(label, float(ms), table[metric], _command(job["path"])))
    wanted = baseline if baseline is not None else settings["baseline"]
    if not wanted:
        raise ConfigError("no baseline to test against: the sweep has no sweep.baseline; give one, "
                          "e.g. --baseline pipeline:cascade+stage.bm25.k:1000")
    base_job = sweep.find_baseline(jobs, wanted)
    if base_job is None:
        raise ConfigError(f"no finished job of {path} matches the baseline {wanted}")
    base = candidates[ok.index(base_job)]
    return candidates, base, {**settings, "metric": metric}


def tune_sweep(root: str | Path, budgets: Sequence[float], metric: str | None = None, folds: int = 5, seed: int = 0,
               test: str | None = None, baseline: Any = None, json_path: str | None = None,
               in_sample: bool = False) -> list[TuneResult]:
    """:func:`tune` for each budget over the sweep in ``root``; also written to ``json_path`` if given."""
    candidates, base, settings = sweep_candidates(root, metric, baseline, in_sample)
    results = [tune(candidates, base, b, folds, seed, test or str(settings["test"]), settings["metric"])
               for b in budgets]
    if json_path:
        from cascade.core.files import atomic_write_json

        atomic_write_json(json_path, {"sweep": str(root), "folds": folds, "seed": seed,
                                      "results": [r.to_dict() for r in results]})
    return results


def format_results(results: Sequence[TuneResult]) -> str:
    """The tuning table, the command line of each choice, and what the figures mean (Markdown)."""
    from cascade.app.tables import markdown_table

    if not results:
        return "(no budgets)"
    first = results[0]
    m = first.metric
    rows = [{"budget ms/query": f"{r.budget_ms:g}", "under budget": f"{r.under_budget} of {r.candidates}",
             "chosen (all queries)": r.chosen.name, "ms/query": f"{r.chosen.ms_per_query:.2f}",
             f"{m} (in-sample)": f"{r.value:.4f}", f"CV {m}": f"{r.cv_value:.4f}",
             f"baseline {m}": f"{r.baseline_value:.4f}", f"Δ CV {m}": f"{r.cv.delta:+.4f}",
             "p": f"{r.cv.p_value:.3g}", "folds choosing it": f"{r.stable} of {len(r.folds)}"} for r in results]
    test = {"ttest": "t-test", "randomization": "randomization test"}.get(first.test, first.test)
    lines = [markdown_table(rows), ""]
    lines += [f"budget {r.budget_ms:g} ms/query: {r.chosen.command or r.chosen.name}" for r in results]
    lines += ["", f"- Baseline: {first.baseline.name} ({first.baseline.ms_per_query:.2f} ms/query); "
              f"{first.queries} queries, {len(first.folds)} folds.",
              f"- CV {m}: each query scored by the configuration chosen (best {m} within the budget) on the "
              "other folds' queries; Δ and p: two-sided paired " + test + f" of those per-query {m} values "
              "against the baseline's. The in-sample figure is optimistic: that choice saw every query.",
              "- ms/query: each configuration's measured wall time of all stages per query in its sweep job "
              "(summary.json ms_per_query; index build/load excluded)."]
    if any("(in-sample)" in r.chosen.name for r in results):
        lines.append("- (in-sample): a learned stage scored the queries it was trained on, so its figures are "
                     "optimistic; cascade.Experiment reports it by query-fold cross-validation.")
    return "\n".join(lines)


def parse_args(args: list[str]) -> dict:
    """``cascade tune`` options as keyword arguments of :func:`tune_sweep`."""
    parser = argparse.ArgumentParser(prog="cascade tune", description="best configuration of a sweep under a "
                                     "latency budget, with its cross-validated gain over the baseline")
    parser.add_argument("root", metavar="DIR", help="a finished sweep folder (multirun/...)")
    parser.add_argument("--budget-ms", required=True, help="ms/query budget(s), e.g. 10 or 5,10,20")
    parser.add_argument("--metric", default=None, help="per-query metric to maximise (default: sweep.metric)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds over queries (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    parser.add_argument("--test", choices=("ttest", "randomization"), default=None,
                        help="paired test (default: sweep.test)")
    parser.add_argument("--baseline", default=None, help="the default config, e.g. pipeline:bm25 "
                        "(default: sweep.baseline)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this file")
    parser.add_argument("--in-sample", dest="in_sample", action="store_true",
                        help="allow jobs whose learned stage was trained on the queries it scored (labelled in-sample)")
    options = vars(parser.parse_args(args))
    try:
        options["budgets"] = [float(b) for b in str(options.pop("budget_ms")).split(",") if b.strip()]
    except ValueError:
        raise ConfigError("--budget-ms takes numbers of ms per query, e.g. --budget-ms 10 or 5,10,20") from None
    if not options["budgets"]:
        raise ConfigError("--budget-ms takes numbers of ms per query, e.g. --budget-ms 10 or 5,10,20")
    return options


def main(args: list[str]) -> int:
    """``cascade tune DIR --budget-ms 10 [...]``: print the tuning table and each choice's command line."""
    results = tune_sweep(**parse_args(args))
    print(format_results(results))
    return 0
