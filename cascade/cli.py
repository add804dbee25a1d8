"""The ``cascade`` command: ``cascade run [overrides]``, ``cascade report DIR``, ``cascade download``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cascade.app import run
from cascade.errors import CascadeError
from cascade.tables import markdown_table

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
USAGE = """usage: cascade <command> [args]

commands:
  run [key=value ...]     run a pipeline (Hydra overrides; -m for a sweep, --help for the config)
  report DIR              rebuild a sweep's results table and plot from DIR
  download NAME DIR       download a BEIR dataset (e.g. scifact) into DIR/NAME
"""


def print_result(result: dict) -> None:
    metrics = result["metrics"]
    print(markdown_table([{"metric": name, "value": value} for name, value in metrics.items()]))
    print()
    print(markdown_table(result["stages"]))
    print(f"\nresults saved in {result['output_dir']}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    logging.getLogger("cascade").setLevel(cfg.get("log_level", "INFO"))
    logging.getLogger("stages").setLevel(cfg.get("log_level", "INFO"))
    try:
        result = run(cfg)
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print_result(result)
    return result["metrics"].get("nDCG@10")


def _download(args: list[str]) -> int:
    from cascade.download import download_beir

    if len(args) != 2:
        print("usage: cascade download NAME DIR   (e.g. cascade download scifact data/)", file=sys.stderr)
        return 2
    print(download_beir(args[0], args[1]))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "run":
            if not Path(CONF_DIR).is_dir() and "--config-dir" not in " ".join(rest) and "-cd" not in rest:
                raise CascadeError(f"config folder {CONF_DIR} not found; install cascade from a checkout "
                                   "with `pip install -e .`, or pass --config-dir PATH/TO/conf")
            sys.argv = ["cascade run", *rest]
            hydra_main()
            return 0
        if command == "report":
            from cascade.sweep import report_main

            return report_main(rest)
        if command == "download":
            return _download(rest)
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
