"""Configs never run code outside cascade and what the user allows: checked before anything is built."""
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cascade import ConfigError
from cascade.app.targets import ENV_VAR, check_targets, is_allowed


def _cascade(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "cascade.app.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_a_copyfile_target_never_runs(tiny_beir, tmp_path):
    secret, stolen = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    secret.write_text("s3cret")
    proc = _cascade("run", "pipeline=bm25", f"dataset.path={tiny_beir}", f"hydra.run.dir={tmp_path / 'run'}",
                    f"pipeline.stages=[{{_target_:shutil.copyfile,src:'{secret}',dst:'{stolen}'}}]", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "pipeline.stages[0]._target_ = 'shutil.copyfile' is not allowed" in proc.stderr
    assert "allowed_targets" in proc.stderr and "Traceback" not in proc.stderr
    assert not stolen.exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_savetxt_target_writes_nothing(tiny_beir, tmp_path):
    pth = tmp_path / "evil.pth"
    proc = _cascade("run", "pipeline=bm25", f"dataset.path={tiny_beir}", f"hydra.run.dir={tmp_path / 'run'}",
                    f"+dataset.extra={{_target_:numpy.savetxt,fname:'{pth}',X:[1]}}", cwd=tmp_path)
    assert proc.returncode == 2 and "'numpy.savetxt' is not allowed" in proc.stderr
    assert not pth.exists()


def test_targets_reached_through_interpolation_are_checked():
    cfg = OmegaConf.create({"evil": {"_target_": "os.system", "command": "true"},
                            "pipeline": {"_target_": "cascade.Pipeline", "stages": ["${evil}"]}})
    with pytest.raises(ConfigError, match="'os.system' is not allowed"):
        check_targets(cfg, "pipeline")


def test_allowed_targets_from_config_and_environment(monkeypatch):
    cfg = OmegaConf.create({"allowed_targets": ["mylab.stages"],
                            "stage": {"mine": {"_target_": "mylab.stages.Reranker"}}})
    check_targets(cfg)  # allowed by the config
    cfg.allowed_targets = []
    with pytest.raises(ConfigError, match="allowed_targets: \\[mylab.stages\\]"):
        check_targets(cfg)
    monkeypatch.setenv(ENV_VAR, "mylab")
    check_targets(cfg)  # allowed by the environment
    with pytest.raises(ConfigError, match="must be a list"):
        check_targets(OmegaConf.create({"allowed_targets": "mylab"}))


@pytest.mark.parametrize("target, ok", [("cascade.Pipeline", True), ("cascade.stages.bm25.BM25", True),
                                        ("cascadex.evil", False), ("mylab", True), ("mylab.x.Y", True),
                                        ("mylabs.Y", False), ("builtins.eval", False)])
def test_prefix_matching_is_by_whole_module_names(target, ok):
    assert is_allowed(target, ("cascade", "mylab")) is ok


def test_a_user_stage_runs_once_allowed(tiny_beir, tmp_path):
    (tmp_path / "mystages.py").write_text(
        "from cascade.stages.bm25 import BM25\n\nclass MyBM25(BM25):\n    pass\n")
    args = ("run", "pipeline=bm25", f"dataset.path={tiny_beir}", "stage.bm25._target_=mystages.MyBM25",
            f"hydra.run.dir={tmp_path / 'run'}")
    env = {"PYTHONPATH": str(tmp_path)}
    refused = _cascade(*args, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "'mystages.MyBM25' is not allowed" in refused.stderr
    allowed = _cascade(*args, "allowed_targets=[mystages]", cwd=tmp_path, env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_an_experiment_file_cannot_add_a_hydra_callback(tiny_beir, tmp_path):
    """Hydra instantiates callbacks before the run: a shared config naming one is refused before Hydra starts."""
    marker = tmp_path / "ran.txt"
    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "evil.yaml").write_text(
        "# @package _global_\nhydra:\n  callbacks:\n    evil:\n      _target_: pathlib.Path.touch\n"
        f"      self: {marker}\n")
    proc = _cascade("run", "--config-dir", str(tmp_path / "myconf"), "+experiment=evil", "pipeline=bm25",
                    f"dataset.path={tiny_beir}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "hydra.callbacks.evil._target_ = 'pathlib.Path.touch' is not allowed" in proc.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_launcher_without_its_plugin_says_what_to_install(monkeypatch):
    import importlib.util

    from cascade.app import cli
    from cascade.core.errors import CascadeError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if "hydra_ray_launcher" in name else real(name, *a))
    with pytest.raises(CascadeError, match=r'pip install "cascade-rerank\[sweep\]"'):
        cli.check_launcher(["-m", "hydra/launcher=ray"])
