"""Sweeps on a Ray cluster: a Ray head on 127.0.0.1 started here, jobs sent by hydra-ray-launcher."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from ray_head import RAY_ENV, ray_head as start_ray_head

pytest.importorskip("ray", reason="Ray is not installed: pip install -e .[sweep]")
pytest.importorskip(
    "hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed: pip install -e .[sweep]"
)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``HOST:PORT`` of a Ray head started on 127.0.0.1, with its own cache dir (not the jobs')."""
    log = tmp_path_factory.mktemp("ray_head") / "head.log"
    with start_ray_head(log, {"CASCADE_CACHE_DIR": str(tmp_path_factory.mktemp("head_cache"))}) as address:
        yield address


def _sweep(tmp_path, tiny_beir, cache, *launcher):
    env = {**os.environ, **RAY_ENV, "CASCADE_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "cascade.app.cli", "run", "-m", "pipeline=bm25_rescore", f"dataset.path={tiny_beir}",
         "stage.rescore.k=1,3", f"hydra.sweep.dir={tmp_path / 'sweep'}", *launcher],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_sweep_on_a_ray_head(ray_head, tiny_beir, tmp_path):
    cache = tmp_path / "cache"
    proc = _sweep(tmp_path, tiny_beir, cache, "hydra/launcher=ray", f"hydra.launcher.ray.init.address={ray_head}",
                  "+hydra.launcher.ray.init.object_store_memory=null")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Connected to Ray cluster" in proc.stderr + proc.stdout
    root = tmp_path / "sweep"
    with (root / "results.csv").open() as handle:
        rows = {r["dir"]: r for r in csv.DictReader(handle)}
    assert sorted(rows) == ["stage.rescore.k=1", "stage.rescore.k=3"]
    assert all(r["status"] == "ok" and float(r["nDCG@10"]) > 0 for r in rows.values())
    for job in rows:  # each job ran as a Ray task (the launcher names the job ids)
        assert "job_id_for_" in (root / job / ".hydra" / "hydra.yaml").read_text()
    # the workers (started by the head, with another CASCADE_CACHE_DIR) used the driver's cache
    assert sorted(p.parent.parent.name for p in cache.glob("*/*/meta.json")) == ["bm25s", "tokens"]
    assert (root / "results.md").is_file() and (root / "quality_vs_latency.png").is_file()

    # the cluster preset joins the same head; the finished jobs are reused, not run again
    finished = {job: (root / job / "metrics.json").stat().st_mtime_ns for job in rows}
    again = _sweep(tmp_path, tiny_beir, cache, "hydra/launcher=ray_cluster",
                   f"hydra.launcher.ray.init.address={ray_head}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert finished == {job: (root / job / "metrics.json").stat().st_mtime_ns for job in rows}
