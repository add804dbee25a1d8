"""encoding.precision on the CPU: bf16 detection, autocast of document and query passes, precision in
every cache key, and precisions a device cannot run refused before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest

import cascade.kernels.precision as precision
from cascade import Corpus
from cascade.core.errors import CascadeError, ConfigError
from cascade.encoders.colbert_formats import load_token_encoder
from cascade.encoders.sentence import SentenceEncoder, clear_encoders
from cascade.index.encoding import LocalEngine
from cascade.index.vectors import VectorsArtifact
from cascade.kernels.precision import cpuinfo_flags, resolve_precision
from cascade.stages.biencoder import BiEncoder
from cascade.stages.colbert import ColBERT

TEXTS = ["cells make proteins from genes", "rivers flow into the sea", "a", "the mitochondria is the powerhouse"]
X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4000\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd {extra}\nCPU part\t: 0xd40\n"


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend the CPU has native bf16 (torch runs bf16 autocast on any CPU, emulated where it lacks it)."""
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    clear_encoders()
    yield
    clear_encoders()


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    clear_encoders()
    yield
    clear_encoders()


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    from cascade.testing import tiny_sentence_transformer

    return str(tiny_sentence_transformer(tmp_path_factory.mktemp("models") / "st"))


@pytest.fixture(scope="module")
def tiny_colbert(tmp_path_factory):
    from cascade.testing import tiny_colbert_ai

    return str(tiny_colbert_ai(tmp_path_factory.mktemp("models") / "colbert"))


@pytest.fixture
def corpus():
    return Corpus([f"d{i}" for i in range(len(TEXTS))], TEXTS)


# --- detection -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, extra, expected", [
    (X86, "avx512_bf16 avx512_vnni", True), (X86, "amx_tile amx_bf16", True), (X86, "avx512_vnni amx_int8", False),
    (ARM, "bf16 i8mm", True), (ARM, "sve", False)])
def test_bf16_is_detected_from_thecpu_flags(monkeypatch, text, extra, expected):
    flags = cpuinfo_flags(text.format(extra=extra))
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    precision.cpu_bf16_supported.cache_clear()
    try:
        assert precision.cpu_bf16_supported() is expected
        assert precision.bf16_supported("cpu") is expected
    finally:
        precision.cpu_bf16_supported.cache_clear()


def test_auto_means_bf16_on_a_bf16_cpu_and_fp32_elsewhere(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    assert [resolve_precision(p, "cpu") for p in ("auto", "bf16", "fp32")] == ["bf16", "bf16", "fp32"]
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    assert [resolve_precision(p, "cpu") for p in ("auto", "fp32")] == ["fp32", "fp32"]
    assert resolve_precision("auto", "mps") == "fp32"


def test_compute_dtype_auto_is_bfloat16_exactly_where_the_device_has_it(monkeypatch):
    from cascade.kernels.precision import resolve_compute_dtype
    from cascade.stages.colbert import ColBERT

    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    assert [resolve_compute_dtype(d, "cpu", "k") for d in ("auto", "float32", "bfloat16")] == [
        "bfloat16", "float32", "bfloat16"]
    assert ColBERT(device="cpu", progress=False).compute_dtype == "bfloat16"  # the stage's default is auto
    assert ColBERT(device="cpu", compute_dtype="float32", progress=False).compute_dtype == "float32"
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    assert ColBERT(device="cpu", progress=False).compute_dtype == "float32"
    assert resolve_compute_dtype("auto", "mps", "k") == "float32"
    with pytest.raises(ConfigError, match=r"colbert\.compute_dtype must be auto, float32 or bfloat16"):
        ColBERT(device="cpu", compute_dtype="fp16", progress=False)


@pytest.mark.parametrize("supported, asked, message", [
    (False, "bf16", r"stage\.x\.precision=bf16: this CPU has no native bf16 .*use stage\.x\.precision=auto"),
    (True, "fp16", r"stage\.x\.precision=fp16 runs on CUDA GPUs only.*bf16 or fp32"),
    (True, "half", r"stage\.x\.precision must be one of auto, fp32, bf16, fp16")])
def test_a_precision_the_cpu_cannot_run_names_the_key_and_the_fix(monkeypatch, supported, asked, message):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: supported)
    with pytest.raises(ConfigError, match=message):
        resolve_precision(asked, "cpu", "stage.x.precision")


# --- autocast really applies, to documents and queries -------------------------------------------
def _linear_dtypes(torch_model) -> tuple[list, object]:
    import torch

    seen: list = []
    linears = [m for m in torch_model.modules() if isinstance(m, torch.nn.Linear)]
    handle = linears[0].register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    return seen, handle


@pytest.mark.parametrize("asked, dtype", [("bf16", "bfloat16"), ("fp32", "float32")])
def test_sentence_passes_run_at_the_stage_precision(bf16_cpu, tiny_st, corpus, tmp_path, asked, dtype):
    stage = BiEncoder(k=2, model=tiny_st, precision=asked, cache_dir=tmp_path, progress=False)
    seen, handle = _linear_dtypes(stage.encoder.model)
    try:
        stage.prepare(corpus)  # the document pass
        docs = len(seen)
        stage.query_vectors(("a query about cells",))  # the query pass
    finally:
        handle.remove()
    assert docs > 0 and len(seen) > docs
    assert {str(d).removeprefix("torch.") for d in seen} == {dtype}


def test_colbert_checkpoint_passes_run_at_the_stage_precision(bf16_cpu, tiny_colbert, corpus, tmp_path):
    stage = ColBERT(k=2, model=tiny_colbert, precision="bf16", cache_dir=tmp_path, progress=False)
    seen, handle = _linear_dtypes(stage.encoder.parts[1])
    try:
        stage.prepare(corpus)
        docs = len(seen)
        stage._encode_queries(("a query about cells",))
    finally:
        handle.remove()
    assert docs > 0 and len(seen) > docs and set(seen) == {__import__("torch").bfloat16}


def test_bf16_vectors_are_close_to_fp32_but_not_equal(bf16_cpu, tiny_st, tiny_colbert):
    for make in (lambda p: SentenceEncoder(tiny_st, "cpu", p).encode(TEXTS, 32),
                 lambda p: load_token_encoder(tiny_colbert, "auto", "cpu", precision=p).encode_docs(TEXTS)):
        full, half = make("fp32"), make("bf16")
        assert full.lengths.tolist() == half.lengths.tolist()
        cosine = np.sum(full.tokens * half.tokens, axis=1)  # rows are L2-normalized
        assert cosine.min() > 0.999 and not np.array_equal(full.tokens, half.tokens)


def test_a_pass_rebuilt_from_its_recipe_keeps_its_precision(bf16_cpu, tiny_st, tiny_colbert):
    passes = [SentenceEncoder(tiny_st, "cpu", "bf16").doc_pass(32),
              SentenceEncoder(tiny_st, "cpu", "fp32").doc_pass(32),
              load_token_encoder(tiny_colbert, "auto", "cpu", precision="bf16").doc_pass()]
    here = [p.encode(TEXTS, None).tokens for p in passes]
    rebuilt = [p.recipe("cpu")(TEXTS, None).tokens for p in passes]  # what a Ray worker runs
    for mine, theirs in zip(here, rebuilt):
        np.testing.assert_array_equal(mine, theirs)
    assert not np.array_equal(rebuilt[0], rebuilt[1])
    assert [p.precision for p in passes] == ["bf16", "fp32", "bf16"]


# --- the cache key ----------------------------------------------------------------------------------
def _paths(stage, corpus) -> list[str]:
    return [str(a.path) for a in stage.artifacts(corpus)]


def test_precision_separates_every_encoded_artifact(bf16_cpu, tiny_st, corpus, tmp_path):
    def paths(cls, asked, **kw):
        return _paths(cls(model=tiny_st, precision=asked, cache_dir=tmp_path, progress=False, **kw), corpus)

    for cls, kw in ((BiEncoder, {}), (ColBERT, {}), (ColBERT, {"nbits": 2, "num_centroids": 4})):
        fp32, bf16, auto = paths(cls, "fp32", **kw), paths(cls, "bf16", **kw), paths(cls, "auto", **kw)
        assert auto == bf16  # auto on a bf16 CPU is bf16: one cache entry
        assert len(set(fp32) | set(bf16)) == 2 * len(fp32)  # dense, token index, compressed index alike


def test_auto_shares_fp32_builds_on_a_cpu_without_bf16(plain_cpu, tiny_st, corpus, tmp_path):
    for cls in (BiEncoder, ColBERT):
        make = lambda p, cls=cls: cls(model=tiny_st, precision=p, cache_dir=tmp_path, progress=False)
        assert _paths(make("auto"), corpus) == _paths(make("fp32"), corpus)


def test_fp32_never_reuses_a_bf16_build(bf16_cpu, tiny_st, corpus, tmp_path):
    BiEncoder(model=tiny_st, precision="bf16", cache_dir=tmp_path, progress=False).prepare(corpus)
    BiEncoder(model=tiny_st, precision="fp32", cache_dir=tmp_path, progress=False).prepare(corpus)
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "dense").glob("*/meta.json"))]
    assert sorted(m["precision"] for m in metas) == ["bf16", "fp32"]
    assert all(m["encoded_docs"] == len(corpus) for m in metas)  # each built by its own pass


def test_stages_at_two_precisions_never_share_a_pass(bf16_cpu, tiny_st, corpus, tmp_path):
    from cascade.core.stage import prepare_stages

    stages = [BiEncoder(model=tiny_st, precision="fp32", cache_dir=tmp_path, progress=False),
              ColBERT(model=tiny_st, precision="bf16", cache_dir=tmp_path, progress=False)]
    prepare_stages(stages, corpus)
    metas = {p.parent.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("*/*/meta.json")}
    assert {k: (m["precision"], m["shared_with"]) for k, m in metas.items()} == {
        "dense": ("fp32", ["vectors"]), "colbert": ("bf16", ["tokens"])}


def test_an_artifact_whose_key_omits_the_precision_is_refused(tiny_st, tmp_path):
    doc_pass = SentenceEncoder(tiny_st, "cpu", "fp32").doc_pass(32)
    with pytest.raises(CascadeError, match="must record the pass's precision 'fp32'"):
        VectorsArtifact(tmp_path / "v", {"stage": "x"}, doc_pass)
    VectorsArtifact(tmp_path / "v", {"stage": "x", "precision": "fp32"}, doc_pass)


# --- engines -------------------------------------------------------------------------------------------
def test_an_engine_refuses_a_pass_planned_at_another_precision(bf16_cpu, tiny_st):
    from cascade.index.ray_engine import RayEngine

    doc_pass = SentenceEncoder(tiny_st, "cpu", "bf16").doc_pass(32)
    saved = []
    save = lambda s, e, enc: saved.append((s, e))  # noqa: E731
    for engine in (LocalEngine("fp32"), RayEngine(precision="fp32")):  # Ray: refused before Ray starts
        with pytest.raises(ConfigError, match="encoding.precision=fp32 means fp32 on cpu, but this corpus pass "
                                              "was planned at bf16"):
            engine.encode_chunks(doc_pass, lambda s, e: TEXTS[s:e], [(0, 4)], save, lambda n: None)
    assert not saved
    for engine in (LocalEngine("auto"), LocalEngine("bf16"), LocalEngine()):
        engine.encode_chunks(doc_pass, lambda s, e: TEXTS[s:e], [(0, 4)], save, lambda n: None)
    assert saved == [(0, 4)] * 3


# --- bad input: refused before any work ----------------------------------------------------------------
@pytest.mark.parametrize("cls", [BiEncoder, ColBERT])
def test_an_unsupported_precision_fails_when_the_stage_is_built(plain_cpu, cls, monkeypatch):
    monkeypatch.setattr(SentenceEncoder, "model", property(lambda self: pytest.fail("a model was loaded")))
    with pytest.raises(ConfigError, match=rf"{cls.__name__.lower()}\.precision=bf16: this CPU has no native bf16"
                                          r".*follows encoding\.precision"):
        cls(precision="bf16", device="cpu")
    with pytest.raises(ConfigError, match="precision=fp16 runs on CUDA GPUs only"):
        cls(precision="fp16", device="cpu")


@pytest.mark.parametrize("command", ["run", "index"])
@pytest.mark.parametrize("override, message", [
    ("encoding.precision=bf16", "biencoder.precision=bf16: this CPU has no native bf16"),
    ("encoding.precision=fp16", "biencoder.precision=fp16 runs on CUDA GPUs only")])
def test_the_cli_refuses_an_unsupported_precision_before_reading_the_dataset(plain_cpu, tmp_path, capsys, command,
                                                                             override, message):
    from cascade.app.cli import main as cli_main

    missing = tmp_path / "no_dataset_here"  # reading it would fail with another error
    try:  # `cascade index` returns its exit code; `cascade run` exits through Hydra
        code = cli_main([command, "pipeline=cascade", f"dataset.path={missing}", f"paths.cache_dir={tmp_path / 'c'}",
                         "device=cpu", f"hydra.run.dir={tmp_path / 'out'}", override])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and "no_dataset_here" not in err
    assert not (tmp_path / "c").exists()
