"""The studies under experiments/: every entry script answers ``--help`` (argparse usage, exit 0, no data or
models loaded), and every study folder holds a README, a script and its recorded results."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

EXPERIMENTS = REPO / "experiments"
STUDIES = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
# entry scripts: the study's *.py files with a ``__main__`` block (helper modules such as synth_pass.py have none;
# mutation/plant.py and union/dump_runs.py, ranx_check.py are sys.argv scripts without one)
SCRIPTS = sorted(p for study in STUDIES for p in study.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())

# recorded results named other than results*: the study's own name for them
RESULTS_NAMED = {"maxsim_bench": "bound_results.txt", "tuning": "tune.md"}
# studies whose figures are recorded only in their README (no results file beside it)
RESULTS_IN_README = {"bm25_backends", "neural_cascade"}


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_every_study_has_an_entry_script():
    assert SCRIPTS
    without = [s.name for s in STUDIES
               if not any(p.parent == s for p in SCRIPTS) and not list(s.glob("*.sh")) and not list(s.glob("*.py"))]
    assert not without, f"study folders with no script: {without}"


@pytest.mark.parametrize("script", SCRIPTS, ids=_rel)
def test_a_study_script_answers_help(script):
    r = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{_rel(script)} --help exited {r.returncode}:\n{r.stderr[-2000:]}"
    assert r.stdout.startswith("usage:"), f"{_rel(script)} --help printed no argparse usage:\n{r.stdout[:500]}"


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_a_study_folder_has_a_readme_a_script_and_results(study):
    names = {p.name for p in study.iterdir()}
    assert "README.md" in names, f"{study.name}: no README.md"
    assert any(n.endswith((".py", ".sh")) for n in names), f"{study.name}: no script"
    if study.name in RESULTS_IN_README:
        assert not any(n.startswith("results") for n in names), f"{study.name} has results now: drop it from the list"
        return
    wanted = RESULTS_NAMED.get(study.name)
    found = wanted in names if wanted else any(n.startswith("results") for n in names)
    assert found, f"{study.name}: no recorded results ({wanted or 'results*'})"


def test_the_exceptions_name_real_studies():
    assert set(RESULTS_NAMED) | RESULTS_IN_README <= {s.name for s in STUDIES}
