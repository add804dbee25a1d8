"""Gather a sweep's jobs into ``results.csv``, ``results.md`` and a quality-vs-cost plot.

A sweep folder (``cascade run -m ...``) holds ``multirun.yaml`` and one folder per job with
``.hydra/overrides.yaml``. A job is ``ok`` when it wrote ``metrics.json``, ``failed`` when it
wrote ``error.json``, else ``incomplete`` (killed, or still running). The end-of-sweep callback
(:mod:`cascade.app.callbacks`) and ``cascade report DIR`` both call :func:`write_report`.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from cascade.app.baseline import match_baseline
from cascade.app.naming import split_experiment
from cascade.app.plot import plot_quality_vs_cost
from cascade.app.significance import compare_to_baseline
from cascade.app.tables import markdown_table
from cascade.core.errors import CascadeError
from cascade.core.files import atomic_write_text

log = logging.getLogger(__name__)

PLOT = "quality_vs_latency.png"
DEFAULTS = {"baseline": None, "metric": "nDCG@10", "test": "ttest"}


class NotASweepError(CascadeError):
    """``cascade report`` was pointed at something that is not a sweep folder."""


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`write_report` wrote: the table, where, and which jobs failed or are unfinished."""

    dir: str
    table: str
    rows: int
    failed: list[tuple[str, str | None]]
    incomplete: int
    results: str
    plot: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SweepSummary:
        return cls(data["dir"], data["table"], int(data["rows"]), [tuple(f) for f in data["failed"]],
                   int(data["incomplete"]), data["results"], data.get("plot"))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_sweep_dir(path: str | Path) -> Path:
    """``path`` if it is a sweep folder, else a :class:`NotASweepError` saying what it is."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise NotASweepError(f"{root} does not exist or is not a folder; give the folder of a sweep "
                             "(`cascade run -m ...` writes them under multirun/)")
    if not (root / "multirun.yaml").is_file():
        what = "a single run's folder (it has metrics.json)" if (root / "metrics.json").is_file() else "not a sweep"
        raise NotASweepError(f"{root} is {what}: a sweep folder holds multirun.yaml and one folder per job; "
                             "run a sweep with `cascade run -m ...` and give its folder under multirun/")
    return root


def sweep_settings(root: Path) -> dict:
    """The sweep's ``sweep:`` settings (baseline, metric, test) from its multirun.yaml."""
    master = _read_yaml(root / "multirun.yaml") or {}
    return {**DEFAULTS, **{k: v for k, v in (master.get("sweep") or {}).items() if v is not None}}


def read_job(path: Path) -> dict:
    """What one job folder holds: overrides, status, metrics, stage rows, error."""
    overrides = [str(o) for o in _read_yaml(path / ".hydra" / "overrides.yaml") or []]
    hydra_cfg = _read_yaml(path / ".hydra" / "hydra.yaml") or {}
    num = ((hydra_cfg.get("hydra") or {}).get("job") or {}).get("num")
    pipeline = ((_read_yaml(path / ".hydra" / "config.yaml") or {}).get("pipeline") or {}).get("name")
    job = {
        "dir": path.name,
        "path": path,
        "num": num if isinstance(num, int) else None,
        "overrides": split_experiment(overrides)[1],
        "pipeline": pipeline,
        "metrics": _read_json(path / "metrics.json"),
        "summary": _read_json(path / "summary.json") or {},
        "stages": _read_json(path / "stages.json") or [],
        "error": _read_json(path / "error.json"),
    }
    job["status"] = "ok" if job["metrics"] is not None else "failed" if job["error"] else "incomplete"
    return job


def find_jobs(root: Path) -> list[dict]:
    jobs = [read_job(p) for p in sorted(root.iterdir()) if (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(jobs, key=lambda j: (j["num"] is None, j["num"] if j["num"] is not None else 0, j["dir"]))


def _as_dict(overrides: list[str]) -> dict[str, str]:
    return dict(o.partition("=")[::2] for o in overrides)


def _short(key: str, value: str) -> str:
    """``stage.bm25.k=100`` -> ``bm25%100`` (the Python API's cutoff), ``pipeline=x`` -> ``x``."""
    parts = key.lstrip("+~").split(".")
    if key.lstrip("+") == "pipeline":
        return value
    if len(parts) == 3 and parts[0] == "stage" and parts[2] == "k":
        return f"{parts[1]}%{value}"
    return f"{'.'.join(parts[-2:])}={value}"


def label_jobs(jobs: list[dict]) -> None:
    """Give each job a short ``label`` from the overrides that differ between jobs."""
    maps = [_as_dict(j["overrides"]) for j in jobs]
    keys = list(dict.fromkeys(k for m in maps for k in m))
    varying = [k for k in keys if len({m.get(k) for m in maps}) > 1]
    for job, m in zip(jobs, maps):
        job["label"] = " ".join(_short(k, m[k]) for k in varying if k in m) or job["dir"]


def find_baseline(jobs: list[dict], baseline: Any) -> dict | None:
    """The finished job whose overrides satisfy ``baseline`` (spellings: :mod:`cascade.app.baseline`)."""
    return match_baseline(jobs, baseline)


def _significance(jobs: list[dict], base: dict | None, metric: str, test: str) -> None:
    if base is None:
        return
    scores = {
        j["dir"]: (_read_json(j["path"] / "per_query.json") or {}).get(metric) for j in jobs if j["status"] == "ok"
    }
    reference = scores.get(base["dir"])
    others = [j for j in jobs if j["status"] == "ok" and j is not base and scores.get(j["dir"]) and reference]
    results = compare_to_baseline(reference or {}, {j["dir"]: scores[j["dir"]] or {} for j in others}, test, "holm")
    for job in others:
        result = results[job["dir"]]
        if result is not None:
            job["delta"], job["p_value"], job["paired_queries"] = result.delta, result.p_value, result.queries
            job["p_holm"] = result.p_adjusted


def job_row(job: dict, metric_names: list[str], stage_names: list[str], metric: str) -> dict:
    """One flat row of the results table."""
    row: dict[str, Any] = {"job": job["label"], "status": job["status"], "baseline": job.get("is_baseline", False)}
    row["pipeline"] = job["pipeline"]
    metrics = job["metrics"] or {}
    row.update({name: metrics.get(name) for name in metric_names})
    row[f"delta_{metric}"], row["p_value"], row["p_holm"] = job.get("delta"), job.get("p_value"), job.get("p_holm")
    stages = {s["stage"]: s for s in job["stages"]}
    row["ms_per_query"] = job["summary"].get("ms_per_query") if job["status"] == "ok" else None
    for name in stage_names:
        row[f"ms_{name}"] = stages[name]["ms_per_query"] if name in stages else None
    for name in stage_names:
        row[f"index_bytes_{name}"] = stages[name].get("index_bytes") if name in stages else None
        row[f"bytes_per_token_{name}"] = stages[name].get("bytes_per_token") if name in stages else None
    row["index_s"] = job["summary"].get("index_s") if job["status"] == "ok" else None
    row["queries"] = job["summary"].get("queries")
    row["overrides"] = " ".join(job["overrides"])
    error = job["error"] or {}
    row["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip() if error else None
    row["dir"] = job["dir"]
    return row


def collect(root: str | Path) -> tuple[list[dict], dict]:
    """Rows (one per job) of the sweep in ``root`` and the sweep's settings with its baseline label."""
    root = check_sweep_dir(root)
    settings = sweep_settings(root)
    jobs = find_jobs(root)
    label_jobs(jobs)
    metric = str(settings["metric"])
    base = find_baseline(jobs, settings["baseline"])
    if base is not None:
        base["is_baseline"] = True
    _significance(jobs, base, metric, str(settings["test"]))
    metric_names = list(dict.fromkeys(m for j in jobs for m in (j["metrics"] or {})))
    stage_names = list(dict.fromkeys(s["stage"] for j in jobs for s in j["stages"]))
    rows = [job_row(j, metric_names, stage_names, metric) for j in jobs]
    settings.update(baseline_label=base["label"] if base else None, metric_names=metric_names, stage_names=stage_names)
    return rows, settings


def _fmt(value: Any, digits: str = ".4f") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    return format(value, digits) if isinstance(value, float) else str(value)


def markdown_rows(rows: list[dict], settings: dict) -> list[dict]:
    """The rows as shown in results.md: formatted numbers, the columns worth reading."""
    metric = settings["metric"]
    out = []
    for row in rows:
        shown = {"job": row["job"] + (" (baseline)" if row["baseline"] else ""), "status": row["status"]}
        shown.update({name: _fmt(row[name]) for name in settings["metric_names"]})
        if settings["baseline_label"]:
            shown[f"Δ {metric}"] = _fmt(row[f"delta_{metric}"], "+.4f")
            shown["p"] = _fmt(row["p_value"], ".3g")
            shown["p (Holm)"] = _fmt(row["p_holm"], ".3g")
        shown["ms/query"] = _fmt(row["ms_per_query"], ".2f")
        shown.update({f"ms {name}": _fmt(row[f"ms_{name}"], ".2f") for name in settings["stage_names"]})
        shown["index s"] = _fmt(row["index_s"], ".2f")
        for name in settings["stage_names"]:
            size = row.get(f"index_bytes_{name}")
            if any(r.get(f"index_bytes_{name}") for r in rows):
                shown[f"MB {name}"] = _fmt(size / 1e6 if size else None, ".1f")
            if any(r.get(f"bytes_per_token_{name}") for r in rows):
                shown[f"B/token {name}"] = _fmt(row.get(f"bytes_per_token_{name}"), ".1f")
        if any(r["error"] for r in rows):
            shown["error"] = (row["error"] or "").replace("|", "\\|").replace("\n", " ")[:160]
        out.append(shown)
    return out


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["job"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _notes(rows: list[dict], settings: dict) -> list[str]:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "incomplete")}
    notes = [f"{len(rows)} jobs: {counts['ok']} ok, {counts['failed']} failed, {counts['incomplete']} incomplete "
             "(killed or still running; rerun the same command to resume)."]
    if settings["baseline"] and settings["baseline_label"]:
        test = {"ttest": "t-test", "randomization": "randomization test"}.get(settings["test"], settings["test"])
        notes.append(f"Baseline: `{settings['baseline_label']}`. Δ and p: two-sided paired {test} "
                     f"of per-query {settings['metric']} against the baseline over the queries both evaluated; "
                     "p (Holm) is adjusted for the number of rows compared.")
    elif settings["baseline"]:
        notes.append(f"Baseline {settings['baseline']} is not among the finished jobs, so no significance tests.")
    notes.append("ms/query: wall time of all stages per query; ms <stage>: that stage's share; index s: "
                 "seconds to build or load the indexes (built once per corpus, model and settings, then loaded); "
                 "MB / B/token <stage>: the size of that stage's index on disk, and per token for token indexes.")
    return notes


def write_report(root: str | Path) -> SweepSummary:
    """Write results.csv, results.md and the plot into the sweep folder ``root``; return a summary.

    A folder holding no job outputs is refused (:class:`NotASweepError`), so results that
    cannot be rebuilt (e.g. a committed results.md) are never overwritten with an empty table.
    """
    rows, settings = collect(root)
    root = Path(root)
    if not rows:
        raise NotASweepError(f"{root} holds no job folders (.hydra/overrides.yaml), so there is nothing to "
                             "report; its results.md and results.csv were left as they are")
    metric = settings["metric"]
    atomic_write_text(root / "results.csv", _csv_text(rows))
    ok = [r for r in rows if r["status"] == "ok" and r.get(metric) is not None and r["ms_per_query"] is not None]
    plot = None
    if ok:
        title = f"{root.name}: {metric} against ms/query ({len(ok)} of {len(rows)} jobs finished)"
        points = [{"label": r["job"], "cost": r["ms_per_query"], "quality": r[metric]} for r in ok]
        plot = plot_quality_vs_cost(points, root / PLOT, metric, title, settings["baseline_label"])
    table = markdown_table(markdown_rows(rows, settings)) if rows else "(no jobs yet)"
    parts = [f"# Sweep `{root.name}`", "", table, "", *(f"- {n}" for n in _notes(rows, settings))]
    if plot is not None:
        parts += ["", f"![{metric} against ms/query]({PLOT})"]
    atomic_write_text(root / "results.md", "\n".join(parts) + "\n")
    failed = [(r["dir"], r["error"]) for r in rows if r["status"] == "failed"]
    log.info("sweep report written to %s (%d jobs, %d failed)", root / "results.md", len(rows), len(failed))
    return SweepSummary(str(root), table, len(rows), failed, sum(r["status"] == "incomplete" for r in rows),
                        str(root / "results.md"), str(plot) if plot else None)
