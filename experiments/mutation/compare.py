"""Join a before and an after mutmut cache: every mutant that survived before, and its status after.

    python experiments/mutation/compare.py BEFORE_WORKSPACE_OR_CACHE AFTER_CACHE [AFTER_CACHE ...] > table.tsv

A mutant is identified by (file, original line text, index within the line), so it is matched
across line-number shifts. The mutation is shown by ``mutmut show`` run in the before workspace.
"""
from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
from pathlib import Path

QUERY = ("SELECT m.id, s.filename, l.line_number, l.line, m.'index', m.status FROM Mutant m "
         "JOIN Line l ON m.line = l.id JOIN SourceFile s ON l.sourcefile = s.id")


def _db(path: str) -> Path:
    p = Path(path)
    return p / ".mutmut-cache" if p.is_dir() else p


def main(before: str, *afters: str) -> None:
    after_status: dict[tuple, str] = {}
    for a in afters:
        for _, f, _, text, idx, status in sqlite3.connect(_db(a)).execute(QUERY).fetchall():
            if status != "untested":
                after_status[(f, text, idx)] = status
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    print("file\tline\tmutation (original => mutant)\tbefore\tafter")
    db = sqlite3.connect(_db(before))
    rows = db.execute(QUERY + " ORDER BY s.filename, l.line_number").fetchall()
    db.close()
    for mid, f, n, text, idx, status in rows:
        if status not in ("bad_survived", "ok_suspicious"):
            continue
        diff = subprocess.run([mutmut, "show", str(mid)], cwd=Path(before), capture_output=True, text=True).stdout
        changed = [ln[1:].strip() for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        print(f"{f}\t{n + 1}\t{' => '.join(changed)}\t{status}\t{after_status.get((f, text, idx), 'untested')}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", help="the before mutmut workspace (or its .mutmut-cache)")
    ap.add_argument("afters", nargs="+", metavar="after", help="one or more after caches")
    args = ap.parse_args()
    main(args.before, *args.afters)
