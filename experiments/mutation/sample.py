"""Mutant sampling for the big kernels: keep a fixed random sample of a file's mutants, mark the rest skipped.

    python experiments/mutation/sample.py WORKSPACE FILE N [SEED]

Run beside ``mutmut run`` (run.sh does): waits until mutmut has registered FILE's mutants and
hashed the tests, then marks every mutant outside the sample (a seeded permutation of the
mutant ids; a later run keeps the mutants an earlier one tested) as skipped against the hash of the tests as they
are now, which mutmut then passes over. Mutants already tested keep their status.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
import time

import numpy as np


def main(workspace: str, filename: str, n: int, seed: int = 0) -> None:
    from mutmut.cache import hash_of_tests  # mutmut: only in the mutation environment (run.sh)

    deadline = time.time() + 3600
    while time.time() < deadline:
        try:
            db = sqlite3.connect(f"{workspace}/.mutmut-cache", timeout=30)
            rows = db.execute(
                "SELECT m.id, m.status FROM Mutant m JOIN Line l ON m.line = l.id JOIN SourceFile s ON "
                "l.sourcefile = s.id WHERE s.filename = ? ORDER BY l.line_number, m.'index'", (filename,)).fetchall()
            ids = [r[0] for r in rows]
        except sqlite3.OperationalError:  # cache not created yet
            ids = []
        if ids:
            break
        time.sleep(2)
    else:
        sys.exit(f"no mutants of {filename} registered in {workspace}")
    current = hash_of_tests([f"{workspace}/tests"])  # what mutmut compares a cached status against
    # a later run (other tests) keeps the mutants tested before, topped up from the seeded permutation
    tested = {i for i, status in rows if status not in ("untested", "skipped")}
    order = [ids[j] for j in np.random.default_rng(seed).permutation(len(ids)) if ids[j] not in tested]
    keep = tested | set(order[:max(0, n - len(tested))])
    rest = [i for i in ids if i not in keep]
    with db:
        db.executemany("UPDATE Mutant SET status = 'skipped', tested_against_hash = ? "
                       "WHERE id = ? AND status IN ('untested', 'skipped')", [(current, i) for i in rest])
    print(f"{filename}: sampled {len(keep)} of {len(ids)} mutants (seed {seed})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", help="the mutmut workspace (holding .mutmut-cache)")
    ap.add_argument("file", help="the file whose mutants are sampled, as mutmut names it")
    ap.add_argument("n", type=int, help="how many mutants to keep")
    ap.add_argument("seed", type=int, nargs="?", default=0, help="the permutation's seed (default 0)")
    args = ap.parse_args()
    main(args.workspace, args.file, args.n, args.seed)
