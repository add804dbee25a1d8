"""plant.py FILE OLD NEW [pytest args...]: copy the working tree (installed layout) to $PLANT_WORKDIR,
replace OLD by NEW in FILE there, run pytest; prints CAUGHT or MISSED."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WS = Path(os.environ.get("PLANT_WORKDIR", "/tmp/cascade-plant"))
f, old, new, *args = sys.argv[1:]
if WS.exists():
    shutil.rmtree(WS)
ign = shutil.ignore_patterns("__pycache__")
shutil.copytree(REPO / "cascade", WS / "cascade", ignore=ign)
shutil.copytree(REPO / "stages", WS / "cascade/stages", ignore=ign)
shutil.copytree(REPO / "conf", WS / "cascade/conf", ignore=ign)
shutil.copytree(REPO / "tests", WS / "tests", ignore=ign)
target = WS / f.replace("stages/", "cascade/stages/", 1) if f.startswith("stages/") else WS / f
src = target.read_text()
assert src.count(old) >= 1, f"not found: {old!r}"
target.write_text(src.replace(old, new, 1))
r = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                   cwd=WS, env={**os.environ, "PYTHONPATH": str(WS)}, capture_output=True, text=True)
tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
print(("CAUGHT " if r.returncode else "MISSED ") + tail)
