"""No config, override or experiment file can call a callable outside cascade and what the user allows.

Targets are checked by what they resolve to (every step of the dotted path), logging configs by the
factories, files and ext:// names they give dictConfig, and sweeps job by job, as Hydra composes them.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from cascade import ConfigError
from cascade.app import cli
from cascade.app.cli import main as cli_main
from cascade.app.hydra_checks import check_env, check_logging
from cascade.app.targets import check_target, check_targets


def _cascade(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cascade.app.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


# --- targets resolved, not spelled -------------------------------------------------------------
@pytest.mark.parametrize("target, step", [
    ("cascade.core.files.tempfile.mkdtemp", "'cascade.core.files.tempfile' is the module 'tempfile'"),
    ("cascade.core.files.os.makedirs", "'cascade.core.files.os' is the module 'os'"),
    ("cascade.core.stage.np.savetxt", "'cascade.core.stage.np' is the module 'numpy'"),
    ("cascade.index.store.shutil.rmtree", "'cascade.index.store.shutil' is the module 'shutil'"),
    ("cascade.core.files.Path.touch", "'cascade.core.files.Path' is the object 'pathlib'"),
])
def test_a_path_walking_out_of_cascade_is_refused(target, step):
    with pytest.raises(ConfigError) as err:
        check_target("stage.bm25.fusion._target_", target, None)
    message = str(err.value)
    assert f"stage.bm25.fusion._target_ = {target!r} is not allowed" in message and step in message
    assert "allowed_targets: [" in message  # the line to add is still there


@pytest.mark.parametrize("target", ["cascade.core.files.atomic_write_text", "cascade.core.files.atomic_save_npy",
                                    "cascade.app.download.download_beir", "cascade.testing.tiny_sentence_transformer"])
def test_cascade_helpers_that_write_files_are_not_buildable(target):
    with pytest.raises(ConfigError, match="which configs may not build from"):
        check_target("x._target_", target, None)


@pytest.mark.parametrize("target", ["cascade.Pipeline", "cascade.Fusion", "cascade.UnionFusion",
                                    "cascade.stages.bm25.BM25", "cascade.core.data.load_beir",
                                    "cascade.index.encoding.LocalEngine", "cascade.app.callbacks.SweepReport"])
def test_what_the_shipped_configs_build_is_allowed(target):
    assert callable(check_target("x._target_", target, None))


def test_modules_and_non_callables_are_refused():
    for target in ("cascade.core", "cascade.core.data.log", "cascade.__version__"):
        with pytest.raises(ConfigError, match="not allowed"):
            check_target("x._target_", target, None)


def test_an_allowed_module_reexporting_a_foreign_object_is_refused(tmp_path, monkeypatch):
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "stages.py").write_text(
        "import os\nfrom os import makedirs\n\nclass Reranker:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = OmegaConf.create({"allowed_targets": ["mylab.stages"]})
    assert check_target("k", "mylab.stages.Reranker", cfg).__name__ == "Reranker"
    for bad, why in (("mylab.stages.makedirs", "the object 'os'"), ("mylab.stages.os.makedirs", "the module 'os'")):
        with pytest.raises(ConfigError, match=why):
            check_target("k", bad, cfg)


def test_an_unlisted_module_is_never_imported(tmp_path, monkeypatch):
    (tmp_path / "sideeffect.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="outside the allowed modules"):
        check_target("k", "sideeffect.x", None)
    assert not (tmp_path / "imported").exists()


SIBLINGS = {
    "partial": {"stage": {"x": {"_target_": "cascade.core.files.os.makedirs", "_partial_": True}}},
    "args": {"stage": {"x": {"_target_": "cascade.Fusion",
                             "_args_": [{"_target_": "cascade.core.files.os.makedirs", "name": "/tmp/x"}]}}},
    "list": {"pipeline": {"_target_": "cascade.Pipeline", "stages": [
        {"_target_": "cascade.stages.bm25.BM25"}, {"_target_": "cascade.core.stage.np.savetxt"}]}},
    "interpolated": {"evil": "cascade.core.files.os.makedirs",
                     "stage": {"x": {"_target_": "${evil}", "name": "/tmp/x"}}},
    "interpolated node": {"evil": {"_target_": "cascade.core.files.tempfile.mkdtemp"},
                          "pipeline": {"_target_": "cascade.Pipeline", "stages": ["${evil}"]}},
}


@pytest.mark.parametrize("case", sorted(SIBLINGS))
def test_sibling_keys_are_checked(case):
    with pytest.raises(ConfigError, match="is not allowed"):
        check_targets(OmegaConf.create(SIBLINGS[case]))


# --- where a config comes from: the command line, an experiment file, a --config-dir ------------
def refused(args: list[str], capsys, match: str) -> str:
    """``cascade run ARGS`` in this process: refused (exit 2) with ``match`` in its error, and nothing run."""
    capsys.readouterr()
    assert cli_main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    return err


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_on_the_command_line(in_tmp, capsys):
    refused(["pipeline=bm25", "stage.bm25.fusion={_target_: cascade.core.files.tempfile.mkdtemp, dir: /tmp}"],
            capsys, "stage.bm25.fusion._target_ = 'cascade.core.files.tempfile.mkdtemp'")
    assert list(in_tmp.iterdir()) == []  # refused as Hydra composed it: no run folder, no log


def _conf_dir(tmp_path: Path, group: str, name: str, text: str) -> Path:
    folder = tmp_path / "myconf"
    (folder / group).mkdir(parents=True, exist_ok=True)
    (folder / group / f"{name}.yaml").write_text(text)
    return folder


def test_in_an_experiment_file(in_tmp, capsys):
    conf = _conf_dir(in_tmp, "experiment", "evil", "# @package _global_\nstage:\n  bm25:\n    fusion:\n"
                     "      _target_: cascade.core.stage.np.savetxt\n      fname: /tmp/evil.pth\n      X: [1]\n")
    refused(["--config-dir", str(conf), "+experiment=evil", "pipeline=bm25"], capsys,
            "'cascade.core.stage.np' is the module 'numpy'")


def test_in_a_config_dir_pipeline(in_tmp, capsys):
    conf = _conf_dir(in_tmp, "pipeline", "mine", "# @package _global_\npipeline:\n  _target_: cascade.Pipeline\n"
                     "  name: mine\n  stages:\n    - _target_: cascade.core.files.os.makedirs\n      name: /tmp/x\n")
    refused([f"--config-dir={conf}", "pipeline=mine"], capsys, "pipeline.stages\\[0\\]._target_")


def test_a_hydra_function_is_refused_in_hydra_settings(in_tmp, capsys):
    conf = _conf_dir(in_tmp, "experiment", "cb", "# @package _global_\nhydra:\n  callbacks:\n    c:\n"
                     "      _target_: hydra.utils.call\n      config: {}\n")
    refused(["--config-dir", str(conf), "+experiment=cb", "pipeline=bm25"], capsys, "only classes of Hydra")
    refused(["-m", "--config-dir", str(conf), "+experiment=cb", "pipeline=bm25"], capsys, "only classes of Hydra")


def test_a_sweep_is_checked_job_by_job_before_any_job_runs(in_tmp, capsys, monkeypatch):
    """The master config of a sweep holds no swept value; each job's value is checked, and a refused
    job stops the sweep before its first job runs, leaving no sweep folder."""
    ran: list = []
    monkeypatch.setattr(cli, "run_sweep_job", lambda cfg, checked=False: ran.append(cfg))
    refused(["-m", "pipeline=bm25", "+evil=cascade.Fusion,cascade.core.files.os.makedirs",
             "stage.bm25.fusion={_target_: '${evil}'}"], capsys, "'cascade.core.files.os.makedirs'")
    assert ran == [] and not (in_tmp / "multirun").exists()


def test_sweeper_params_in_an_experiment_file_are_checked(in_tmp, capsys):
    conf = _conf_dir(in_tmp, "experiment", "sw", "# @package _global_\nhydra:\n  sweeper:\n    params:\n"
                     "      +evil: cascade.Fusion,cascade.core.files.os.makedirs\n"
                     "stage:\n  bm25:\n    fusion:\n      _target_: ${evil}\n")
    refused(["-m", "--config-dir", str(conf), "+experiment=sw", "pipeline=bm25"], capsys,
            "'cascade.core.files.os.makedirs'")
    assert not (in_tmp / "multirun").exists()


def test_a_refused_sweep_keeps_the_folder_of_an_earlier_one(in_tmp, capsys):
    earlier = in_tmp / "sweeps" / "mine"
    (earlier / "0").mkdir(parents=True)
    (earlier / "0" / "metrics.json").write_text("{}")
    refused(["-m", "pipeline=bm25", "+evil=cascade.core.files.os.makedirs,cascade.Fusion", f"hydra.sweep.dir={earlier}",
             "stage.bm25.fusion={_target_: '${evil}'}"], capsys, "'cascade.core.files.os.makedirs'")
    assert (earlier / "0" / "metrics.json").is_file()


def test_options_that_run_code_or_dodge_the_check_are_refused(in_tmp, capsys):
    refused(["--experimental-rerun", "x.pickle"], capsys, "pickled config")
    refused(["--config-path", "/tmp/other"], capsys, "--config-dir")
    refused(["--no-such-flag", "pipeline=bm25"], capsys, "unknown option")


def _count(monkeypatch, owner, name: str) -> list:
    calls: list = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_run_is_composed_once_and_its_targets_checked_once(in_tmp, tiny_beir, monkeypatch):
    """cascade composes nothing itself: Hydra composes the config twice (once to read ``hydra.mode``),
    each composition is checked once, and the run builds without checking again."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    import cascade.app.precheck as precheck
    import cascade.app.runner as runner

    monkeypatch.setenv("CASCADE_CACHE_DIR", str(in_tmp / "cache"))
    composed = _count(monkeypatch, ConfigLoaderImpl, "_load_configuration_impl")
    checks = [_count(monkeypatch, module, "check_targets") for module in (precheck, runner)]
    assert cli_main(["run", "pipeline=bm25", f"dataset.path={tiny_beir}", "hydra.run.dir=out"]) == 0
    assert len(composed) == 2 and [len(c) for c in checks] == [2, 0]
    assert (in_tmp / "out" / "metrics.json").is_file()
    # a sweep: Hydra composes its own config (twice), then each job's to validate the batch and to launch it
    composed.clear(), checks[0].clear()
    assert cli_main(["run", "-m", "pipeline=bm25", f"dataset.path={tiny_beir}", "stage.bm25.k=2,3",
                     "hydra.sweep.dir=sweep"]) == 0
    assert len(composed) == 2 + 2 * 2 and [len(c) for c in checks] == [6, 0]
    assert len(list((in_tmp / "sweep").glob("*/metrics.json"))) == 2


def test_without_cascades_loader_run_checks_targets_itself():
    """``run(cfg)`` from Python (no ``cascade run``) checks every target before building anything."""
    from cascade.app.precheck import composed_by_cascade

    assert not composed_by_cascade()
    cfg = OmegaConf.create({"dataset": {"_target_": "cascade.core.files.os.makedirs", "name": "/tmp/x"},
                            "pipeline": {"_target_": "cascade.Pipeline", "stages": []}, "metrics": ["nDCG@10"]})
    from cascade.app.runner import run

    with pytest.raises(ConfigError, match="dataset._target_"):
        run(cfg, output_dir="unused")


# --- logging configs ------------------------------------------------------------------------------
def _logging(handler: dict, root: str = "job_logging") -> DictConfig:
    return OmegaConf.create({"hydra": {root: {"version": 1, "handlers": {"h": handler},
                                              "root": {"handlers": ["h"]}}}})


@pytest.mark.parametrize("root", ["job_logging", "hydra_logging"])
@pytest.mark.parametrize("handler, why", [
    ({"()": "os.makedirs", "name": "/tmp/x"}, "not a logging handler"),
    ({"class": "numpy.savetxt", "fname": "/tmp/x"}, "not a logging handler"),
    ({"()": "cascade.core.files.os.makedirs", "name": "/tmp/x"}, "not a logging handler"),
    ({"class": "logging.FileHandler", "filename": "/tmp/site-packages/evil.pth"}, "must end in .log"),
    ({"class": "logging.handlers.RotatingFileHandler", "filename": "${oc.env:HOME}/.bashrc"}, "must end in .log"),
    ({"class": "logging.StreamHandler", "stream": "ext://os.system"}, "ext://"),
    ({"class": "logging.FileHandler", "filename": "a.log", "delay": True, ".": {"baseFilename": "/tmp/evil.pth"}},
     "setting attributes"),
    ({"class": "logging.handlers.SocketHandler", "host": "example.org", "port": 9020}, "not a logging handler"),
])
def test_logging_factories_files_and_ext_names_are_checked(root, handler, why):
    with pytest.raises(ConfigError, match=why):
        check_logging(_logging(handler, root))


def test_formatters_and_filters_are_checked_too():
    cfg = OmegaConf.create({"hydra": {"job_logging": {"formatters": {"f": {"()": "os.makedirs", "name": "/x"}}}}})
    with pytest.raises(ConfigError, match="formatters.f"):
        check_logging(cfg)
    cfg = OmegaConf.create({"hydra": {"job_logging": {"filters": {"f": {"()": "builtins.exec", "source": "1"}}}}})
    with pytest.raises(ConfigError, match="filters.f"):
        check_logging(cfg)


def test_hydras_default_logging_and_allowed_factories_pass():
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from cascade.app.precheck import CheckedConfigLoader

    loader = CheckedConfigLoader(config_search_path=create_config_search_path("pkg://cascade.conf"))
    cfg = loader.load_configuration("config", ["pipeline=bm25"], run_mode=RunMode.RUN)  # Hydra's logging configs
    assert OmegaConf.select(cfg, "hydra.job_logging.handlers.file.class") == "logging.FileHandler"
    check_logging(_logging({"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}))
    allowed = _logging({"()": "cascade.core.fusion.Fusion"})
    with pytest.raises(ConfigError):
        check_logging(allowed)  # not a logging factory, though configs may build it elsewhere
    allowed.allowed_targets = ["cascade.core.fusion"]
    check_logging(allowed)  # what the user allows may be a logging factory


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP", "CASCADE_ALLOWED_TARGETS", "PATH"])
def test_job_environment_cannot_load_code_or_widen_the_allow_list(name):
    with pytest.raises(ConfigError, match=f"hydra.job.env_set.{name} is not allowed"):
        check_env(OmegaConf.create({"hydra": {"job": {"env_set": {name: "/tmp/x"}}}}))
    check_env(OmegaConf.create({"hydra": {"job": {"env_set": {"OMP_NUM_THREADS": "2"}}}}))


# --- end to end: exit 2, one line, no traceback, nothing created -----------------------------------
def test_the_reported_bypasses_create_nothing(tiny_beir, tmp_path):
    made, logged = tmp_path / "made", tmp_path / "logged"
    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "x.yaml").write_text(
        f"# @package _global_\nhydra:\n  job_logging:\n    handlers:\n      h:\n        \"()\": os.makedirs\n"
        f"        name: {logged}\n")
    for args in ([f"stage.bm25.fusion={{_target_: cascade.core.files.tempfile.mkdtemp, dir: {made}}}"],
                 [f"stage.bm25.fusion={{_target_: cascade.core.files.os.makedirs, name: {made}}}"],
                 ["--config-dir", str(tmp_path / "myconf"), "+experiment=x"]):
        proc = _cascade("run", "pipeline=bm25", f"dataset.path={tiny_beir}", f"hydra.run.dir={tmp_path / 'run'}",
                        *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not made.exists() and not logged.exists() and not (tmp_path / "run").exists()
