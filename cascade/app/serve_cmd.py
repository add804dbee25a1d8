"""``cascade serve [options] [key=value ...]`` or ``cascade serve DIR``: a pipeline over HTTP.

The config is the one ``cascade run`` / ``cascade index`` compose (``cascade.conf``, the same
overrides, the same ``_target_`` checks). Each ``--pipeline NAME`` adds that pipeline config
(the same overrides plus ``pipeline=NAME``); requests choose one by its name. Every pipeline
is bound to the dataset's corpus with ``pipeline.index(corpus)`` (indexes built or reused from
the cache; build them ahead with ``cascade index``) and served by uvicorn, or by Ray Serve
with ``--ray``. ``cascade serve DIR [DIR ...]`` serves saved indexes instead (``cascade.load(DIR)``),
each named by its folder, whose documents ``/documents`` can add, replace and delete.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from cascade.app.serve_models import Limits
from cascade.app.serve_ray import serve_on_ray
from cascade.app.serve_spec import ServeSpec, build_app, build_searchers  # noqa: F401 (build_searchers: re-exported)
from cascade.core.errors import CascadeError, ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "CASCADE_SERVE_TOKEN"
DESCRIPTION = """Serve a configured pipeline over HTTP: POST /search, POST /rerank, GET /health, GET /stats,
a search page at / and the OpenAPI docs at /docs. Overrides are those of `cascade run`, e.g.
  cascade serve pipeline=bm25 dataset.path=/data/beir/nfcorpus
  cascade serve --pipeline bm25 --pipeline cascade --port 8080      # two pipelines, chosen per request
  cascade serve --ray --replicas 2                                  # Ray Serve, 2 replicas
  cascade serve my-index                                            # a saved index folder (cascade index --out)
With saved indexes, POST/PUT/DELETE /documents add, replace and delete documents."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cascade serve", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="*", metavar="key=value", help="config overrides, as for cascade run")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", default=None,
                   help=f"require 'Authorization: Bearer TOKEN' on /search, /rerank and /stats (or ${TOKEN_ENV})")
    p.add_argument("--pipeline", action="append", default=[], metavar="NAME",
                   help="a pipeline config to serve (conf/pipeline/NAME.yaml); repeat for several; the first is "
                        "the default (none given: the config's pipeline)")
    p.add_argument("--max-batch", type=int, default=32, help="most queries merged into one pipeline call (32)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long a batch waits for more requests once one is ready (2 ms)")
    p.add_argument("--no-batching", action="store_true", help="one request per pipeline call (--max-batch 1)")
    p.add_argument("--max-k", type=int, default=Limits.max_k, help=f"largest k a request may ask ({Limits.max_k})")
    p.add_argument("--max-queries", type=int, default=Limits.max_queries,
                   help=f"most queries in one request ({Limits.max_queries})")
    p.add_argument("--ray", action="store_true", help='serve with Ray Serve (pip install "cascade-rerank[ray-serve]")')
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --ray; default 1)")
    p.add_argument("--ray-address", default=None,
                   help="with --ray: a running cluster (auto, HOST:PORT, ray://HOST:PORT); default a private local Ray")
    return p


def parse(args: Sequence[str]) -> tuple[ServeSpec, argparse.Namespace]:
    """The spec and the options of ``cascade serve ARGS``; a CascadeError for bad arguments."""
    opts = _parser().parse_intermixed_args(list(args))  # overrides before, between or after options
    folders = tuple(a for a in opts.args if "=" not in a and Path(a).is_dir())
    if folders and (len(folders) < len(opts.args) or opts.pipeline):
        raise ConfigError("cascade serve DIR [DIR ...] serves saved indexes as they were saved: give folders only, "
                          "without key=value overrides or --pipeline")
    bad = [a for a in opts.args if "=" not in a and a not in folders]
    if bad:
        raise ConfigError(f"cascade serve takes key=value overrides or saved index folders, not {bad[0]!r} "
                          "(no such folder)")
    for name in ("max_batch", "max_k", "max_queries", "replicas"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    if opts.max_wait_ms < 0:
        raise ConfigError(f"--max-wait-ms must be >= 0, got {opts.max_wait_ms}")
    if not 0 < opts.port < 65536:
        raise ConfigError(f"--port must be 1..65535, got {opts.port}")
    if opts.replicas > 1 and not opts.ray:
        raise ConfigError("--replicas needs --ray (one uvicorn process serves one replica)")
    token = opts.token if opts.token is not None else os.environ.get(TOKEN_ENV) or None
    limits = Limits(max_k=opts.max_k, max_queries=opts.max_queries)
    spec = ServeSpec(() if folders else tuple(opts.args), tuple(opts.pipeline),
                     1 if opts.no_batching else opts.max_batch, opts.max_wait_ms, token, limits,
                     tuple(str(Path(f).resolve()) for f in folders))
    return spec, opts


def main(args: Sequence[str]) -> int:
    """The ``cascade serve`` command; 2 on bad input (before any index is opened)."""
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        spec, opts = parse(args)
        if opts.host not in ("127.0.0.1", "localhost", "::1") and spec.token is None:
            log.warning("serving on %s without a token: anyone who reaches this address can search", opts.host)
        if opts.ray:
            return serve_on_ray(spec, opts.replicas, opts.host, opts.port, opts.ray_address)
        app = build_app(spec)
        import uvicorn
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"cascade serve: http://{opts.host}:{opts.port}/ (pipelines: {', '.join(app.state.searchers)}; "
          f"API docs at /docs)", flush=True)
    signal.signal(signal.SIGTERM, _stopped)  # uvicorn shuts down gracefully, then re-raises SIGTERM: exit 0 then
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0


def _stopped(signum: int, frame) -> None:
    print("cascade serve: stopped", flush=True)
    raise SystemExit(0)
