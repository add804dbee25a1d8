"""Every config in conf/ composes, and every object in it instantiates."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cascade import Pipeline, Stage

from conftest import REPO

CONF = REPO / "conf"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides + ["paths.output_dir=unused"])


@pytest.mark.parametrize("pipeline", _names("pipeline"))
def test_every_pipeline_composes_and_instantiates(pipeline, tmp_path):
    cfg = _compose([f"pipeline={pipeline}", f"paths.cache_dir={tmp_path}"])
    built = instantiate(cfg.pipeline)
    assert isinstance(built, Pipeline) and all(isinstance(s, Stage) for s in built.stages)
    assert built.name == cfg.pipeline.name
    assert [s.k for s in built.stages] == [cfg.stage[s.name].k for s in built.stages]


@pytest.mark.parametrize("stage", _names("stage"))
def test_every_stage_config_instantiates(stage, tmp_path):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+stage@stage_under_test={stage}", f"paths.cache_dir={tmp_path}",
                                            "paths.output_dir=unused"])
    assert isinstance(instantiate(cfg.stage_under_test), Stage)


@pytest.mark.parametrize("dataset", _names("dataset"))
def test_every_dataset_config_composes(dataset, scifact_path, monkeypatch, tmp_path):
    cfg = _compose([f"dataset={dataset}", f"paths.data_dir={scifact_path.parent}"])
    if cfg.dataset._target_ == "cascade.core.data.load_trec":  # its files are made here
        from conftest import QUERIES, write_beir

        root = write_beir(tmp_path / "tiny")
        (tmp_path / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
        cfg = _compose([f"dataset={dataset}", f"dataset.corpus={root / 'corpus.jsonl'}",
                        f"dataset.topics={tmp_path / 'topics.tsv'}", f"dataset.qrels={root / 'qrels' / 'test.tsv'}"])
        assert instantiate(cfg.dataset).query_ids == tuple(QUERIES)
        return
    if cfg.dataset._target_ == "cascade.core.irds.load_irds":  # built against a local ir_datasets stand-in
        import fake_irds

        fake_irds.install(monkeypatch, {cfg.dataset.id: fake_irds.tiny()})
        assert len(instantiate(cfg.dataset).query_ids) > 0
        return
    assert Path(cfg.dataset.path).name
    if Path(cfg.dataset.path).is_dir():
        assert len(instantiate(cfg.dataset).query_ids) > 0


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_every_experiment_composes(experiment):
    cfg = _compose([f"+experiment={experiment}"])
    assert cfg.pipeline.stages


def test_cli_style_override_of_k():
    cfg = _compose(["pipeline=bm25", "stage.bm25.k=500", "stage.bm25.backend=rank_bm25"])
    stage = instantiate(cfg.pipeline).stages[0]
    assert stage.k == 500 and stage.backend == "rank_bm25"


def test_configs_are_found_in_the_installed_package():
    """Hydra reads the packaged configs (pkg://cascade.conf), so a wheel runs from any folder."""
    from hydra import initialize_config_module

    with initialize_config_module("cascade.conf", version_base="1.3"):
        cfg = compose("config", overrides=["pipeline=bm25", "paths.output_dir=unused"])
    assert cfg.pipeline.stages[0]._target_ == "cascade.stages.bm25.BM25"
    assert sorted(_names("pipeline")) == sorted(
        p.name.removesuffix(".yaml") for p in __import__("importlib.resources").resources.files(
            "cascade.conf").joinpath("pipeline").iterdir() if p.name.endswith(".yaml"))


def test_pipeline_fusion_false_switches_every_stage_off(tmp_path):
    on = instantiate(_compose(["pipeline=cascade", f"paths.cache_dir={tmp_path}"]).pipeline)
    off = instantiate(_compose(["pipeline=cascade", "pipeline.fusion=false", f"paths.cache_dir={tmp_path}"]).pipeline)
    assert [s.fusion is not None for s in on.stages] == [False, True, True]
    assert all(s.fusion is None for s in off.stages)
    assert [s.k for s in off.stages] == [s.k for s in on.stages]
    assert all(s.fusion is not None for s in on.stages[1:])  # the original stages are untouched


def test_top_level_device_reaches_every_neural_stage(tmp_path):
    cfg = _compose(["pipeline=cascade_ce", "device=cpu", f"paths.cache_dir={tmp_path}"])
    stages = instantiate(cfg.pipeline).stages
    assert [getattr(s, "device", "n/a") for s in stages] == ["n/a", "cpu", "cpu", "cpu"]
    cfg = _compose(["pipeline=cascade", "device=cpu", "stage.colbert.device=meta", f"paths.cache_dir={tmp_path}"])
    assert [getattr(s, "device", None) for s in instantiate(cfg.pipeline).stages][1:] == ["cpu", "meta"]
