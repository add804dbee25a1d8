"""Failure paths: exit codes, a failing rerun of a finished job, `cascade download`, the sweep report's tests.

Mostly in-process (fast); two small real sweeps run the `cascade` command in a subprocess.
"""
from __future__ import annotations

import itertools
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from cascade.app import cli, download
from cascade.app.jobs import ERROR_FILE, finished, run_sweep_job
from cascade.app.runner import INPUTS_FILE, RESULT_FILES

from conftest import QRELS, QUERIES, REPO, cascade_cli as cascade, read_csv, write_beir

COMMANDS = re.findall(r"^  (\w+) ", cli.USAGE.split("options:")[0], flags=re.M)


# --- exit codes ------------------------------------------------------------------------------

def test_every_command_answers_help_with_exit_code_0(capsys):
    assert set(COMMANDS) >= {"run", "report", "download"}
    for command in COMMANDS:
        if command == "run":
            continue  # Hydra's --help: checked in a subprocess below
        try:
            code = cli.main([command, "--help"])
        except SystemExit as exit:  # argparse-based commands exit from inside
            code = exit.code
        out = capsys.readouterr()
        assert code == 0, f"cascade {command} --help exited {code}"
        assert "usage" in (out.out + out.err).lower(), command
    assert cli.main(["--help"]) == 0 and cli.main(["-h"]) == 0 and cli.main(["help"]) == 0
    assert "usage: cascade" in capsys.readouterr().out


def test_run_help_exits_0_in_a_subprocess(tmp_path):
    proc = cascade("run", "--help", cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 0 and "pipeline" in proc.stdout


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["download"], ["download", "a", "b", "c"], ["report"],
                                  ["report", "a", "b"]])
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "usage" in capsys.readouterr().err.lower()


def test_a_cascade_error_exits_2_with_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


# --- cascade download with a local zip --------------------------------------------------------

def _zip(tmp_path: Path, inner: str = "tiny", with_corpus: bool = True) -> None:
    data = write_beir(tmp_path / "src")
    if not with_corpus:
        (data / "corpus.jsonl").unlink()
    with zipfile.ZipFile(tmp_path / "tiny.zip", "w") as zipped:
        for path in data.rglob("*"):
            zipped.write(path, f"{inner}/{path.relative_to(data)}")


def test_cascade_download_unpacks_a_local_zip(tmp_path, monkeypatch, capsys):
    _zip(tmp_path)
    monkeypatch.setattr(download, "BEIR_URL", "file://" + str(tmp_path) + "/{name}.zip")
    assert cli.main(["download", "tiny", str(tmp_path / "data")]) == 0
    target = tmp_path / "data" / "tiny"
    assert capsys.readouterr().out.strip() == str(target)
    assert sorted(p.name for p in target.iterdir()) == ["corpus.jsonl", "qrels", "queries.jsonl"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["tiny"]  # no temp folder left
    (tmp_path / "tiny.zip").unlink()  # a complete folder is reused: nothing is fetched again
    assert cli.main(["download", "tiny", str(tmp_path / "data")]) == 0


@pytest.mark.parametrize("problem", ["missing", "not_beir", "not_a_zip"])
def test_cascade_download_failures_exit_2_and_leave_nothing(tmp_path, monkeypatch, capsys, problem):
    if problem == "not_beir":
        _zip(tmp_path, with_corpus=False)
    elif problem == "not_a_zip":
        (tmp_path / "tiny.zip").write_text("this is not a zip")
    monkeypatch.setattr(download, "BEIR_URL", "file://" + str(tmp_path) + "/{name}.zip")
    code = cli.main(["download", "tiny", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: "), err
    assert list((tmp_path / "data").iterdir()) == []


# --- a rerun whose changed job fails ------------------------------------------------------------

def _cfg(data: Path, out: Path, cache: Path, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=["pipeline=bm25", f"dataset.path={data}", f"paths.output_dir={out}",
                                            f"paths.cache_dir={cache}", *overrides])


def test_a_failed_rerun_of_a_changed_job_leaves_no_old_results(tmp_path):
    data, out, cache = write_beir(tmp_path / "data"), tmp_path / "job", tmp_path / "cache"
    first = run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2"))
    assert first.status == "ok" and first.metrics["nDCG@10"] > 0
    assert all((out / name).is_file() for name in RESULT_FILES)
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2")).status == "skipped"
    changed = run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=abc"))  # the changed config fails
    assert changed.status == "failed" and changed.metrics == {}
    assert [p.name for p in out.iterdir()] == [ERROR_FILE]  # nothing of the earlier run is left
    assert finished(_cfg(data, out, cache, "stage.bm25.k=2"), out) is None  # and nothing looks finished
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2")).status == "ok"
    assert not (out / ERROR_FILE).exists()


def test_resume_skips_only_a_finished_identical_job(tmp_path):
    data, out, cache = write_beir(tmp_path / "data"), tmp_path / "job", tmp_path / "cache"
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2")).status == "ok"
    skipped = run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2", "paths.cache_dir=" + str(tmp_path / "c2")))
    assert skipped.status == "skipped" and skipped.metrics == json.loads((out / "metrics.json").read_text())
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2", "sweep.resume=false")).status == "ok"
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=3")).status == "ok"  # another config runs
    for name in ("metrics.json", "config.yaml", "inputs.json", "stages.json", "summary.json"):
        saved = (out / name).read_bytes()
        (out / name).unlink()
        assert finished(_cfg(data, out, cache, "stage.bm25.k=3"), out) is None, f"finished without {name}"
        (out / name).write_bytes(saved)
    (out / "summary.json").write_text("{not json")
    assert finished(_cfg(data, out, cache, "stage.bm25.k=3"), out) is None
    (out / "config.yaml").write_text(": : not yaml [")
    assert finished(_cfg(data, out, cache, "stage.bm25.k=3"), out) is None
    failed = run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=3", "dataset.path=" + str(tmp_path / "none")))
    assert failed.status == "failed" and failed.error["type"] == "DataError"
    assert json.loads((out / ERROR_FILE).read_text())["type"] == "DataError"


def test_a_sweep_rerun_whose_jobs_fail_reports_them_failed(tmp_path):
    """The real command: a finished sweep, then its data breaks; the report shows no stale numbers."""
    data, cache = write_beir(tmp_path / "data"), tmp_path / "cache"
    args = ("run", "-m", "pipeline=bm25", f"dataset.path={data}", "stage.bm25.k=1,2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert cascade(*args, cwd=tmp_path, cache=cache).returncode == 0
    (data / "corpus.jsonl").write_text('{"_id": "d1", "title": "x", "text": "y"}\n{"_id": "d1"}\n')  # duplicate id
    proc = cascade(*args, cwd=tmp_path, cache=cache)
    assert proc.returncode == 1 and "2 of 2 jobs failed" in proc.stderr
    rows = read_csv(tmp_path / "sweep" / "results.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all(not r.get("nDCG@10") and not r.get("ms_per_query") and not r.get("ms_bm25") for r in rows), rows
    assert not list((tmp_path / "sweep").glob("*/metrics.json"))


# --- the significance columns of a real sweep report ------------------------------------------

def _naive_randomization(diff: list[float]) -> float:
    observed = abs(sum(diff) / len(diff))
    flips = [abs(sum(s * d for s, d in zip(signs, diff)) / len(diff))
             for signs in itertools.product((1, -1), repeat=len(diff))]
    return sum(f >= observed - 1e-12 for f in flips) / len(flips)


def _naive_holm(p: dict[str, float]) -> dict[str, float]:
    out, running = {}, 0.0
    for rank, (name, value) in enumerate(sorted(p.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (len(p) - rank) * value))
        out[name] = running
    return out


def test_sweep_report_randomization_and_holm_columns(tmp_path):
    """A small BM25 sweep against its k=4 baseline: delta, p (randomization) and p (Holm) recomputed by hand."""
    queries = {**QUERIES, "q5": "cats and dogs", "q6": "cold lakes", "q7": "the mat"}
    qrels = {**QRELS, "q5": {"d6": 1, "d2": 1, "d1": 1}, "q6": {"d5": 1}, "q7": {"d1": 1, "d3": 1}}
    data, cache = write_beir(tmp_path / "data", queries=queries, qrels=qrels), tmp_path / "cache"
    proc = cascade("run", "-m", "pipeline=bm25", f"dataset.path={data}", "stage.bm25.k=1,2,4",
                   "sweep.baseline=[stage.bm25.k=4]", "sweep.test=randomization", "metrics=[nDCG@10]",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, cache=cache)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "sweep"
    rows = {r["dir"]: r for r in read_csv(root / "results.csv")}
    per_query = {d: json.loads((root / d / "per_query.json").read_text())["nDCG@10"] for d in rows}
    base = "stage.bm25.k=4"
    assert rows[base]["baseline"] == "True" and not rows[base]["p_value"] and not rows[base]["p_holm"]
    p = {}
    for d in rows:
        if d == base:
            continue
        diff = [per_query[d][q] - per_query[base][q] for q in sorted(per_query[base])]
        assert float(rows[d]["delta_nDCG@10"]) == pytest.approx(np.mean(diff))
        p[d] = _naive_randomization(diff)
        assert float(rows[d]["p_value"]) == pytest.approx(p[d])
    assert len(set(p.values())) == 2 and min(p.values()) < 1  # two different, informative p-values
    for d, adjusted in _naive_holm(p).items():
        assert float(rows[d]["p_holm"]) == pytest.approx(adjusted)
    table = (root / "results.md").read_text()
    assert "p (Holm)" in table and "randomization" in table


def test_resume_ignores_logging_sweep_settings_and_progress(tmp_path):
    from cascade.app.jobs import JobOutcome, comparable

    data, out, cache = write_beir(tmp_path / "data"), tmp_path / "job", tmp_path / "cache"
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2")).status == "ok"
    again = run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2", "log_level=DEBUG", "sweep.metric=R@100"))
    assert again.status == "skipped"
    quiet, chatty = ({"stage": {"s": {"k": 3, "progress": p}}} for p in (False, True))
    assert comparable(quiet) == comparable(chatty)
    assert JobOutcome("failed", str(out)).metrics == {} and JobOutcome("failed", str(out)).error is None


def _counting(monkeypatch) -> dict[str, int]:
    """Count the runner's target checks and the objects it builds, by config key."""
    from cascade.app import runner

    counts: dict[str, int] = {"targets": 0}
    check, build = runner.check_targets, runner.build

    def counted_check(cfg, *keys):
        counts["targets"] += 1
        return check(cfg, *keys)

    def counted_build(node, what):
        counts[what] = counts.get(what, 0) + 1
        return build(node, what)

    monkeypatch.setattr(runner, "check_targets", counted_check)
    monkeypatch.setattr(runner, "build", counted_build)
    return counts


def test_a_run_checks_its_targets_once_and_builds_each_object_once(tmp_path, monkeypatch):
    data, out, cache = write_beir(tmp_path / "data"), tmp_path / "job", tmp_path / "cache"
    cfg = _cfg(data, out, cache, "stage.bm25.k=2")
    counts = _counting(monkeypatch)
    from cascade.app.runner import run

    run(cfg)
    assert counts == {"targets": 1, "pipeline": 1, "encoding": 1, "dataset": 1}


def test_a_resumed_job_that_must_rerun_builds_its_dataset_and_pipeline_once(tmp_path, monkeypatch):
    data, out, cache = write_beir(tmp_path / "data"), tmp_path / "job", tmp_path / "cache"
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2")).status == "ok"
    (out / INPUTS_FILE).write_text(json.dumps({"corpus": "another corpus"}))  # inputs changed: run it again
    counts = _counting(monkeypatch)
    assert run_sweep_job(_cfg(data, out, cache, "stage.bm25.k=2")).status == "ok"
    assert counts == {"targets": 1, "pipeline": 1, "encoding": 1, "dataset": 1}
