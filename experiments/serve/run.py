"""Load test of `cascade serve` on SciFact: throughput and latency at concurrency 1, 8 and 32, with and without
dynamic batching, for pipeline=bm25, the default cascade and pipeline=colbert; beside `cascade run` on the
same queries in the same session.

    CASCADE_CACHE_DIR=/work/cache_serve CASCADE_DATA_DIR=/work/shared/data \\
        python experiments/serve/run.py --out experiments/serve/results      # appends to results/load.jsonl
    python experiments/serve/run.py --table experiments/serve/results/load.jsonl

Build the indexes first (`cascade index`, `cascade index pipeline=colbert`) with the same cache dir, or the
server builds them at start. Every request goes to 127.0.0.1; each cell is a bounded loop: `--requests`
requests per cell (cut at `--seconds`), spread over C concurrent clients, each sending its next SciFact
query (k=10) as soon as its last answer came back. The server runs in its own process (`cascade serve`,
one per pipeline and batching setting); the clients run in this one, on the same cores. Latency is
measured by the clients, from sending a request to reading its answer. The load average is recorded
before and after every cell.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

PIPELINES = {"bm25": ["pipeline=bm25"], "cascade": [], "colbert": ["pipeline=colbert"]}
CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def scifact_queries(data_dir: Path) -> list[str]:
    """SciFact's test queries in the order `cascade run` takes them (max_queries=N: the first N)."""
    from cascade import load_beir

    return list(load_beir(data_dir / "scifact").query_texts)


class Server:
    """`cascade serve OVERRIDES` in a subprocess on a free 127.0.0.1 port, until stop()."""

    def __init__(self, overrides: list[str], batching: bool, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [*overrides, "--port", str(self.port)] + ([] if batching else ["--no-batching"])
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "cascade.app.cli", "serve", *args,
                                      "log_level=WARNING"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {log}")
            time.sleep(0.5)

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", timeout=30).json()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()


async def cell(url: str, queries: list[str], concurrency: int, requests: int, seconds: float) -> dict:
    """``requests`` searches by ``concurrency`` clients (no new one after ``seconds``): latencies and batch sizes."""
    latencies: list[float] = []
    batch_sizes: list[int] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        start = time.perf_counter()

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() - start > seconds:
                    return
                sent = time.perf_counter()
                response = await client.post("/search", json={"query": queries[i % len(queries)], "k": 10})
                response.raise_for_status()
                latencies.append(1000 * (time.perf_counter() - sent))
                batch_sizes.append(response.json()["batch"]["queries"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.asarray(latencies)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"requests": len(lat), "seconds": round(wall, 3), "throughput_qps": len(lat) / wall,
            "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "mean_batch": float(np.mean(batch_sizes)), "max_batch": int(max(batch_sizes))}


def cascade_run(overrides: list[str], n: int, folder: Path) -> dict:
    """`cascade run` over the first ``n`` test queries: its ms/query (stage time) and the command's wall time."""
    out = folder / "run"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cascade.app.cli", "run", *overrides, f"max_queries={n}",
                    f"hydra.run.dir={out}", "log_level=WARNING"], check=True, capture_output=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    return {"queries": n, "ms_per_query": summary["ms_per_query"], "throughput_qps": 1000 / summary["ms_per_query"],
            "command_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--requests", type=int, default=300, help="requests per cell (default 300)")
    parser.add_argument("--seconds", type=float, default=40, help="no new request after this many seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument("--run-queries", type=int, default=100, help="queries for the `cascade run` comparison")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CASCADE_DATA_DIR", "../shared/data")))
    parser.add_argument("--table", type=Path, help="only print the tables of a finished run's load.jsonl")
    args = parser.parse_args()
    if args.table:
        return print(table(*read_jsonl(args.table)))
    args.out.mkdir(parents=True, exist_ok=True)
    queries = scifact_queries(args.data_dir)
    rows, runs = [], {}
    jsonl = (args.out / "load.jsonl").open("a")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        for name in args.pipelines:
            overrides = PIPELINES[name]
            for batching in (True, False):
                log = args.out / f"server_{name}_{'batch' if batching else 'nobatch'}.log"
                server = Server(overrides, batching, log)
                try:
                    asyncio.run(cell(server.url, queries, 1, 5, 60))  # warm-up: first queries load kernels
                    for c in CONCURRENCY:
                        before = load()
                        row = asyncio.run(cell(server.url, queries, c, args.requests, args.seconds))
                        row.update(pipeline=name, batching=batching, concurrency=c, load_before=before,
                                   load_after=load())
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        print(json.dumps(row), file=jsonl, flush=True)
                    (args.out / f"stats_{name}_{'batch' if batching else 'nobatch'}.json").write_text(
                        json.dumps(server.stats(), indent=1))
                finally:
                    server.stop()
            before = load()
            runs[name] = {**cascade_run(overrides, min(len(queries), args.run_queries), Path(tmp) / name),
                          "load_before": before, "load_after": load()}
            print(json.dumps({"cascade_run": name, **runs[name]}), flush=True)
            print(json.dumps({"cascade_run": name, **runs[name]}), file=jsonl, flush=True)
    jsonl.close()
    print(table(rows, runs))


def read_jsonl(path: Path) -> tuple[list[dict], dict]:
    """The cells and `cascade run` rows of a load.jsonl (or of this script's printed output)."""
    rows, runs = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if "cascade_run" in row:
                runs[row.pop("cascade_run")] = row
            else:
                rows.append(row)
    return rows, runs


def table(rows: list[dict], runs: dict) -> str:
    lines = ["| pipeline | batching | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | mean batch "
             "| load before -> after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pipeline']} | {'on' if r['batching'] else 'off'} | {r['concurrency']} | {r['requests']} | "
                     f"{r['throughput_qps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['mean_batch']:.1f} | {r['load_before']} -> {r['load_after']} |")
    lines += ["", "| pipeline | cascade run: queries | ms/query | queries/s | load before -> after |",
              "|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['queries']} | {r['ms_per_query']:.2f} | {r['throughput_qps']:.1f} | "
                     f"{r['load_before']} -> {r['load_after']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
