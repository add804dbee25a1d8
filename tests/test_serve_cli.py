"""`cascade serve` from the command line: argument checks, a real uvicorn process, SciFact, packaging."""
from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[serve]"')
httpx = pytest.importorskip("httpx", reason='httpx is not installed: pip install -e ".[test]"')
from fastapi.testclient import TestClient  # noqa: E402

from cascade.app.cli import main as cli_main  # noqa: E402
from cascade.app.index_cmd import compose_config  # noqa: E402
from cascade.app.runner import build_dataset, build_pipeline  # noqa: E402
from cascade.app.serve_cmd import ServeSpec, build_app, build_searchers, parse  # noqa: E402

from conftest import QUERIES, REPO  # noqa: E402
from serve_helpers import free_port, same_ranking  # noqa: E402


def test_serve_dir_of_something_else_is_refused(tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path)]) == 2
    assert "is not a cascade index" in capsys.readouterr().err  # saved indexes: tests/test_serve_saved.py


@pytest.mark.parametrize("args, message", [
    (["pipeline=nope"], "Could not find 'pipeline/nope'"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--max-wait-ms", "-1"], "--max-wait-ms must be >= 0"),
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--port", "70000"], "--port must be 1..65535"),
    (["not-an-override"], "not 'not-an-override' (no such folder)"),
    (["stage.bm25._target_=os.system"], "_target_"),
])
def test_bad_arguments_stop_before_any_work(capsys, args, message):
    assert cli_main(["serve", *args]) == 2
    assert message in capsys.readouterr().err


def test_unknown_option_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["serve", "--bogus"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli_main(["serve", "--help"])
    assert exit_.value.code == 0 and "--max-wait-ms" in capsys.readouterr().out
    cli_main(["--help"])
    assert "serve [key=value ...]" in capsys.readouterr().out


def test_token_from_option_or_environment(monkeypatch):
    monkeypatch.delenv("CASCADE_SERVE_TOKEN", raising=False)
    assert parse([])[0].token is None
    monkeypatch.setenv("CASCADE_SERVE_TOKEN", "from-env")
    assert parse([])[0].token == "from-env"
    assert parse(["--token", "given"])[0].token == "given"
    assert parse(["--no-batching", "--max-batch", "16"])[0].max_batch == 1


def test_overrides_and_options_in_any_order():
    spec, opts = parse(["a=1", "--port", "9001", "b=2", "--pipeline", "bm25", "c=3"])
    assert spec.overrides == ("a=1", "b=2", "c=3") and spec.pipelines == ("bm25",) and opts.port == 9001


def test_several_pipelines_share_one_corpus(tiny_beir):
    spec = ServeSpec((f"dataset.path={tiny_beir}",), ("bm25", "bm25_rescore"))
    searchers = build_searchers(spec)
    try:
        assert [s.name for s in searchers] == ["bm25", "bm25_rescore"]
        assert searchers[0].corpus is searchers[1].corpus
    finally:
        for s in searchers:
            s.close()


def test_a_real_server_answers_and_stops_on_sigterm(tiny_beir, tmp_path):
    port = free_port()
    env = {**os.environ, "CASCADE_CACHE_DIR": str(tmp_path / "cache")}
    server = subprocess.Popen([sys.executable, "-m", "cascade.app.cli", "serve", "pipeline=bm25",
                               f"dataset.path={tiny_beir}", "--port", str(port), "--token", "t0k"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer t0k"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            time.sleep(0.3)
        cfg = compose_config(["pipeline=bm25", f"dataset.path={tiny_beir}"])
        pipe = build_pipeline(cfg).index(build_dataset(cfg).corpus)
        for query in QUERIES.values():
            body = httpx.post(f"{url}/search", json={"query": query, "k": 3}, headers=auth, timeout=30).json()
            assert same_ranking(body["results"][0]["hits"], pipe.search(query, k=3))
        assert httpx.post(f"{url}/search", json={"query": "cat"}, timeout=30).status_code == 401
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out and "cascade serve: stopped" in out


@pytest.mark.slow
def test_serve_on_scifact_answers_as_pipe_search(scifact_path):
    overrides = ("pipeline=bm25", f"dataset.path={scifact_path}")
    cfg = compose_config(list(overrides))
    dataset = build_dataset(cfg)
    pipe = build_pipeline(cfg).index(dataset.corpus)
    queries = list(dataset.query_texts[:30])
    with TestClient(build_app(ServeSpec(overrides))) as client:
        for k in (10, 100):
            body = client.post("/search", json={"queries": queries, "k": k}).json()
            for result, ranking in zip(body["results"], pipe.search(queries, k=k)):
                assert len(result["hits"]) == k and same_ranking(result["hits"], ranking)
        single = client.post("/search", json={"query": queries[0], "k": 10}).json()
        assert same_ranking(single["results"][0]["hits"], pipe.search(queries[0], k=10))


def test_the_search_page_is_packaged():
    tomllib = pytest.importorskip("tomllib")

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["cascade.app"]
    static = REPO / "cascade" / "app" / "static"
    files = sorted(p.relative_to(static.parent).as_posix() for p in static.iterdir() if p.is_file())
    assert {"static/index.html", "static/app.js", "static/style.css"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files)
    assert Path(build_app.__code__.co_filename).parent == static.parent  # the app reads them from there


def test_without_the_serve_extra_the_error_says_how_to_install_it(tiny_beir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    assert cli_main(["serve", "pipeline=bm25", f"dataset.path={tiny_beir}"]) == 2
    assert 'pip install "cascade-rerank[serve]"' in capsys.readouterr().err
