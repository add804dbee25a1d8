"""``cascade serve --ray --replicas N``: the same app as a Ray Serve deployment of N replicas.

Each replica builds the app of the :class:`~cascade.app.serve_spec.ServeSpec` it is given (the
config composed again there, the pipelines bound to the corpus, its own batcher), so a request
is answered exactly as by ``cascade serve`` without Ray. The indexes come from the cache
directory: replicas open the cached vector and token files memory-mapped, so replicas on one node
share their pages. Replicas start in the driver's working directory with its ``CASCADE_*`` and
Hugging Face environment variables, so relative paths and the cache resolve as they do here; on a
cluster, the dataset and the cache must be at the same paths on every node (shared storage), and
the indexes should be built beforehand with ``cascade index`` (else every replica builds them).
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from cascade.app.serve_spec import ServeSpec, build_app
from cascade.core.errors import CascadeError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "cascade-rerank[ray-serve]" (from a checkout: pip install -e ".[ray-serve]")'
APP_NAME = "cascade"
ENV_PREFIXES = ("CASCADE_", "HF_", "TRANSFORMERS_", "RAY_AUTH_MODE")


def import_serve() -> tuple[Any, Any]:
    """``(ray, ray.serve)``, or a CascadeError saying how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise CascadeError(f"cascade serve --ray needs Ray Serve, which is not installed: {INSTALL_HINT}") from None
    return ray, serve


def driver_env() -> dict[str, str]:
    """The environment variables replicas inherit from this process (cache, data, model settings)."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


class Replica:
    """One Ray Serve replica: changes to the driver's folder (if this node has it), builds the app."""

    def __init__(self, spec: ServeSpec, cwd: str):
        if os.path.isdir(cwd):
            os.chdir(cwd)
        logging.basicConfig(level=logging.WARNING)
        self._app = build_app(spec)

    def __serve_build_asgi_app__(self):
        return self._app


def deployment(spec: ServeSpec, replicas: int = 1, num_cpus: float = 1.0, cwd: str | None = None):
    """The bound Ray Serve application: ``replicas`` copies of the app of ``spec``."""
    _, serve = import_serve()
    ingress = serve.ingress()(Replica)  # the app comes from Replica.__serve_build_asgi_app__
    options = {"num_cpus": num_cpus, "runtime_env": {"env_vars": driver_env()}}
    return serve.deployment(ingress, name="cascade", num_replicas=replicas,
                            ray_actor_options=options).bind(spec, cwd or os.getcwd())


def start(spec: ServeSpec, replicas: int, host: str, port: int, address: str | None) -> bool:
    """Connect to Ray (``address`` None: a private local one), start Serve on ``host:port`` and deploy.

    Returns whether this call started Ray (and so should shut it down at the end).
    """
    ray, serve = import_serve()
    private = address is None and not ray.is_initialized()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 **({} if address else {"num_cpus": max(os.cpu_count() or 1, replicas)}))
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(spec, replicas), name=APP_NAME, route_prefix="/")
    return private


def stop(private: bool) -> None:
    """Remove the app; a private Ray (and its Serve) is shut down, a cluster's Serve keeps running."""
    ray, serve = import_serve()
    try:
        if private:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    except Exception as err:  # noqa: BLE001 - stopping: report, then disconnect anyway
        log.warning("could not stop Ray Serve cleanly: %s: %s", type(err).__name__, err)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def serve_on_ray(spec: ServeSpec, replicas: int, host: str, port: int, address: str | None) -> int:
    """``cascade serve --ray``: deploy, then serve until SIGINT or SIGTERM; 0 when stopped."""
    from cascade.app.index_cmd import compose_config

    configs = [[*spec.overrides, f"pipeline={p}"] for p in spec.pipelines] or [list(spec.overrides)]
    for overrides in [] if spec.indexes else configs:
        compose_config(overrides)  # a bad config fails here, before any replica starts
    ray, _ = import_serve()
    private = address is None and not ray.is_initialized()
    try:
        start(spec, replicas, host, port, address)
    except Exception as err:  # noqa: BLE001 - a replica that cannot build the app: say why, stop what started
        stop(private)
        raise CascadeError(f"Ray Serve could not deploy the app: {type(err).__name__}: {err}") from None
    # after ray.init, whose own SIGTERM handler would abort the process: SIGTERM stops as Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print(f"cascade serve (Ray Serve, {replicas} replicas): http://{host}:{port}/ (API docs at /docs)",
              flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        stop(private)
    return 0
