"""`cascade index`: builds then reuses every artifact, reports each; the encoding engines' settings and recipes."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from cascade.app.cli import main as cli_main
from cascade.app.index_cmd import compose_config
from cascade.core.errors import CascadeError
from cascade.encoders.sentence import SentenceEncoder, sentence_pass
from cascade.index.encoding import LocalEngine

from conftest import REPO


def _rows(out: str) -> list[dict]:
    lines = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    keys = ["stage", "kind", "key", "status", "docs", "bytes", "seconds"]
    return [dict(zip(keys, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines]


def test_index_builds_then_reuses_and_reports_each_artifact(tiny_beir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    args = ["index", "pipeline=bm25_dense", f"dataset.path={tiny_beir}", f"paths.cache_dir={cache}",
            "stage.biencoder.progress=false"]
    assert cli_main(args) == 0
    first = _rows(capsys.readouterr().out)
    assert [(r["stage"], r["kind"], r["status"], r["docs"]) for r in first] == [
        ("bm25", "bm25s", "built", "6"), ("biencoder", "dense", "built", "6")]
    for row in first:
        folder = cache / row["kind"] / row["key"]
        assert (folder / "meta.json").is_file()
        assert int(row["bytes"]) == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert float(row["seconds"]) > 0
    assert json.loads((cache / "dense" / first[1]["key"] / "meta.json").read_text())["engine"] == "local"
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*/*/meta.json")}

    assert cli_main(args) == 0
    out = capsys.readouterr().out
    again = _rows(out)
    assert [(r["kind"], r["key"], r["status"], r["bytes"]) for r in again] == [
        (r["kind"], r["key"], "reused", r["bytes"]) for r in first]
    assert all(float(r["seconds"]) == 0 for r in again)
    assert "2 artifacts: 0 built, 2 reused" in out
    assert stamps == {p: p.stat().st_mtime_ns for p in cache.glob("*/*/meta.json")}  # nothing rewritten
    assert not list(tmp_path.rglob("metrics.json"))  # nothing evaluated


@pytest.mark.parametrize("args, message", [
    (["pipeline=no_such_pipeline"], "the config does not compose"),
    (["-m", "pipeline=bm25"], "key=value overrides only"),
    (["pipeline=bm25", "stage.bm25._target_=os.system"], "is not allowed"),
    (["pipeline=bm25", "encoding=ray", "encoding.num_workers=0"], "num_workers must be an integer >= 1"),
    (["pipeline=bm25", "encoding.precision=fp8"], "precision must be one of"),
])
def test_index_bad_input_is_a_clear_error_with_exit_2(args, message, tiny_beir, tmp_path, capsys):
    code = cli_main(["index", f"dataset.path={tiny_beir}", f"paths.cache_dir={tmp_path / 'cache'}", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_index_is_listed_in_the_cli_usage(capsys):
    assert cli_main(["--help"]) == 0
    assert "index [key=value ...]" in capsys.readouterr().out
    assert cli_main(["index", "--help"]) == 0
    assert "encoding=ray" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "encoding").glob("*.yaml")))
def test_every_encoding_config_instantiates_an_engine(name):
    engine = instantiate(compose_config([f"encoding={name}"]).encoding)
    assert engine.name == name and callable(engine.encode_chunks)


def test_the_default_engine_is_local():
    assert isinstance(instantiate(compose_config([]).encoding), LocalEngine)


def test_ray_missing_gives_the_install_hint(monkeypatch):
    from cascade.index.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if not installed
    with pytest.raises(CascadeError, match=r"cascade-rerank\[ray\]"):
        import_ray()


def test_auto_means_fp16_on_a_gpu_and_a_bad_name_is_refused(monkeypatch):
    import torch

    from cascade.kernels.precision import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert [resolve_precision(p, "cuda") for p in ("auto", "fp16", "bf16", "fp32")] == ["fp16", "fp16", "bf16", "fp32"]
    with pytest.raises(CascadeError, match="precision"):
        resolve_precision("half", "cuda")


TEXTS = ["a short one", "a much longer document about cells, genes and the proteins they make in the body",
         "", "mid length text about rivers"]


def test_a_pass_rebuilt_from_its_recipe_encodes_the_same():
    doc_pass = SentenceEncoder(None, "cpu").doc_pass(64, "", 2)
    here, rebuilt = doc_pass.encode(TEXTS, None), doc_pass.recipe("cpu")(TEXTS, None)
    np.testing.assert_allclose(rebuilt.pooled, here.pooled, atol=1e-6)
    np.testing.assert_allclose(rebuilt.tokens, here.tokens, atol=1e-6)
    assert rebuilt.lengths.tolist() == here.lengths.tolist()


def test_a_worker_with_other_model_files_refuses_the_pass(tmp_path):
    from cascade.testing import tiny_sentence_transformer

    doc_pass = SentenceEncoder(None, "cpu").doc_pass(64)
    name, identity = doc_pass.recipe.args[:2]
    other = tiny_sentence_transformer(tmp_path / "other")
    with pytest.raises(CascadeError, match="not the one the corpus pass was planned with"):
        functools.partial(sentence_pass, str(other), identity, 64, "", 2)("cpu")
    assert sentence_pass(name, identity, 64, "", 2, "cpu") is not None


def test_a_colbert_checkpoint_pass_rebuilt_from_its_recipe_encodes_the_same(tmp_path):
    from cascade.encoders.colbert_formats import load_token_encoder
    from cascade.testing import tiny_colbert_ai

    encoder = load_token_encoder(str(tiny_colbert_ai(tmp_path / "ckpt")), "auto", "cpu", None, None, 2)
    doc_pass = encoder.doc_pass()
    here, rebuilt = doc_pass.encode(TEXTS, None), doc_pass.recipe("cpu")(TEXTS, None)
    np.testing.assert_allclose(rebuilt.tokens, here.tokens, atol=1e-6)
    assert rebuilt.lengths.tolist() == here.lengths.tolist()


def test_the_engine_of_a_run_reaches_the_corpus_pass(tiny_dataset, tmp_path):
    from cascade.core.stage import Pipeline
    from cascade.stages.biencoder import BiEncoder

    class Recording(LocalEngine):
        name = "recording"
        chunks: list = []

        def encode_chunks(self, doc_pass, texts, chunks, save, progress):
            self.chunks.extend(chunks)
            return super().encode_chunks(doc_pass, texts, chunks, save, progress)

    engine = Recording()
    Pipeline([BiEncoder(k=3, cache_dir=tmp_path, chunk_size=4, progress=False)]).run(tiny_dataset, engine=engine)
    assert engine.chunks == [(0, 4), (4, 6)]
    meta = json.loads(next(Path(tmp_path).glob("dense/*/meta.json")).read_text())
    assert meta["engine"] == "recording"
