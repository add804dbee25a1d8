"""Sweeps: aggregation, significance, the plot, resume, failures and index reuse (`cascade run -m`)."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from scipy import stats

from cascade.app import sweep
from cascade.app.cli import main as cli_main
from cascade.app.naming import safe_name, sweep_name
from cascade.app.plot import pareto_front, quality_cost_figure
from cascade.app.significance import compare, holm, paired_ttest, randomization_test
from cascade.core.errors import ConfigError

from conftest import REPO, cascade_cli as cascade, read_csv, write_beir

CONF = REPO / "conf"


def artifacts(cache: Path) -> dict[str, float]:
    """Every index artifact folder in the cache with the mtime of its meta.json."""
    return {str(p.parent.relative_to(cache)): p.stat().st_mtime_ns for p in cache.glob("*/*/meta.json")}


# --- significance, Pareto front, names: pure functions ----------------------------------------

def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.random(40)
    b = a + rng.normal(0.05, 0.1, 40)
    assert paired_ttest(a, b) == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert paired_ttest(a, a) == 1.0


def test_randomization_test_matches_scipy_exact_and_monte_carlo():
    def mean_diff(x, y, axis=-1):
        return np.mean(x - y, axis=axis)

    rng = np.random.default_rng(2)
    a, b = rng.random(10), rng.random(10)
    exact = stats.permutation_test((b, a), mean_diff, permutation_type="samples", vectorized=True,
                                   n_resamples=np.inf)
    assert randomization_test(a, b) == pytest.approx(exact.pvalue)
    a, b = rng.random(30), rng.random(30) + 0.1
    approx = stats.permutation_test((b, a), mean_diff, permutation_type="samples", vectorized=True,
                                    n_resamples=20000, rng=np.random.default_rng(3))
    assert randomization_test(a, b, n_resamples=20000) == pytest.approx(approx.pvalue, abs=0.01)


def test_compare_uses_shared_queries_and_holm_adjusts():
    base = {"q1": 0.1, "q2": 0.5, "q3": 0.3, "q4": 0.9}
    other = {"q1": 0.3, "q2": 0.6, "q3": 0.2, "q5": 1.0}
    result = compare(base, other)
    assert result.queries == 3 and result.delta == pytest.approx((0.2 + 0.1 - 0.1) / 3)
    assert result.p_value == pytest.approx(stats.ttest_rel([0.3, 0.6, 0.2], [0.1, 0.5, 0.3]).pvalue)
    assert compare(base, {"x": 1.0}) is None
    with pytest.raises(ConfigError, match="ttest, randomization"):
        compare(base, other, test="wilcoxon")
    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])


def test_pareto_front():
    costs = [1.0, 2.0, 3.0, 2.5, 0.5]
    quality = [0.5, 0.7, 0.65, 0.8, 0.2]
    assert pareto_front(costs, quality) == [4, 0, 1, 3]


def test_plot_labels_every_point_and_draws_the_front():
    points = [{"label": f"p{i}", "cost": c, "quality": q}
              for i, (c, q) in enumerate([(1, 0.5), (2, 0.7), (3, 0.65), (2.5, 0.8), (2.4, 0.8)])]
    fig = quality_cost_figure(points, baseline="p1")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == [f"p{i}" for i in range(5)]
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    assert list(front.get_xdata()) == [1, 2, 2.4] and list(front.get_ydata()) == [0.5, 0.7, 0.8]


def test_folder_names_are_readable_and_safe():
    assert sweep_name(["+experiment=cutoffs"]) == "cutoffs"
    assert sweep_name(["+experiment=cutoffs", "max_queries=50"]) == "cutoffs,max_queries=50"
    assert sweep_name(["stage.bm25.k=100,1000"]) == "stage.bm25.k=100,1000"
    assert sweep_name([]) == "sweep"
    odd = safe_name("dataset.path=/data/x y")
    assert "/" not in odd and " " not in odd and odd != safe_name("dataset.path=/data/x_y")
    assert len(safe_name("k=" + "9" * 500)) < 140


# --- aggregation from job folders written here -----------------------------------------------

def fake_job(root: Path, name: str, num: int, overrides: list[str], per_query: dict | None = None,
             error: str | None = None, ms: float = 1.0) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+experiment=toy", *overrides]))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"pipeline": {"name": "bm25_rescore"}}))
    if error:
        (job / "error.json").write_text(json.dumps({"type": "ConfigError", "message": error, "traceback": ""}))
    if per_query is None:
        return
    mean = float(np.mean(list(per_query.values())))
    stages = [{"stage": "bm25", "k": 100, "ms_per_query": ms / 4, "index_s": 0.5},
              {"stage": "rescore", "k": 10, "ms_per_query": 3 * ms / 4, "index_s": 0.25}]
    (job / "stages.json").write_text(json.dumps(stages))
    (job / "per_query.json").write_text(json.dumps({"nDCG@10": per_query}))
    (job / "summary.json").write_text(json.dumps({"queries": len(per_query), "ms_per_query": ms, "index_s": 0.75}))
    (job / "metrics.json").write_text(json.dumps({"nDCG@10": mean}))


def test_report_from_job_folders(tmp_path):
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text(yaml.safe_dump({"sweep": {"baseline": ["stage.bm25.k=1000"]}}))
    base = {"q1": 0.2, "q2": 0.4, "q3": 0.9, "q4": 0.5}
    better = {"q1": 0.3, "q2": 0.6, "q3": 0.9, "q4": 0.7}
    fake_job(root, "stage.bm25.k=1000", 0, ["stage.bm25.k=1000"], base, ms=4.0)
    fake_job(root, "stage.bm25.k=100", 1, ["stage.bm25.k=100"], better, ms=2.0)
    fake_job(root, "stage.bm25.k=abc", 2, ["stage.bm25.k=abc"], error="bm25: k must be a positive integer")
    fake_job(root, "stage.bm25.k=10", 3, ["stage.bm25.k=10"])  # killed: no results, no error
    (root / "not_a_job").mkdir()

    summary = sweep.write_report(root)
    rows = read_csv(root / "results.csv")
    assert [r["job"] for r in rows] == ["bm25%1000", "bm25%100", "bm25%abc", "bm25%10"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "incomplete"]
    assert rows[0]["baseline"] == "True" and rows[0]["p_value"] == ""
    expected = stats.ttest_rel(list(better.values()), list(base.values())).pvalue
    assert float(rows[1]["p_value"]) == pytest.approx(expected)
    assert float(rows[1]["delta_nDCG@10"]) == pytest.approx(0.125)
    assert float(rows[1]["ms_per_query"]) == 2.0 and float(rows[1]["ms_rescore"]) == 1.5
    assert float(rows[1]["index_s"]) == 0.75 and rows[1]["pipeline"] == "bm25_rescore"
    assert rows[2]["error"] == "ConfigError: bm25: k must be a positive integer"
    assert summary.failed == [("stage.bm25.k=abc", rows[2]["error"])] and summary.incomplete == 1
    md = (root / "results.md").read_text()
    assert "bm25%1000 (baseline)" in md and "| failed" in md and "4 jobs: 2 ok, 1 failed, 1 incomplete" in md
    assert (root / sweep.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_and_its_errors(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "is not a sweep: a sweep folder holds multirun.yaml" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("{}")
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "a single run's folder" in capsys.readouterr().err
    assert cli_main(["report"]) == 2
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text("{}\n")
    fake_job(root, "a", 0, ["stage.bm25.k=1"], {"q1": 0.5})
    assert cli_main(["report", str(root)]) == 0
    assert "| bm25%1 " not in capsys.readouterr().out  # a single job is labelled by its folder
    assert (root / "results.csv").is_file() and (root / "results.md").is_file()


# --- experiments: every job of every study composes --------------------------------------------

def _compose(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides + ["paths.output_dir=unused"], return_hydra_config=True)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_job_of_every_experiment_composes(experiment):
    cfg = _compose([f"+experiment={experiment}"])
    params = cfg.hydra.sweeper.params
    assert params, f"experiment {experiment} sweeps nothing"
    grid = [[f"{key}={v.strip()}" for v in str(values).split(",")] for key, values in params.items()]
    baseline = set(cfg.sweep.baseline or [])
    matched = 0
    for job in itertools.product(*grid):
        job_cfg = _compose([f"+experiment={experiment}", *job])
        assert job_cfg.pipeline.stages
        matched += baseline <= set(job)
    assert not baseline or matched == 1, f"the baseline {sorted(baseline)} should pick exactly one job"


# --- real multiruns on a tiny dataset, in a subprocess -----------------------------------------

def test_sweep_writes_report_resumes_and_never_rebuilds_indexes(tiny_beir, tmp_path):
    cache = tmp_path / "cache"
    # the experiment's grid narrowed from the command line; its baseline is bm25 1000 >> rescore 100
    sweep_args = ["run", "-m", "+experiment=bm25_cutoffs", "dataset.path=tiny", "stage.bm25.k=2,1000",
                  "stage.rescore.k=1,100"]
    first = cascade(*sweep_args, cwd=tiny_beir.parent, cache=cache)
    assert first.returncode == 0, first.stderr
    root = tiny_beir.parent / "multirun" / "bm25_cutoffs,dataset.path=tiny,stage.bm25.k=2,1000,stage.rescore.k=1,100"
    assert [p.name for p in root.parent.iterdir()] == [root.name]
    jobs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert jobs == ["stage.bm25.k=1000,stage.rescore.k=1", "stage.bm25.k=1000,stage.rescore.k=100",
                    "stage.bm25.k=2,stage.rescore.k=1", "stage.bm25.k=2,stage.rescore.k=100"]
    rows = {r["dir"]: r for r in read_csv(root / "results.csv")}
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["stage.bm25.k=1000,stage.rescore.k=100"]["baseline"] == "True"
    assert all(r["p_value"] for d, r in rows.items() if d != "stage.bm25.k=1000,stage.rescore.k=100")
    assert (root / "results.md").is_file() and (root / sweep.PLOT).is_file()
    assert "| bm25%2 rescore%1 " in first.stdout and "results: " in first.stdout
    built = artifacts(cache)
    assert sorted(k.split("/")[0] for k in built) == ["bm25s", "tokens"]  # one index each, shared by 4 jobs

    finished = {j: (root / j / "metrics.json").stat().st_mtime_ns for j in jobs}
    again = cascade(*sweep_args, cwd=tiny_beir.parent, cache=cache)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reused saved results") == 4
    assert finished == {j: (root / j / "metrics.json").stat().st_mtime_ns for j in jobs}

    # a killed job (no metrics.json) and a job whose saved config differs run again; the others do not
    (root / jobs[0] / "metrics.json").unlink()
    saved = root / jobs[1] / "config.yaml"
    saved.write_text(saved.read_text().replace("k1: 1.2", "k1: 0.9"))
    third = cascade(*sweep_args, cwd=tiny_beir.parent, cache=cache)
    assert third.returncode == 0, third.stderr
    assert third.stdout.count("reused saved results") == 2 and third.stdout.count(": done: ") == 2
    assert "k1: 1.2" in saved.read_text()

    # a sweep over the later stage's cutoff only: new jobs, the same indexes, none rebuilt
    later = cascade("run", "-m", "pipeline=bm25_rescore", "dataset.path=tiny", "stage.rescore.k=2,4",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tiny_beir.parent, cache=cache)
    assert later.returncode == 0, later.stderr
    assert later.stdout.count(": done: ") == 2
    assert artifacts(cache) == built


def test_failed_job_is_a_row_and_the_others_stand(tiny_beir, tmp_path):
    proc = cascade("run", "-m", "pipeline=bm25", f"dataset.path={tiny_beir}", "stage.bm25.k=abc,2",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 1
    assert "1 of 2 jobs failed" in proc.stderr
    assert (
        "stage.bm25.k=abc: ConfigError: pipeline: bm25: k must be a positive integer or null, got 'abc'" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    rows = {r["dir"]: r for r in read_csv(tmp_path / "sweep" / "results.csv")}
    assert rows["stage.bm25.k=abc"]["status"] == "failed" and "got 'abc'" in rows["stage.bm25.k=abc"]["error"]
    assert rows["stage.bm25.k=2"]["status"] == "ok" and float(rows["stage.bm25.k=2"]["nDCG@10"]) > 0
    error = json.loads((tmp_path / "sweep" / "stage.bm25.k=abc" / "error.json").read_text())
    assert error["type"] == "ConfigError" and "Traceback" in error["traceback"]
    assert not (tmp_path / "sweep" / "stage.bm25.k=abc" / "metrics.json").exists()


def test_unknown_experiment_is_a_clear_error(tmp_path):
    proc = cascade("run", "-m", "+experiment=nope", cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode != 0
    assert "Could not find 'experiment/nope'" in proc.stderr
    assert "Available options in 'experiment'" in proc.stderr and "cutoffs" in proc.stderr
    assert not (tmp_path / "multirun").exists()


SLOW_STAGE = '''
import logging, time
from cascade.index import store
from cascade.stages.bm25 import BM25


class SlowBM25(BM25):
    """BM25 whose index takes seconds to build: parallel jobs would both build it without the lock."""

    def load(self, corpus, artifacts):
        def build(tmp):
            logging.getLogger("cascade.slow").warning("building the slow artifact")
            time.sleep(3)

        store.ensure(store.artifact_dir(self.cache_dir, "slow", corpus=corpus.fingerprint), build,
                     {"corpus": corpus.fingerprint})
        super().load(corpus, artifacts)
'''


def test_parallel_jobs_build_each_index_once(tiny_beir, tmp_path):
    """joblib runs two jobs at once on a cold cache: one builds each index, the other waits and loads it."""
    (tmp_path / "slowstage.py").write_text(SLOW_STAGE)
    cache = tmp_path / "cache"
    env = {**os.environ, "CASCADE_CACHE_DIR": str(cache), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cascade.app.cli",
            "run",
            "-m",
            "pipeline=bm25",
            f"dataset.path={tiny_beir}",
            "stage.bm25._target_=slowstage.SlowBM25",
            "allowed_targets=[slowstage]",
            "stage.bm25.k=3,5",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    logs = proc.stdout + proc.stderr
    assert logs.count("building the slow artifact") == 1 and logs.count("building bm25s index") == 1
    assert sorted(k.split("/")[0] for k in artifacts(cache)) == ["bm25s", "slow"]
    assert [r["status"] for r in read_csv(tmp_path / "sweep" / "results.csv")] == ["ok", "ok"]


def test_submitit_local_launcher(tiny_beir, tmp_path):
    """The submitit launcher (the SLURM path, here its local executor) runs the same jobs into the same folders."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e .[slurm]")
    proc = cascade("run", "-m", "pipeline=bm25_rescore", f"dataset.path={tiny_beir}", "stage.rescore.k=1,3",
                   "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "sweep" / "results.csv")
    assert sorted(r["dir"] for r in rows) == ["stage.rescore.k=1", "stage.rescore.k=3"]
    assert all(r["status"] == "ok" for r in rows)
    assert sorted(k.split("/")[0] for k in artifacts(tmp_path / "cache")) == ["bm25s", "tokens"]


def test_resume_ignores_where_caches_live_but_not_settings():
    from cascade.app.jobs import comparable

    base = {"paths": {"cache_dir": "/a"}, "stage": {"bm25": {"k": 100, "cache_dir": "/a"}}, "metrics": ["nDCG@10"]}
    moved = {"paths": {"cache_dir": "/b"}, "stage": {"bm25": {"k": 100, "cache_dir": "/b"}}, "metrics": ["nDCG@10"]}
    changed = {"paths": {"cache_dir": "/a"}, "stage": {"bm25": {"k": 300, "cache_dir": "/a"}}, "metrics": ["nDCG@10"]}
    assert comparable(base) == comparable(moved)
    assert comparable(base) != comparable(changed)


def test_resume_reruns_a_job_whose_data_changed(tmp_path):
    """Resume compares what the job read (corpus, queries, qrels, models), not only its config."""
    data = write_beir(tmp_path / "data")
    args = (
        "run",
        "-m",
        "pipeline=bm25",
        f"dataset.path={data}",
        "stage.bm25.k=2,5",
        f"hydra.sweep.dir={tmp_path / 'sw'}",
    )
    first = cascade(*args, cwd=tmp_path, cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    again = cascade(*args, cwd=tmp_path, cache=tmp_path / "cache")
    assert again.stdout.count("reused saved results") == 2
    corpus = (data / "corpus.jsonl").read_text().replace("The cat sat on the mat", "Nothing about felines")
    (data / "corpus.jsonl").write_text(corpus)
    changed = cascade(*args, cwd=tmp_path, cache=tmp_path / "cache")
    assert changed.returncode == 0, changed.stderr
    assert "reused saved results" not in changed.stdout and changed.stdout.count(": done:") == 2


def test_report_refuses_a_folder_without_jobs(tmp_path):
    """cascade report never overwrites results it cannot rebuild."""
    (tmp_path / "multirun.yaml").write_text("sweep: {metric: nDCG@10}\n")
    (tmp_path / "results.md").write_text("# precious results\n")
    proc = cascade("report", str(tmp_path), cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 2 and "holds no job folders" in proc.stderr
    assert (tmp_path / "results.md").read_text() == "# precious results\n"
