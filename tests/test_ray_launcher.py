"""Sweeps on a Ray cluster: a Ray head on 127.0.0.1 started here, jobs sent by hydra-ray-launcher."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install -e .[sweep]")
pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed: pip install -e .[sweep]")

RAY = Path(sys.executable).with_name("ray")
# no token authentication between this test's processes (Ray >= 2.5x enables it by default)
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(head: subprocess.Popen) -> None:
    """End the head and everything it started (its own process group), nothing else."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.killpg(head.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``HOST:PORT`` of a Ray head started on 127.0.0.1, with its own cache dir (not the jobs')."""
    if not RAY.is_file():
        pytest.skip(f"the ray command is not next to {sys.executable}")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    log = tmp_path_factory.mktemp("ray_head") / "head.log"
    env = {**os.environ, **RAY_ENV, "CASCADE_CACHE_DIR": str(tmp_path_factory.mktemp("head_cache"))}
    with log.open("w") as out:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            status = subprocess.run([str(RAY), "status", f"--address={address}"], env=env,
                                    capture_output=True, text=True, timeout=60)
            if status.returncode == 0 and "CPU" in status.stdout:
                break
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"a Ray head could not start on {address} here:\n{log.read_text()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)


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
