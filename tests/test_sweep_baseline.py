"""sweep.baseline spellings without quoting traps, and sweep folder names without `__` artefacts."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from cascade.app.baseline import match_baseline, normalise_args, parse_baseline
from cascade.app.naming import sweep_name
from cascade.core.errors import ConfigError


@pytest.mark.parametrize("value, expected", [
    ("pipeline:bm25", {"pipeline": "bm25"}),
    ("pipeline=bm25", {"pipeline": "bm25"}),
    ("pipeline:bm25+stage.bm25.k:100", {"pipeline": "bm25", "stage.bm25.k": "100"}),
    ("pipeline:bm25;stage.bm25.k:100", {"pipeline": "bm25", "stage.bm25.k": "100"}),
    ("pipeline:bm25,stage.bm25.k=100", {"pipeline": "bm25", "stage.bm25.k": "100"}),
    (["pipeline=bm25", "stage.bm25.k=100"], {"pipeline": "bm25", "stage.bm25.k": "100"}),  # YAML, as before
    (["pipeline:bm25", "stage.bm25.k:100"], {"pipeline": "bm25", "stage.bm25.k": "100"}),
    ({"pipeline": "bm25", "stage.bm25.k": 100}, {"pipeline": "bm25", "stage.bm25.k": "100"}),
    ("stage.colbert.model:colbert-ir/colbertv2.0", {"stage.colbert.model": "colbert-ir/colbertv2.0"}),
    ("+stage.x.y:a+b", {"stage.x.y": "a+b"}),
    (None, None), ("", None), ([], None),
])
def test_spellings(value, expected):
    assert parse_baseline(value) == expected


@pytest.mark.parametrize("value, message", [
    ("bm25", "'bm25' is not a key:value condition"),
    ("pipeline:bm25+pipeline:dense", "gives pipeline two values"),
    (3, "must be key:value conditions"),
])
def test_bad_spellings_say_how_to_write_one(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_baseline(value)


def test_match_picks_the_finished_job_satisfying_every_condition():
    jobs = [{"dir": "a", "status": "failed", "overrides": ["pipeline=bm25", "stage.bm25.k=100"]},
            {"dir": "b", "status": "ok", "overrides": ["pipeline=dense", "stage.bm25.k=100"]},
            {"dir": "c", "status": "ok", "overrides": ["pipeline=bm25", "+stage.bm25.k=100"]},
            {"dir": "d", "status": "ok", "overrides": ["pipeline=bm25", "stage.bm25.k=1000"]}]
    assert match_baseline(jobs, "pipeline:bm25+stage.bm25.k:100")["dir"] == "c"
    assert match_baseline(jobs, ["pipeline=bm25", "stage.bm25.k=1000"])["dir"] == "d"
    assert match_baseline(jobs, "pipeline:colbert") is None and match_baseline(jobs, None) is None


@pytest.mark.parametrize("arg", [
    "sweep.baseline=[pipeline=bm25]",  # the spelling of the issue, a Hydra parse error on its own
    "sweep.baseline=pipeline=bm25",
    "sweep.baseline=pipeline:bm25",
    "sweep.baseline=[pipeline:bm25]",
    "sweep.baseline=pipeline:bm25;stage.bm25.k:100",
    "sweep.baseline=pipeline:bm25,stage.bm25.k:100",  # would be a sweep over two baselines
    "++sweep.baseline=pipeline:bm25+stage.bm25.k:100",
])
def test_command_line_spellings_reach_hydra_as_one_value(arg):
    (out,) = normalise_args([arg])
    parsed = OverridesParser.create().parse_override(out)
    assert not parsed.is_sweep_override()
    wanted = parse_baseline(parsed.value())
    assert wanted["pipeline"] == "bm25" and set(wanted) <= {"pipeline", "stage.bm25.k"}
    assert normalise_args(["pipeline=bm25,dense", "stage.bm25.k=1,2"]) == ["pipeline=bm25,dense", "stage.bm25.k=1,2"]


def test_sweep_settings_stay_out_of_the_sweep_folder_name():
    assert sweep_name(["+experiment=cutoffs", "sweep.baseline=['pipeline:bm25']", "max_queries=5"]) == \
        "cutoffs,max_queries=5"
    assert sweep_name(["pipeline=bm25,dense", "++sweep.test=randomization"]) == "pipeline=bm25,dense"


def _cascade(*args, cwd, tmp_path):
    env = {**os.environ, "CASCADE_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "cascade.app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_baseline_from_the_command_line_and_changed_on_a_finished_sweep(tiny_beir, tmp_path):
    grid = ("run", "-m", "pipeline=bm25,bm25_rescore", "dataset.path=tiny", "stage.bm25.k=3,2")
    root = tiny_beir.parent / "multirun" / "pipeline=bm25,bm25_rescore,dataset.path=tiny,stage.bm25.k=3,2"
    jobs = ["pipeline=bm25,stage.bm25.k=2", "pipeline=bm25,stage.bm25.k=3",
            "pipeline=bm25_rescore,stage.bm25.k=2", "pipeline=bm25_rescore,stage.bm25.k=3"]
    # the spelling (a Hydra parse error on its own; both bm25 jobs match: the first is used),
    # then '+'-joined conditions on the same sweep: its jobs are reused and the report follows the new baseline
    for spelling, baseline_dir, reused in [("sweep.baseline=[pipeline=bm25]", "pipeline=bm25,stage.bm25.k=3", 0),
                                           ("sweep.baseline=pipeline:bm25_rescore+stage.bm25.k:2",
                                            "pipeline=bm25_rescore,stage.bm25.k=2", 4)]:
        proc = _cascade(*grid, spelling, cwd=tiny_beir.parent, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert [p.name for p in root.parent.iterdir()] == [root.name]
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == jobs
        assert "__" not in root.name and not any("__" in j for j in jobs)
        assert proc.stdout.count("reused saved results") == reused
        with (root / "results.csv").open() as handle:
            rows = {r["dir"]: r for r in csv.DictReader(handle)}
        assert [d for d, r in rows.items() if r["baseline"] == "True"] == [baseline_dir]
        assert all(r["p_value"] for d, r in rows.items() if d != baseline_dir)


def test_a_bad_baseline_stops_the_sweep_before_any_job(tiny_beir, tmp_path):
    proc = _cascade("run", "-m", "pipeline=bm25,bm25_rescore", "dataset.path=tiny", "sweep.baseline=bm25",
                    cwd=tiny_beir.parent, tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "'bm25' is not a key:value condition" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tiny_beir.parent / "multirun").exists()


def test_a_bad_baseline_in_an_experiment_file_stops_the_sweep_before_any_job(tiny_beir, tmp_path):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text("# @package _global_\nsweep:\n  baseline: bm25\n")
    proc = _cascade(
        "run",
        "-m",
        "--config-dir",
        str(tmp_path / "conf"),
        "+experiment=mine",
        "pipeline=bm25,bm25_rescore",
        "dataset.path=tiny",
        cwd=tiny_beir.parent,
        tmp_path=tmp_path,
    )
    assert proc.returncode == 2
    assert "'bm25' is not a key:value condition" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tiny_beir.parent / "multirun").exists()
