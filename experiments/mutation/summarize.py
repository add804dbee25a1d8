"""Summarize mutmut 2's cache (the workspace's .mutmut-cache): score per file, every surviving mutant.

    python experiments/mutation/summarize.py WORKSPACE OUT_DIR

Writes OUT_DIR/summary.md (table per file) and OUT_DIR/survivors.tsv (id, file, line, mutant diff).
"""
from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path


def main(workspace: str, out_dir: str) -> None:
    ws, out = Path(workspace), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(ws / ".mutmut-cache")
    rows = db.execute(
        "SELECT m.id, s.filename, l.line_number, l.line, m.status FROM Mutant m JOIN Line l ON m.line = l.id "
        "JOIN SourceFile s ON l.sourcefile = s.id ORDER BY s.filename, l.line_number, m.'index'").fetchall()
    counts: dict[str, Counter] = {}
    survivors = []
    current: dict[str, list[str]] = {}
    for mid, filename, line_number, text, status in rows:
        if filename not in current:
            path = ws / filename
            current[filename] = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        lines = current[filename]
        if line_number >= len(lines) or lines[line_number] != text:
            continue  # a line of an older version of the file: not a mutant of the code as it is
        counts.setdefault(filename, Counter())[status] += 1
        if status in ("bad_survived", "bad_timeout", "ok_suspicious"):
            diff = subprocess.run([str(Path(sys.executable).with_name("mutmut")), "show", str(mid)], cwd=ws,
                                  capture_output=True, text=True).stdout
            changed = [ln[1:].strip() for ln in diff.splitlines()
                       if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
            survivors.append((mid, filename, line_number + 1, status, " => ".join(changed)))
    lines = ["| file | mutants | killed | survived | timeout | suspicious | untested | score |",
             "|---|---|---|---|---|---|---|---|"]
    total = Counter()
    for filename, c in counts.items():
        total.update(c)
        lines.append(_row(filename, c))
    lines.append(_row("**all**", total))
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (out / "survivors.tsv").open("w", encoding="utf-8") as f:
        f.write("id\tfile\tline\tstatus\tmutation (original => mutant)\n")
        for s in survivors:
            f.write("\t".join(map(str, s)) + "\n")
    print("\n".join(lines))
    print(f"{len(survivors)} surviving mutants -> {out / 'survivors.tsv'}")


def _row(name: str, c: Counter) -> str:
    tested = c["ok_killed"] + c["bad_survived"] + c["bad_timeout"] + c["ok_suspicious"]
    killed = c["ok_killed"] + c["bad_timeout"]  # a timeout is a detected (hung) mutant
    score = f"{100 * killed / tested:.1f}%" if tested else "-"
    return (f"| {name} | {sum(c.values())} | {c['ok_killed']} | {c['bad_survived']} | {c['bad_timeout']} | "
            f"{c['ok_suspicious']} | {c['untested']} | {score} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", help="the mutmut workspace (holding .mutmut-cache)")
    ap.add_argument("out_dir", help="where summary.md and survivors.tsv go")
    args = ap.parse_args()
    main(args.workspace, args.out_dir)
