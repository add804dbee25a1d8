"""`cascade serve --ray --replicas 2` on a local Ray head (127.0.0.1, started here): the same app on Ray
Serve; both replicas answer, each exactly as pipe.search; SIGTERM removes the app and exits 0."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray.serve", reason='Ray Serve is not installed: pip install -e ".[ray-serve]"')
httpx = pytest.importorskip("httpx", reason='httpx is not installed: pip install -e ".[test]"')

from cascade.app.index_cmd import compose_config  # noqa: E402
from cascade.app.runner import build_dataset, build_pipeline  # noqa: E402

from conftest import QUERIES  # noqa: E402
from ray_head import RAY_ENV, ray_head  # noqa: E402
from serve_helpers import free_port, same_ranking  # noqa: E402


def wait_healthy(url: str, server: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"cascade serve --ray did not come up:\n{server.communicate()[0][-4000:]}")
        time.sleep(0.5)


@pytest.mark.slow
def test_ray_serve_replicas_answer_as_pipe_search(tiny_beir, tmp_path):
    env = {**os.environ, **RAY_ENV, "CASCADE_CACHE_DIR": str(tmp_path / "cache")}
    port = free_port()
    overrides = ["pipeline=bm25", f"dataset.path={tiny_beir}"]
    with ray_head(tmp_path / "head.log", RAY_ENV) as address:
        server = subprocess.Popen([sys.executable, "-m", "cascade.app.cli", "serve", "--ray", "--replicas", "2",
                                   "--ray-address", address, "--port", str(port), *overrides],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, server)
            cfg = compose_config(overrides)
            pipe = build_pipeline(cfg).index(build_dataset(cfg).corpus)
            for query in QUERIES.values():
                body = httpx.post(f"{url}/search", json={"query": query, "k": 3}, timeout=60).json()
                assert same_ranking(body["results"][0]["hits"], pipe.search(query, k=3))
            pids = {httpx.get(f"{url}/health", timeout=30).json()["pid"] for _ in range(40)}
            assert len(pids) == 2  # both replicas serve
            bad = httpx.post(f"{url}/search", json={"query": "cat", "k": 0}, timeout=30)
            assert bad.status_code == 422 and "body.k" in bad.json()["message"]
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                out, _ = server.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
                out, _ = server.communicate()
        assert server.returncode == 0, out[-4000:]
        assert "Ray Serve, 2 replicas" in out and "stopping" in out
