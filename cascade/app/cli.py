"""The ``cascade`` command: ``cascade run [overrides]``, ``cascade report DIR``, ``cascade download``."""
from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import cascade
from cascade.app.baseline import normalise_args as normalise_baseline
from cascade.app.jobs import JobOutcome, run_sweep_job
from cascade.app.precheck import ConfigRefused, checked_composition, composed_by_cascade, parse_args
from cascade.app.runner import Built, RunResult, run
from cascade.app.sweep import SweepSummary
from cascade.app.tables import markdown_table
from cascade.core.errors import CascadeError

CONFIG_MODULE = "cascade.conf"
USAGE = """usage: cascade <command> [args]

commands:
  run [key=value ...]     run a pipeline (Hydra overrides; -m for a sweep, --help for the config)
  index [key=value ...]   build (or reuse) every index the configured pipeline needs, without evaluating
                          (--out DIR: save them as an index folder; index add|update|delete|compact|info DIR ...)
  serve [key=value ...]   serve the configured pipeline over HTTP: /search, /rerank, a search page (--help)
  report DIR              rebuild a sweep's results table and plot from DIR
  tune DIR --budget-ms MS best config of a sweep under a ms/query budget, cross-validated, with its command
  download NAME DIR       download a BEIR dataset (e.g. scifact) into DIR/NAME
  verify [DIR] [--all]    check every cached artifact against its checksums (--all: rehash everything)
  eval RUN QRELS [-m M..] evaluate a TREC run file against qrels (no corpus needed)

options:
  --version               print cascade's version
  -h, --help              this help
"""


def print_result(result: RunResult) -> None:
    print(markdown_table([{"metric": name, "value": value} for name, value in result.metrics.items()]))
    print()
    print(markdown_table(result.stages))
    print(f"\nresults saved in {result.output_dir}")


def print_job(outcome: JobOutcome) -> None:
    """One line per sweep job (the full tables are in its folder and the sweep's results.md)."""
    name = Path(outcome.output_dir).name
    if outcome.status == "failed":
        error = outcome.error or {}
        print(f"job {name}: FAILED: {error.get('type')}: {error.get('message')}", file=sys.stderr)
        return
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in outcome.metrics.items())
    ms = outcome.result.summary.ms_per_query if outcome.result is not None else None
    done = "reused saved results" if outcome.status == "skipped" else "done"
    print(f"job {name}: {done}: {metrics}" + (f", {ms:.2f} ms/query" if ms is not None else ""))


def print_sweep(report: SweepSummary) -> int:
    """Print a finished sweep's table; 1 if any job failed."""
    print(f"\n{report.table}\n\nresults: {report.results} and results.csv"
          + (f"; plot: {report.plot}" if report.plot else ""))
    if report.incomplete:
        print(f"{report.incomplete} job folder(s) hold no results (killed earlier?); "
              "run the same sweep again to finish them")
    if not report.failed:
        return 0
    print(f"error: {len(report.failed)} of {report.rows} jobs failed (their rows are marked failed):",
          file=sys.stderr)
    for name, error in report.failed:
        print(f"  {name}: {error}", file=sys.stderr)
    return 1


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    logging.getLogger("cascade").setLevel(cfg.get("log_level", "INFO"))
    checked = composed_by_cascade()  # cascade's loader checked this config as Hydra composed it
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        outcome = run_sweep_job(cfg, checked)  # a failed job is recorded in its folder; the sweep goes on
        print_job(outcome)
        return outcome.metrics.get(str(cfg.sweep.metric))
    try:
        result = run(cfg, built=Built(cfg, checked))
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print_result(result)
    return result.metrics.get("nDCG@10")


def _report(args: list[str]) -> int:
    """``cascade report DIR``: rebuild the table and plot of a finished or partial sweep."""
    from cascade.app.sweep import write_report

    if len(args) != 1 or args[0] in ("-h", "--help"):
        help_asked = bool(args) and args[0] in ("-h", "--help")
        print("usage: cascade report DIR   (DIR: a sweep folder, e.g. multirun/cutoffs)",
              file=sys.stdout if help_asked else sys.stderr)
        return 0 if help_asked else 2
    summary = write_report(args[0])
    print(summary.table)
    print(f"\nresults: {summary.results} and results.csv" + (f"; plot: {summary.plot}" if summary.plot else ""))
    return 0


def _download(args: list[str]) -> int:
    from cascade.app.download import download_beir

    if len(args) != 2 or args[0] in ("-h", "--help"):
        help_asked = bool(args) and args[0] in ("-h", "--help")
        print("usage: cascade download NAME DIR   (e.g. cascade download scifact data/)",
              file=sys.stdout if help_asked else sys.stderr)
        return 0 if help_asked else 2
    print(download_beir(args[0], args[1]))
    return 0


LAUNCHER_PLUGINS = {
    "joblib": ("hydra_joblib_launcher", "sweep"),
    "ray": ("hydra_ray_launcher", "sweep"),
    "ray_cluster": ("hydra_ray_launcher", "sweep"),
    "submitit_local": ("hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_submitit_launcher", "slurm"),
}


def check_launcher(args: list[str]) -> None:
    """A launcher whose plugin is not installed: say which extra installs it."""
    import importlib.util

    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and value in LAUNCHER_PLUGINS:
            module, extra = LAUNCHER_PLUGINS[value]
            if importlib.util.find_spec(f"hydra_plugins.{module}") is None:
                raise CascadeError(f"the {value} launcher needs the {module.replace('_', '-')} plugin, which is not "
                                   f"installed: pip install \"cascade-rerank[{extra}]\" (from a checkout: "
                                   f"pip install -e \".[{extra}]\")")


def _run(rest: list[str]) -> int:
    """``cascade run``: Hydra around :func:`cascade.app.runner.run`; a sweep's summary comes back in a file."""
    rest = normalise_baseline(rest)  # sweep.baseline=[pipeline=bm25] etc.: see cascade.app.baseline
    check_launcher(rest)
    flags, overrides, _ = parse_args(rest)  # refuses what cascade does not support; flags go first for Hydra
    folder = Path(tempfile.mkdtemp(prefix="cascade-report-"))
    report_file = folder / "report.json"
    try:
        sys.argv = ["cascade run", *flags, *overrides, f"++hydra.callbacks.sweep_report.report_file={report_file}"]
        with checked_composition():  # each config Hydra composes is checked before Hydra applies it
            hydra_main()
        if report_file.is_file():
            return print_sweep(SweepSummary.from_dict(json.loads(report_file.read_text(encoding="utf-8"))))
        return 0
    except ConfigRefused as refused:  # raised inside Hydra, before it applied any of the config
        raise refused.error from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        print(f"cascade {cascade.__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "run":
            return _run(rest)
        if command == "index":
            from cascade.app.index_cmd import main as index_main

            return index_main(rest)
        if command == "serve":
            from cascade.app.serve_cmd import main as serve_main

            return serve_main(rest)
        if command == "report":
            return _report(rest)
        if command == "tune":
            from cascade.app.tune import main as tune_main

            return tune_main(rest)
        if command == "download":
            return _download(rest)
        if command == "verify":
            from cascade.app.verify_cmd import main as verify_main

            return verify_main(rest)
        if command == "eval":
            from cascade.app.eval_cmd import main as eval_main

            return eval_main(rest)
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
