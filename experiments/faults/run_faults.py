#!/usr/bin/env python3
"""Fault study: reproduce known faults of cascade through its CLI (and API), one verdict per case.

    . .venv/bin/activate && python experiments/faults/run_faults.py [--only 1,4] [--keep]

Everything is made in a temp dir (tiny BEIR folders, a tiny random model, one cache per case);
case 6 reads SciFact from $CASCADE_DATA_DIR/scifact or ../shared/data/scifact. Writes
experiments/faults/results.md (when all cases ran) and prints it. README.md says what each case expects.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCIFACT = Path(os.environ.get("CASCADE_DATA_DIR") or REPO.parent / "shared" / "data") / "scifact"
CLI = [sys.executable, "-m", "cascade.app.cli"]
TB = "Traceback (most recent call last)"
PROGRESS = re.compile(r"\d+%\||it/s\]|doc/s\]|s/it\]")
TMP = Path(tempfile.mkdtemp(prefix="cascade-faults-"))
ROWS: list[dict] = []
FIX: dict = {}  # shared fixtures, made once: data folders, the tiny model, the baseline cache
DOCS = {"d1": "The cat sat on the mat and purred.", "d2": "Dogs bark loudly at the mail carrier.",
        "d3": "A cat and a kitten chase a mouse.", "d4": "Birds sing in the morning light.",
        "d5": "Fish swim in cold rivers and lakes.", "d6": "Cats and dogs are the most common pets."}
QUERIES = {"q1": "cat on a mat", "q2": "barking dogs", "q3": "fish in rivers", "q4": "singing birds"}
QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}, "q3": {"d5": 2}, "q4": {"d4": 1}}
QREL_LINES = [f"{q}\t{d}\t{r}" for q, rel in QRELS.items() for d, r in rel.items()]

# --- running the CLI and recording rows ------------------------------------------------------------
@dataclass
class Proc:
    """A finished command (or API call): what to show, exit code, stdout, stderr."""
    cmd: str
    rc: int | None
    out: str = ""
    err: str = ""
    text = property(lambda self: self.out + "\n" + self.err)
    tb = property(lambda self: TB in self.text)
    # the corpus-encoding log lines, "encoded 300 documents (tokens) in 3.6 s: ..."
    encoded = property(lambda self: [int(n) for n in re.findall(r"encoded (\d+) documents", self.text)])

def show(args, cache=None, env=None) -> str:
    cmd = shlex.join(map(str, args)).replace(shlex.join(CLI), "cascade")
    shown_env = {**(env or {}), **({"CASCADE_CACHE_DIR": cache} if cache else {})}
    cmd = "".join(f"{k}={v} " for k, v in shown_env.items()) + cmd
    return cmd.replace(str(TMP), "$TMP")

def start(args, cache, env=None, argv=None, **kw) -> subprocess.Popen:
    """``cascade ARGS`` (as ``python -m cascade.app.cli``) with its own cache, in $TMP; Hydra logs go to stdout."""
    full = {**os.environ, "CASCADE_CACHE_DIR": str(cache), **(env or {})}
    full.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(argv or [*CLI, *map(str, args)], env=full, cwd=TMP, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", **kw)

def finish(p: subprocess.Popen, shown: str) -> Proc:
    out, err = p.communicate(timeout=600)
    return Proc(shown, p.returncode, out, err)

def cli(args, cache, env=None, argv=None, shown=None) -> Proc:
    return finish(start(args, cache, env, argv), show(shown or [*CLI, *args], cache, env))

def message(p: Proc) -> str:
    """The last meaningful line: the last ``error...`` line of stderr, else the last non-progress line."""
    lines = lambda t: [s.strip() for s in re.split(r"[\r\n]+", t) if s.strip() and not PROGRESS.search(s)]  # noqa
    err, out = lines(p.err), lines(p.out)
    return ([s for s in err if s.lower().startswith("error")] or (err if p.rc else []) or out or err or [""])[-1]

def written(folder: Path) -> str:
    return ", ".join(n for n in ("metrics.json", "run.trec") if (Path(folder) / n).is_file()) or "no"

def add(case: str, p: Proc, ok: bool | None, note: str, wrote: str = "-", msg: str | None = None) -> None:
    verdict = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    msg = (message(p) if msg is None else msg).replace(str(TMP), "$TMP")
    ROWS.append(dict(case=case, command=p.cmd, rc=p.rc, message=msg,
                     tb="yes" if p.tb else "no", wrote=wrote, verdict=verdict, note=note))
    print(f"[{verdict}] {case}: {note}", flush=True)

# --- data and shared fixtures -----------------------------------------------------------------------
def write_beir(root: Path, docs=DOCS, queries=QUERIES, qrels_text=None) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    jsonl = lambda rows: "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in rows.items())  # noqa
    (root / "corpus.jsonl").write_text(jsonl(docs))
    (root / "queries.jsonl").write_text(jsonl(queries))
    (root / "qrels" / "test.tsv").write_text(qrels_text or "query-id\tcorpus-id\tscore\n" + "\n".join(QREL_LINES))
    return root

def synthetic(root: Path, n_docs=300, n_queries=20, words=25, seed=0) -> Path:
    """Documents of made-up words; query i is 3 words of one document, judged relevant."""
    rng, syl = random.Random(seed), ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "zu", "fa", "go", "hu"]
    vocab = sorted({"".join(rng.choices(syl, k=3)) for _ in range(400)})
    docs = {f"d{i}": " ".join(rng.choices(vocab, k=words)) for i in range(n_docs)}
    picks = {f"q{i}": f"d{(i * 13) % n_docs}" for i in range(n_queries)}
    write_beir(root, docs, {q: " ".join(rng.sample(docs[d].split(), 3)) for q, d in picks.items()},
               "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in picks.items()))
    return root

def fixtures() -> dict:
    if "model" not in FIX:
        from cascade.testing import tiny_sentence_transformer
        FIX.update(tiny=write_beir(TMP / "data" / "tiny"), medium=synthetic(TMP / "data" / "medium"),
                   model=tiny_sentence_transformer(TMP / "models" / "st"))
    return FIX

def colbert_cmd(run_dir, data=None, model=None):
    """bm25_colbert with the tiny model on the 300-document corpus, 16 documents per saved chunk."""
    return ["run", "pipeline=bm25_colbert", f"dataset.path={data or fixtures()['medium']}",
            f"stage.colbert.model={model or fixtures()['model']}", "stage.colbert.chunk_size=16",
            f"hydra.run.dir={run_dir}"]

def metrics(run_dir: Path) -> dict | None:
    f = Path(run_dir) / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None

def baseline() -> dict:
    """One clean colbert_cmd run: its cache (copied by cases 4 and 10) and metrics."""
    if "base" not in FIX:
        cache, run = TMP / "base" / "cache", TMP / "base" / "run"
        p = cli(colbert_cmd(run), cache)
        assert p.rc == 0, f"the baseline bm25_colbert run failed ({message(p)}); cases 4 and 10 need it"
        FIX["base"] = dict(cache=cache, metrics=metrics(run))
    return FIX["base"]

def chunks_saved(cache: Path) -> int:
    return len(list(cache.glob("*/*.partial/*.chunk.json")))

def wait_for(cond, timeout=180) -> bool:
    end = time.time() + timeout
    while time.time() < end and not cond():
        time.sleep(0.05)
    return cond()

# --- the cases --------------------------------------------------------------------------------------
def case1_config_code_execution():
    f, root = fixtures(), TMP / "c1"
    root.mkdir()
    secret, copy, pth = root / "secret.txt", root / "copied.txt", root / "evil.pth"
    secret.write_text("top secret\n")
    for sub, label, stage, made in (
            ("a", "1a `_target_: shutil.copyfile` in pipeline.stages", f"shutil.copyfile,src:{secret},dst:{copy}",
             copy),
            ("b", "1b `_target_: numpy.savetxt` writing a .pth file", f"numpy.savetxt,fname:{pth},X:[1]", pth)):
        p = cli(["run", "pipeline=bm25", f"dataset.path={f['tiny']}", f"pipeline.stages=[{{_target_:{stage}}}]",
                 f"hydra.run.dir={root / sub}"], root / "cache")
        named = "pipeline.stages[0]._target_" in message(p) and "allowed_targets" in message(p)
        add(label, p, p.rc == 2 and named and not made.exists() and not p.tb,
            f"file written: {made.exists()}; message names the key and allowed_targets: {named}", written(root / sub))
    (root / "confdir" / "experiment").mkdir(parents=True)
    (root / "confdir" / "experiment" / "evil.yaml").write_text(
        f"# @package _global_\nhydra:\n  callbacks:\n    evil:\n      _target_: shutil.copyfile\n"
        f"      src: {secret}\n      dst: {copy}\n")
    p = cli(["run", "--config-dir", root / "confdir", "+experiment=evil", "pipeline=bm25", f"dataset.path={f['tiny']}",
             f"hydra.run.dir={root / 'c'}"], root / "cache")
    started = (root / "c").exists()
    add("1c --config-dir experiment adding a Hydra callback `_target_: shutil.copyfile`", p,
        p.rc == 2 and not copy.exists() and not started and "allowed_targets" in message(p) and not p.tb,
        f"file copied: {copy.exists()}; Hydra started (run folder made): {started}", written(root / "c"))

def case2_concurrent_builds():
    root = TMP / "c2"
    runs = [root / "run1", root / "run2"]
    procs = [start(colbert_cmd(r), root / "cache") for r in runs]  # both start at once on one empty cache
    ps = [finish(p, show([*CLI, *colbert_cmd(r)], root / "cache")) for p, r in zip(procs, runs)]
    trecs = [(r / "run.trec").read_bytes() if (r / "run.trec").is_file() else None for r in runs]
    counts, same = [p.encoded for p in ps], trecs[0] is not None and trecs[0] == trecs[1]
    both = Proc(ps[0].cmd.replace("run1", "run{1,2}") + "  (both at once)", max(p.rc for p in ps),
                ps[0].out + ps[1].out, ps[0].err + ps[1].err)
    add("2 two neural runs at once on one empty cache", both,
        all(p.rc == 0 for p in ps) and same and sum(map(len, counts)) == 1,
        f"exit codes {[p.rc for p in ps]}; run.trec identical: {same}; 'encoded N documents' per run: {counts}",
        f"{written(runs[0])} / {written(runs[1])}")

def case3_stale_results():
    root = TMP / "c3"
    data, sweep = shutil.copytree(fixtures()["tiny"], root / "data"), root / "sweep"
    args = ["run", "-m", "pipeline=bm25", "stage.bm25.k=5,10", f"dataset.path={data}", f"hydra.sweep.dir={sweep}"]
    FIX["sweep"] = cli(args, root / "cache", env={"MPLCONFIGDIR": str(root / "mpl")})  # fresh matplotlib: case 9
    again = cli(args, root / "cache")
    write_beir(data, dict(DOCS, d1="The cat sat on the mat and purred loudly all afternoon."))
    p = cli(args, root / "cache")
    reused, done = p.out.count("reused saved results"), p.out.count(": done:")
    add("3a sweep rerun after one document's text changed", p, p.rc == 0 and reused == 0 and done == 2,
        f"unchanged rerun reused {again.out.count('reused saved results')}/2 jobs (control); after the change: "
        f"reused {reused}/2, reran {done}/2", "2 job folders")
    report = root / "report"
    report.mkdir()
    shutil.copy(sweep / "multirun.yaml", report)
    (report / "results.md").write_text("hand-written results\n")
    p = cli(["report", report], root / "cache")
    kept = (report / "results.md").read_text() == "hand-written results\n"
    add("3b `cascade report` on a folder with multirun.yaml + results.md, no job folders", p,
        p.rc == 2 and kept and not p.tb, f"results.md unchanged: {kept}; results.csv made: "
        f"{(report / 'results.csv').exists()}", "results.csv" if (report / "results.csv").exists() else "no")

def _randomize(npy: Path) -> None:
    import numpy as np
    arr = np.load(npy, mmap_mode="r+")  # keeps the valid header, overwrites the values
    arr[...] = np.random.default_rng(0).standard_normal(arr.shape).astype(arr.dtype)
    arr.flush()

def _flip(npy: Path, where: float) -> None:
    """Flip one bit of the byte at fraction ``where`` of the file, then put its mtime back."""
    st = npy.stat()
    offset = min(int(st.st_size * where), st.st_size - 1)
    with npy.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 1]))
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))

def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, **changes}, indent=2))

DAMAGES = {  # name -> (artifact kind, what to do to its folder)
    "truncated tokens.npy": ("colbert",
                             lambda a: os.truncate(a / "tokens.npy", (a / "tokens.npy").stat().st_size // 2)),
    "zeroed tokens.npy": ("colbert",
                          lambda a: (a / "tokens.npy").write_bytes(bytes((a / "tokens.npy").stat().st_size))),
    "deleted tokens.npy": ("colbert", lambda a: (a / "tokens.npy").unlink()),
    "deleted meta.json": ("colbert", lambda a: (a / "meta.json").unlink()),
    "garbled meta.json": ("colbert", lambda a: (a / "meta.json").write_text('{"files": {"tokens.npy": ')),
    "random values behind a valid .npy header (tokens.npy)": ("colbert", lambda a: _randomize(a / "tokens.npy")),
    "one byte flipped in the middle of tokens.npy, mtime put back": ("colbert", lambda a: _flip(a / "tokens.npy", 0.5)),
    "last byte of tokens.npy flipped": ("colbert", lambda a: _flip(a / "tokens.npy", 1.0)),
    "meta.json edited (num_docs changed, still valid JSON)": ("colbert", lambda a: _edit_meta(a, num_docs=1)),
    "deleted bm25s vocab.index.json": ("bm25s", lambda a: (a / "vocab.index.json").unlink()),
    "deleted bm25s params.index.json": ("bm25s", lambda a: (a / "params.index.json").unlink()),
}

def _damaged_run(i: int, name: str) -> tuple:
    root = TMP / "c4" / str(i)
    cache = shutil.copytree(baseline()["cache"], root / "cache")
    kind, damage = DAMAGES[name]
    folder = next(p for p in (cache / kind).iterdir() if p.is_dir() and not p.name.startswith("."))
    damage(folder)
    return cli(colbert_cmd(root / "run"), cache), root, folder

def case4_damaged_cache():
    base = baseline()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda item: _damaged_run(*item), enumerate(DAMAGES)))
    for name, (p, root, folder) in zip(DAMAGES, results):
        got, logged = metrics(root / "run"), bool(re.search(r"rebuil", p.text))
        rebuilt = p.rc == 0 and got == base["metrics"] and logged
        refused = p.rc not in (0, None) and folder.name in message(p)
        note = ("rebuilt (logged), same metrics" if rebuilt else "refused, names the folder" if refused else
                f"exit {p.rc}; metrics {'same' if got == base['metrics'] else 'DIFFERENT' if got else 'none'}; "
                f"rebuild logged: {logged}")
        logs = [line.split(" - ", 1)[-1] for line in p.out.splitlines() if "][WARNING]" in line or "rebuilding" in line]
        add(f"4 damaged cache: {name}", p, (rebuilt or refused) and not p.tb, note, written(root / "run"),
            " / ".join(dict.fromkeys(logs)) or None)
    root = TMP / "c4" / "partial"  # a build killed mid-way leaves <artifact>.partial/ behind
    proc = start(colbert_cmd(root / "killed"), root / "cache")
    mid = wait_for(lambda: chunks_saved(root / "cache") >= 2 or proc.poll() is not None) and proc.poll() is None
    proc.kill(), proc.communicate()
    saved = chunks_saved(root / "cache")
    p = cli(colbert_cmd(root / "run"), root / "cache")
    left, same = list((root / "cache").glob("colbert/*.partial")), metrics(root / "run") == base["metrics"]
    add("4 stale `.partial` folder left by a build killed with SIGKILL", p,
        (p.rc == 0 and same and not left and not p.tb) if mid and saved else None,
        f"killed mid-build: {mid}, {saved} chunks left; rerun resumed: {'resuming' in p.text}, "
        f"encoded {p.encoded}; metrics same: {same}; .partial left: {len(left)}", written(root / "run"))

def _edit_dense(folder: Path, **changes) -> Path:
    cfg = folder / "1_Dense" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **changes}))
    return folder

def case5_checkpoints():
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from cascade import load_beir
    from cascade.encoders.colbert_formats import load_token_encoder
    from cascade.stages.bm25 import BM25
    from cascade.stages.cross_encoder import CrossEncoder
    from cascade.testing import tiny_cross_encoder, tiny_pylate
    f, root = fixtures(), TMP / "c5"
    folder = _edit_dense(tiny_pylate(root / "pylate"), use_residual=True)  # 32 -> 16, no residual.weight saved
    p = cli(colbert_cmd(root / "run", f["tiny"], folder), root / "cache")
    add("5a PyLate Dense config edited to `use_residual: true` (32->16, no residual.weight), CLI", p,
        p.rc == 2 and "use_residual" in message(p) and not p.tb,
        "refused, names use_residual" if p.rc == 2 and "use_residual" in message(p) else
        f"exit {p.rc}" + (": loaded although the residual weights are missing" if p.rc == 0 else ""),
        written(root / "run"))
    # equal widths: PyLate computes W x + x, which must equal a plain Dense whose weight is W + I
    res, ref, plain = (tiny_pylate(root / n, hidden=32, dim=32) for n in ("res", "ref", "plain"))
    _edit_dense(res, use_residual=True)
    weights = load_file(str(ref / "1_Dense" / "model.safetensors"))
    weights["linear.weight"] = (weights["linear.weight"] + torch.eye(32)).contiguous()
    save_file(weights, str(ref / "1_Dense" / "model.safetensors"), metadata={"format": "pt"})
    api = Proc("python: load_token_encoder(PyLate 32->32 edited to use_residual: true, precision=fp32)"
               ".encode_docs(docs)", 0)
    try:  # fp32: the check is that the residual is applied exactly (bf16 rounding alone moves vectors ~3e-3)
        a, b, c = (load_token_encoder(str(x), device="cpu", precision="fp32").encode_docs(list(DOCS.values())).tokens
                   for x in (res, ref, plain))
        diff, moved = float(np.abs(a - b).max()), float(np.abs(a - c).max())
        add("5b PyLate Dense config edited to `use_residual: true` (32->32), API", api, diff < 1e-5 and moved > 1e-3,
            f"max abs diff to the W+I reference {diff:.1e}; the residual moves the vectors by {moved:.2f}", "-",
            "(loads)")
    except Exception as err:  # noqa: BLE001 - a refusal is acceptable when it says why
        api.rc, api.err = 1, f"{type(err).__name__}: {err}"
        add("5b PyLate Dense config edited to `use_residual: true` (32->32), API", api, "use_residual" in str(err),
            "refused", "-", api.err[:300])
    ds = load_beir(synthetic(root / "long", n_docs=20, n_queries=5, words=80, seed=1))
    model = tiny_cross_encoder(root / "ce", max_length=24)
    run = (BM25(cache_dir=str(root / "cache")) % 5 >> CrossEncoder(model=str(model)) % 5)(ds)
    texts, queries = dict(zip(ds.corpus.ids, ds.corpus.texts)), dict(zip(ds.query_ids, ds.query_texts))
    triples = [(q, d, s) for q, docs in run.to_dict().items() for d, s in docs.items()]
    pairs, ours = [(queries[q], texts[d]) for q, d, _ in triples], np.array([s for *_, s in triples])
    ref24, ref512 = (STCrossEncoder(str(model), device="cpu", **kw).predict(pairs, activation_fn=torch.nn.Identity())
                     for kw in ({}, {"max_length": 512}))
    diff, full = float(np.abs(ours - ref24).max()), float(np.abs(ours - ref512).max())
    add("5c cross-encoder saved with max length 24: cascade vs sentence_transformers.CrossEncoder",
        Proc("python: (BM25() % 5 >> CrossEncoder(model=CE24) % 5)(ds) vs CrossEncoder(CE24).predict(pairs)", 0),
        diff < 1e-5, f"max abs diff {diff:.1e} over {len(pairs)} long pairs (vs max_length 512: {full:.1e})", "-",
        f"max abs diff {diff:.1e}")

BIG_TREC = r"""
import json, re, resource, sys, time
import numpy as np
from cascade import Candidates, Run, write_trec_run
status = lambda key: int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
rng, (q, k, n) = np.random.default_rng(0), (11000, 1000, 50000)
scores = np.sort(rng.random((q, k), dtype=np.float32), axis=1)[:, ::-1]
run = Run(tuple(f"q{i}" for i in range(q)), tuple(f"doc{i}" for i in range(n)),
          Candidates(rng.integers(0, n, (q, k)), scores))
del scores
before, t = status("VmRSS"), time.time()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
write_trec_run(run, sys.argv[1])
print(json.dumps({"before": before, "peak": status("VmHWM"), "s": time.time() - t,
                  "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

def case6_run_files():
    import ir_measures
    root = TMP / "c6"
    root.mkdir()
    if not (SCIFACT / "corpus.jsonl").is_file():
        add("6a SciFact bm25: run.trec vs metrics.json", Proc("-", None, err=f"no SciFact at {SCIFACT}"), None,
            "skipped")
    else:
        p = cli(["run", "pipeline=bm25", f"dataset.path={SCIFACT}", f"hydra.run.dir={root / 'run'}"], root / "cache",
                env={"MPLCONFIGDIR": str(root / "mpl")})  # fresh matplotlib config: case 9
        FIX["bm25"], saved = p, metrics(root / "run") or {}
        rows = [line.split("\t") for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:] if line]
        qrels = [ir_measures.Qrel(q, d, int(r)) for q, d, r in rows]
        got = ir_measures.calc_aggregate([ir_measures.parse_measure(m) for m in saved], qrels,
                                         list(ir_measures.read_trec_run(str(root / "run" / "run.trec"))))
        got = {str(m): float(v) for m, v in got.items()}
        equal = bool(saved) and all(got.get(m) == v for m, v in saved.items())
        worst = max((abs(got.get(m, float("inf")) - v) for m, v in saved.items()), default=float("nan"))
        add("6a SciFact `pipeline=bm25`: run.trec evaluated by ir_measures vs metrics.json", p, p.rc == 0 and equal,
            f"exactly equal: {equal} (max abs diff {worst:.1e}); nDCG@10 {saved.get('nDCG@10', 0):.4f}",
            written(root / "run"))
    r = subprocess.run([sys.executable, "-c", BIG_TREC, str(root / "big.trec")], capture_output=True, text=True)
    p = Proc("python: write_trec_run(Run of 11,000 queries x 1,000 docs) in a subprocess", r.returncode, r.stdout,
             r.stderr)
    try:
        stats, lines = json.loads(r.stdout.strip().splitlines()[-1]), sum(1 for _ in open(root / "big.trec", "rb"))
        growth = stats["peak"] - stats["before"]
        add("6b write_trec_run of 11,000 x 1,000: peak RSS growth", p, growth < 512 and lines == 11_000_000,
            f"peak RSS {growth:.0f} MB above the {stats['before']:.0f} MB before the write; {stats['s']:.0f} s; "
            f"{lines:,} lines", "big.trec", f"{growth:.0f} MB extra")
    except Exception as err:  # noqa: BLE001
        add("6b write_trec_run of 11,000 x 1,000: peak RSS growth", p, False, f"no measurement: {err}")
    (root / "big.trec").unlink(missing_ok=True)

def _bad(name, data, words, extra=(), pipeline="bm25", rc=2) -> tuple:
    """Run ``pipeline`` on ``data``; safe = exit ``rc``, no traceback, no results (when rc != 0), ``words`` named."""
    root = TMP / "runs" / name
    p = cli(["run", f"pipeline={pipeline}", f"dataset.path={data}", f"hydra.run.dir={root / 'run'}", *extra],
            root / "cache")
    lacks = [w for w in words if w.lower() not in message(p).lower()]
    ok = p.rc == rc and not p.tb and not lacks and (written(root / "run") == "no") == (rc != 0)
    note = f"message lacks {lacks}" if lacks else f"exit {p.rc}; message names {', '.join(words)}"
    return p, ok, note, written(root / "run")

def case7_bad_input():
    f, root = fixtures(), TMP / "c7"
    dup = write_beir(root / "dup", queries=dict(QUERIES))
    with (dup / "queries.jsonl").open("a") as out:
        out.write(json.dumps({"_id": "q1", "text": "a second q1"}) + "\n")
    add("7 duplicate query id (q1 again on line 5 of queries.jsonl)",
        *_bad("dup", dup, ["queries.jsonl", "'q1'", "line 5"]))
    first = [QREL_LINES[2]] + QREL_LINES[:2] + QREL_LINES[3:]  # line 1: "q2 d2 1", q2's only judgment
    p, ok, _, wrote = _bad("nohead", write_beir(root / "nohead", qrels_text="\n".join(first)), [], rc=0)
    summary = TMP / "runs" / "nohead" / "run" / "summary.json"
    n = json.loads(summary.read_text())["queries"] if summary.is_file() else None
    add("7 qrels without header, first score 1 (an integer)", p, ok and n == 4,
        f"queries evaluated: {n} of 4 (q2, judged only on line 1, needs that row)", wrote)
    frac = write_beir(root / "frac", qrels_text="q2\td2\t1.5\n" + "\n".join(first[1:]))
    add("7 qrels without header, first score 1.5 (not an integer)", *_bad("frac", frac, ["test.tsv", "line 1", "1.5"]))
    add("7 all-empty corpus (every title and text empty)",
        *_bad("empty", write_beir(root / "empty", {d: "" for d in DOCS}), ["corpus.jsonl", "empty"]))
    sur = write_beir(root / "surrogate")
    sur.joinpath("queries.jsonl").write_text('{"_id": "q1", "text": "cat \\ud800 mat"}\n' + "".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items() if q != "q1"))
    add("7 lone surrogate (JSON `\\ud800`) in query line 1", *_bad("surrogate", sur, ["queries.jsonl", "line 1"]))
    add("7 `metrics=[]`", *_bad("nometrics", f["tiny"], ["metrics"], ["metrics=[]"]))
    p, ok, note, wrote = _bad("colbert_first", f["medium"], ["colbert", "retrieve"],
                              ["pipeline.stages=[${stage.colbert}]", f"stage.colbert.model={f['model']}"],
                              "bm25_colbert")
    cache = TMP / "runs" / "colbert_first" / "cache"
    made = [str(x.relative_to(cache)) for x in cache.rglob("*")] if cache.exists() else []
    if p.rc == 0:  # ColBERT may retrieve (exhaustive MaxSim) since f4e91a4: then its top 10 must be MaxSim's
        same, diff = _colbert_first_matches(TMP / "runs" / "colbert_first" / "run" / "run.trec", cache)
        ok = same and diff < 1e-3
        note = f"ran as a retriever; top 10 = MaxSim over every document: {same} (score diff {diff:.1e})"
    add("7 ColBERT first: `pipeline.stages=[${stage.colbert}]`", p, ok and (p.rc == 0 or not made),
        f"{note}; cache entries made: {made[:2] or 'none'}", wrote)

def _colbert_first_matches(trec: Path, cache: Path) -> tuple[bool, float]:
    """Compare a ColBERT-first run file with exact MaxSim reranking of every document (the API, same cache)."""
    import numpy as np

    from cascade import Candidates, Stage, load_beir
    from cascade.stages.colbert import ColBERT

    class Everything(Stage):  # hands every document to the next stage
        def retrieve(self, batch, k):
            n, q = len(batch.corpus), batch.num_queries
            return Candidates(np.tile(np.arange(n), (q, 1)), np.zeros((q, n), np.float32))

        def score(self, batch):
            return np.zeros(batch.candidates.doc_idx.shape, np.float32)

    ds = load_beir(fixtures()["medium"])
    ref = (Everything(k=None) >> ColBERT(model=str(fixtures()["model"]), cache_dir=str(cache), chunk_size=16) % 10)(ds)
    got: dict = {}
    for line in trec.read_text().splitlines():
        q, _, d, _, score, _ = line.split()
        got.setdefault(q, {})[d] = float(score)
    want = ref.to_dict()
    same = all(list(got.get(q, {})) == list(docs) for q, docs in want.items())
    diff = max(abs(got[q][d] - s) for q, docs in want.items() for d, s in docs.items() if d in got.get(q, {}))
    return same, diff

def case8_errors():
    from cascade import load_beir
    f, root = fixtures(), TMP / "c8"
    bad = write_beir(root / "utf8")
    corpus_file = bad.joinpath("corpus.jsonl")
    corpus_file.write_bytes(corpus_file.read_bytes().replace(b"kitten", b"kitt\xffen"))
    add("8 non-UTF-8 byte on corpus.jsonl line 3, CLI", *_bad("utf8", bad, ["corpus.jsonl", "line 3"]))
    p = Proc(f"python: cascade.load_beir({show([bad])!r})", 0, "loaded without an error")
    try:
        load_beir(bad)
    except Exception as err:  # noqa: BLE001
        p.rc, p.out, p.err = 1, "", f"{type(err).__name__}: {err}"
    add("8 non-UTF-8 byte on corpus.jsonl line 3, `cascade.load_beir`", p,
        p.err.startswith("DataError") and "corpus.jsonl" in p.err and "line 3" in p.err,
        "DataError naming file and line" if "line 3" in p.err else "no file and line", "-", p.err or p.out)
    p, ok, _, wrote = _bad("cuda", f["tiny"], ["cuda"], [f"stage.biencoder.model={f['model']}",
                                                          "stage.biencoder.device=cuda"], "bm25_dense")
    says = bool(re.search(r"no CUDA|CUDA[^.;]*not available|not available[^.;]*CUDA", message(p), re.I))
    blames_model = bool(re.search(r"offline|does not exist|could not be loaded", message(p)))
    add("8 `stage.biencoder.device=cuda` on this CPU-only machine", p, ok and says and not blames_model,
        f"exit {p.rc}; says CUDA is unavailable: {says}; blames the model: {blames_model}", wrote)
    hide = ("import sys; sys.modules['hydra_plugins.hydra_ray_launcher'] = None; "
            "from cascade.app.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["run", "-m", "pipeline=bm25", "hydra/launcher=ray", f"dataset.path={f['tiny']}",
            f"hydra.sweep.dir={root / 'ray'}"]
    p = cli(args, root / "cache", argv=[sys.executable, "-c", hide, *args],
            shown=["python", "-c", "<hide hydra_plugins.hydra_ray_launcher, then cascade main()>", *args])
    hint = "pip install" in message(p)
    add("8 `hydra/launcher=ray` with the (installed) plugin hidden", p,
        p.rc == 2 and hint and not p.tb and not (root / "ray").exists(),
        f"install hint: {hint}; sweep folder made: {(root / 'ray').exists()}", "no")
    (root / "mods").mkdir()  # extra: an allowed stage module that exists but whose own import fails
    (root / "mods" / "mystage.py").write_text("import cascade\nfrom cascade.kernels.no_such_module import x\n\n"
                                              "class MyStage(cascade.Stage):\n    pass\n")
    p = cli(["run", "pipeline=bm25", f"dataset.path={f['tiny']}", "allowed_targets=[mystage]",
             "pipeline.stages=[{_target_:mystage.MyStage}]", f"hydra.run.dir={root / 'mods' / 'run'}"], root / "cache",
            env={"PYTHONPATH": str(root / "mods")})
    cause = "no_such_module" in message(p)
    add("8 (extra) allowed stage module whose own import fails (ImportError inside it)", p,
        p.rc == 2 and cause and not p.tb,
        f"exit {p.rc}; the real cause (No module named ...no_such_module) shown: {cause}",
        written(root / "mods" / "run"))
    cache, run = root / "sigint" / "cache", root / "sigint" / "run"
    args = ["run", "pipeline=bm25_dense", f"dataset.path={f['medium']}", f"stage.biencoder.model={f['model']}",
            "stage.biencoder.chunk_size=16", f"hydra.run.dir={run}"]
    proc = start(args, cache, start_new_session=True,  # its own process group, which a terminal's Ctrl-C hits
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    mid = wait_for(lambda: chunks_saved(cache) >= 1 or proc.poll() is not None) and proc.poll() is None
    if mid:
        os.killpg(proc.pid, signal.SIGINT)
    p = finish(proc, show([*CLI, *args], cache) + "   + Ctrl-C (SIGINT to its group) while encoding")
    add("8 Ctrl-C during a run (while encoding the corpus)", p, (p.rc == 130 and not p.tb) if mid else None,
        f"SIGINT sent mid-encoding: {mid}; exit {p.rc}; traceback: {p.tb}", written(run))

def case9_noise():
    for label, key in (("`cascade run pipeline=bm25` (SciFact, empty cache: index built)", "bm25"),
                       ("a `cascade run -m pipeline=bm25` sweep (its plot imports matplotlib)", "sweep")):
        p = FIX.get(key)
        if p is None:
            add(f"9 noise: {label}", Proc("-", None, err="run in case 6 / case 3"), None, "not run (needs case 3/6)")
            continue
        found = [s for s in ("[bm25s]", "generated new fontManager", "Matplotlib is building the font cache")
                 if s in p.text]
        add(f"9 noise: {label}, fresh MPLCONFIGDIR", p, p.rc == 0 and not found, f"noise found: {found or 'none'}",
            "-", msg=f"(stdout+stderr: {len(p.text.splitlines())} lines)")

def case10_content_identity():
    base, root = baseline(), TMP / "c10"
    model = shutil.copytree(fixtures()["model"], root / "elsewhere" / "model-copy")
    cache = shutil.copytree(base["cache"], root / "cache")  # the cache the original path built
    p = cli(colbert_cmd(root / "run", model=model), cache)
    same = metrics(root / "run") == base["metrics"]
    add("10 the tiny model copied to another path, same cache", p, p.rc == 0 and not p.encoded and same,
        f"'encoded N documents' lines: {p.encoded or 'none'}; metrics same: {same}", written(root / "run"))

def case11_configs_run_no_code():
    """Trust II: targets resolved (not spelled), logging configs, job environments, sweeps, pickled reruns."""
    f, root = fixtures(), TMP / "c11"
    made = root / "made"
    (root / "conf" / "experiment").mkdir(parents=True)

    def exp(name: str, text: str) -> list:
        (root / "conf" / "experiment" / f"{name}.yaml").write_text("# @package _global_\n" + text)
        return ["--config-dir", root / "conf", f"+experiment={name}"]
    handler = lambda body: exp("log", f"hydra:\n  job_logging:\n    handlers:\n      h:\n{body}")  # noqa: E731
    cases = [
        ("11a `cascade.core.files.tempfile.mkdtemp` (a path through a module cascade imports)",
         [f"stage.bm25.fusion={{_target_: cascade.core.files.tempfile.mkdtemp, dir: {made}}}"]),
        ("11b `cascade.core.files.os.makedirs`",
         [f"stage.bm25.fusion={{_target_: cascade.core.files.os.makedirs, name: {made}}}"]),
        ("11c `cascade.core.stage.np.savetxt` writing a .pth file",
         [f"+dataset.x={{_target_: cascade.core.stage.np.savetxt, fname: {made}.pth, X: [1]}}"]),
        ("11d cascade's own file writer `cascade.core.files.atomic_write_text`",
         [f"+dataset.x={{_target_: cascade.core.files.atomic_write_text, path: {made}, text: x}}"]),
        ("11e `_partial_: true` target",
         ["stage.bm25.fusion={_target_: cascade.core.files.os.makedirs, _partial_: true}"]),
        ("11f target in `_args_`",
         ["stage.bm25.fusion={_target_: cascade.Fusion, _args_: "
          f"[{{_target_: cascade.core.files.os.makedirs, name: {made}}}]}}"]),
        ("11g interpolated target",
         ["+evil=cascade.core.files.os.makedirs", f"stage.bm25.fusion={{_target_: '${{evil}}', name: {made}}}"]),
        ("11h experiment file: job_logging handler `\"()\": os.makedirs`",
         handler(f"        \"()\": os.makedirs\n        name: {made}\n")),
        ("11i experiment file: job_logging `class: logging.FileHandler` writing a .pth file",
         handler(f"        class: logging.FileHandler\n        filename: {made}.pth\n")),
        ("11j experiment file: hydra_logging formatter `\"()\": os.makedirs`",
         exp("hlog", "hydra:\n  hydra_logging:\n    formatters:\n      f:\n        \"()\": os.makedirs\n"
                     f"        name: {made}\n")),
        ("11k `hydra.job.env_set` PYTHONPATH / LD_PRELOAD", ["+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"]),
        ("11l sweep whose second job names `os.makedirs` through an interpolation",
         ["-m", "+evil=cascade.Fusion,cascade.core.files.os.makedirs", "stage.bm25.fusion={_target_: '${evil}'}"]),
        ("11m `--experimental-rerun` (loads a pickled config)", ["--experimental-rerun", root / "config.pickle"]),
    ]
    for label, extra in cases:
        for old in (*root.glob("made*"), root / "run", root / "sweep"):  # each case starts clean
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        p = cli(["run", "pipeline=bm25", f"dataset.path={f['tiny']}", f"hydra.run.dir={root / 'run'}",
                 f"hydra.sweep.dir={root / 'sweep'}", *extra], root / "cache")
        created = [x.name for x in root.glob("made*")]
        started = (root / "run").exists() or (root / "sweep").exists()
        one_line = p.err.strip().count("\n") == 0 and p.err.startswith("error: ")
        add(label, p, p.rc == 2 and not created and not started and one_line and not p.tb,
            f"created: {created or 'nothing'}; Hydra started: {started}; one-line error: {one_line}")
    p = cli(["run", "pipeline=bm25", f"dataset.path={f['tiny']}", f"hydra.run.dir={root / 'ok'}"], root / "cache")
    add("11n the shipped configs still run (Hydra's own logging, cascade's targets)", p,
        p.rc == 0 and (root / "ok" / "metrics.json").is_file(), f"exit {p.rc}", written(root / "ok"))

def case12_damage_between_sampled_blocks():
    """A 48 MB artifact damaged between the blocks the old check sampled: the old stamp misses it."""
    import hashlib

    import numpy as np

    from cascade.core.errors import CorruptArtifactError
    from cascade.index import store

    def old_stamp(path: Path) -> str:  # the sampled check of main 4748df0: 64 evenly spaced 64 KiB blocks
        size, digest = path.stat().st_size, hashlib.sha256()
        with path.open("rb") as h:
            for i in range(64):
                h.seek(i * ((size - (1 << 16)) // 63))
                digest.update(h.read(1 << 16))
        return digest.hexdigest()

    root = TMP / "c12"
    for where in ("start", "between sampled blocks", "end"):
        path = root / where.replace(" ", "_")
        store.ensure(path, lambda tmp: np.save(tmp / "x.npy", np.arange(6_000_000, dtype=np.int64)), {})
        target = path / "x.npy"
        size = target.stat().st_size
        before = old_stamp(target)
        offset = {"start": 200, "between sampled blocks": (size - (1 << 16)) // 63 // 2 + 7, "end": size - 1}[where]
        _flip(target, offset / size)
        t0 = time.perf_counter()
        try:
            store.check(path)
            caught, msg = False, "loaded"
        except CorruptArtifactError as err:
            caught, msg = True, str(err)
        ms = (time.perf_counter() - t0) * 1e3
        at = "at the " if where != "between sampled blocks" else ""
        add(f"12 one byte damaged {at}{where} of a 48 MB array file",
            Proc("store.check(path)", 0, err=msg),
            caught, f"old sampled check would {'catch' if old_stamp(target) != before else 'MISS'} it; "
            f"full check: {'caught' if caught else 'MISSED'} in {ms:.0f} ms", "-", msg)

CASES = [case1_config_code_execution, case2_concurrent_builds, case3_stale_results, case4_damaged_cache,
         case5_checkpoints, case6_run_files, case7_bad_input, case8_errors, case9_noise, case10_content_identity,
         case11_configs_run_no_code, case12_damage_between_sampled_blocks]

def table() -> str:
    cell = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ("| case | command | exit | last message | traceback | results written | verdict | observation |\n"
            "|---|---|---:|---|---|---|---|---|\n" +
            "".join(f"| {cell(r['case'])} | `{cell(r['command'])}` | {r['rc']} | {cell(r['message'][:300])} "
                    f"| {r['tb']} "
                    f"| {cell(r['wrote'])} | **{r['verdict']}** | {cell(r['note'])} |\n" for r in ROWS))

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated case numbers, e.g. 1,4 (results.md is then not written)")
    ap.add_argument("--keep", action="store_true", help=f"keep the temp dir ({TMP})")
    args = ap.parse_args()
    only, t0 = {int(x) for x in args.only.split(",")} if args.only else None, time.time()
    try:
        for i, case in enumerate(CASES, 1):
            if only is None or i in only:
                try:
                    case()
                except Exception as err:  # noqa: BLE001 - a harness error is a FAIL row; the other cases run
                    import traceback
                    traceback.print_exc()
                    add(f"{i} {case.__name__}", Proc("-", None, err=f"{type(err).__name__}: {err}"), False,
                        "the case itself crashed (harness error, see the traceback printed above)")
    finally:
        if not args.keep:
            shutil.rmtree(TMP, ignore_errors=True)
    counts = {v: sum(r["verdict"] == v for r in ROWS) for v in ("PASS", "FAIL", "SKIP")}
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})"
    text = (f"# Fault study results\n\nRecorded {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine} in "
            f"{time.time() - t0:.0f} s by `python experiments/faults/run_faults.py`: {counts['PASS']} PASS, "
            f"{counts['FAIL']} FAIL, {counts['SKIP']} SKIP. `$TMP` is the run's temp dir.\n\n{table()}")
    if only is None:
        (HERE / "results.md").write_text(text)
    print("\n" + text)
    return 1 if counts["FAIL"] else 0

if __name__ == "__main__":
    sys.exit(main())
