"""The `cascade` command end to end, on a tiny dataset made in the test."""
import json
import os
import subprocess
import sys

import pytest

from cascade.app.runner import RESULT_FILES

from conftest import REPO


def cascade(*args, cwd=REPO, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "cascade.app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_writes_results_and_prints_metrics(tiny_beir, tmp_path):
    out = tmp_path / "run"
    proc = cascade("run", "pipeline=bm25", f"dataset.path={tiny_beir}", "stage.bm25.k=3", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["nDCG@10", "RR@10", "R@100", "R@1000"]
    assert 0 < metrics["nDCG@10"] <= 1
    assert "| nDCG@10 |" in proc.stdout and f"results saved in {out}" in proc.stdout
    stages = json.loads((out / "stages.json").read_text())
    assert stages[0]["stage"] == "bm25" and stages[0]["k"] == 3 and stages[0]["recall_metric"] == "R@3"
    assert len((out / "run.trec").read_text().splitlines()) <= 3 * 4
    assert "k: 3" in (out / "config.yaml").read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask  # as any file, not mkstemp's 0600
    noise = proc.stdout + proc.stderr
    assert "[bm25s]" not in noise and "fontManager" not in noise and "Traceback" not in noise
    logged = [line for line in noise.splitlines() if line.startswith("[") and "][" in line]
    assert logged and all("][cascade." in line for line in logged), logged  # only cascade's own log lines


def test_saved_run_file_evaluates_to_exactly_metrics_json(scifact_path, tmp_path):
    """run.trec is written at full precision: evaluating it gives metrics.json to the last bit."""
    import ir_measures

    from cascade.core.data import load_beir
    from cascade.core.evaluation import evaluate
    from cascade.core.results import read_trec_run

    out = tmp_path / "run"
    proc = cascade("run", "pipeline=bm25", f"dataset.path={scifact_path}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    ds = load_beir(scifact_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert evaluate(read_trec_run(out / "run.trec", ds.corpus.ids, ds.query_ids), ds.qrels, list(metrics)) == metrics
    direct = ir_measures.calc_aggregate([ir_measures.parse_measure(m) for m in metrics], ds.qrels,
                                        ir_measures.read_trec_run(str(out / "run.trec")))
    assert {str(k): v for k, v in direct.items()} == pytest.approx(metrics, abs=1e-12)


def test_a_reranker_first_fails_before_any_indexing(tiny_beir, tmp_path):
    """A cross-encoder cannot retrieve: said before BM25 or any model is touched."""
    from cascade.testing import tiny_cross_encoder

    model = tiny_cross_encoder(tmp_path / "ce")
    proc = cascade("run", "pipeline=bm25_ce", f"dataset.path={tiny_beir}", f"stage.cross_encoder.model={model}",
                   "pipeline.stages=[${stage.cross_encoder},${stage.bm25}]", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path, env_extra={"CASCADE_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2 and "cannot retrieve from the whole corpus" in proc.stderr, proc.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_rank_bm25_backend_and_custom_metrics(tiny_beir, tmp_path):
    out = tmp_path / "run"
    proc = cascade("run", "pipeline=bm25", f"dataset.path={tiny_beir}", "stage.bm25.backend=rank_bm25",
                   "metrics=[P@1,AP]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads((out / "metrics.json").read_text())) == ["P@1", "AP"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.path=/no/such/dir", "does not exist; set dataset.path"),
        ("dataset.split=dev", "available splits: ['test']"),
        ("stage.bm25.k=0", "k must be a positive integer"),
        ("stage.bm25.k=ten", "k must be a positive integer"),
        ("stage.bm25._target_=cascade.stages.nope.BM25", "_target_ must be an importable"),
        ("stage.bm25._target_=stages.bm25.BM25", "is not allowed"),
        ("metrics=[nDCG@ten]", "not an ir-measures name"),
        ("max_queries=abc", "max_queries must be a positive integer"),
        ("metrics=[]", "metrics is empty"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tiny_beir, tmp_path, override, message):
    out = tmp_path / "run"
    args = ["pipeline=bm25", f"dataset.path={tiny_beir}", f"hydra.run.dir={out}", override]
    proc = cascade("run", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "metrics.json").exists()


def test_usage_and_unknown_command():
    assert cascade().returncode == 2
    proc = cascade("frobnicate")
    assert proc.returncode == 2 and "unknown command" in proc.stderr


def test_default_cascade_runs_on_a_tiny_dataset(tiny_beir, tmp_path):
    """The default pipeline (BM25 >> bi-encoder >> ColBERT on the packaged MiniLM) end to end."""
    out = tmp_path / "run"
    proc = cascade("run", f"dataset.path={tiny_beir}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    stages = json.loads((out / "stages.json").read_text())
    assert [row["stage"] for row in stages] == ["bm25", "biencoder", "colbert"]
    assert all(row["ms_per_query"] > 0 for row in stages)


def test_version_and_help_exit_codes():
    import cascade as pkg

    version = cascade("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"cascade {pkg.__version__}"
    assert cascade("--help").returncode == 0
    assert cascade().returncode == 2


def test_user_config_dir_adds_pipelines_beside_the_packaged_ones(tiny_beir, tmp_path):
    (tmp_path / "myconf" / "pipeline").mkdir(parents=True)
    (tmp_path / "myconf" / "pipeline" / "short.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /stage/bm25@stage.bm25\nstage:\n  bm25:\n    k: 2\n"
        "pipeline:\n  _target_: cascade.Pipeline\n  name: short\n  stages: ['${stage.bm25}']\n")
    proc = cascade("run", "--config-dir", str(tmp_path / "myconf"), "pipeline=short", f"dataset.path={tiny_beir}",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "stages.json").read_text())[0]["k"] == 2
    assert (tmp_path / "run" / "run.trec").read_text().count("q1 Q0") == 2


def test_ctrl_c_exits_quietly_with_130(tiny_beir, tmp_path):
    import signal
    import time

    (tmp_path / "sleepy.py").write_text(
        "import time\nfrom cascade.stages.bm25 import BM25\n\nclass Sleepy(BM25):\n"
        "    def load(self, corpus, artifacts):\n        print('loading', flush=True)\n        time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cascade.app.cli",
            "run",
            "pipeline=bm25",
            f"dataset.path={tiny_beir}",
            "stage.bm25._target_=sleepy.Sleepy",
            "allowed_targets=[sleepy]",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a terminal's Ctrl-C, even when this suite runs in the background (`cmd &`
        # starts with SIGINT ignored, which a child would inherit)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    line = ""
    while "loading" not in line and time.time() < deadline:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not (tmp_path / "run" / "metrics.json").exists()
