"""Corpus encoding on Ray: a pool of actors encodes the chunks, this process saves them as they finish.

Each actor rebuilds the encoder pass from its picklable recipe (:attr:`DocPass.recipe`), loading
the model once, and checks that its model files are those the cache key names. This process
sends each missing chunk's texts to the least busy actor and saves every result into the
artifact's ``.partial/`` chunk layout the moment it arrives (arrays, then the marker), exactly as
a local build does: a killed job resumes with only the missing chunks, and the assembled
artifact is the local one. Only this process reads the corpus and writes the cache; the workers
need the model (same files at the same path, or the same hub name) and cascade installed. Workers
run the pass at the effective precision its stage planned (part of the cache key), whatever their
device: a GPU worker runs a pass planned at bf16 in bf16, and refuses it if the GPU lacks bf16.
"""
from __future__ import annotations

import logging
import numbers
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from cascade.core.errors import CascadeError, ConfigError
from cascade.encoders.sentence import DocPass, Encoded
from cascade.index.encoding import check_pass_precision
from cascade.kernels.precision import check_precision

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "cascade-rerank[ray]" (from a checkout: pip install -e ".[ray]")'


def import_ray() -> Any:
    """The ``ray`` module, or a CascadeError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CascadeError(f"encoding=ray needs Ray, which is not installed: {INSTALL_HINT}; "
                           "or encode in this process with encoding=local") from None
    return ray


class EncodeWorker:
    """The body of one Ray actor: the pass rebuilt once on ``device``, then chunk after chunk."""

    def __init__(self, recipe: Callable[[str], Callable[..., Encoded]], device: str, num_threads: int):
        import torch

        torch.set_num_threads(max(1, num_threads))
        self.device = device
        self.encode_fn = recipe(device)  # the pass autocasts itself, at the precision it was planned with

    def encode(self, texts: list[str]) -> Encoded:
        return self.encode_fn(texts, None)


def _number(value: Any, what: str, minimum: float, integer: bool = False) -> Any:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        raise ConfigError(f"encoding.{what} must be {'an integer' if integer else 'a number'} >= {minimum}, "
                          f"got {value!r}")
    return value


def _reason(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text[:600]}"


class RayEngine:
    """Encode corpus chunks on Ray actors (see the module docstring).

    Args:
        address: None starts a private Ray on this machine for the build (and stops it after);
            ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` joins a running cluster. When this
            process is already connected (e.g. inside a Ray sweep job) that connection is used.
        num_workers: actors, each loading the model once (fewer if the cluster lacks the resources).
        num_cpus_per_worker: CPUs per actor (also its torch thread count).
        num_gpus_per_worker: GPUs per actor (fractions share one); > 0 encodes on ``cuda``, else ``cpu``.
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16`` or None (whatever the stages chose): every pass must
            have been planned at what this means on its stage's device (see :mod:`cascade.index.encoding`).
        chunks_in_flight: chunks queued per actor, so none idles while this process saves.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int = 2, num_cpus_per_worker: float = 1,
                 num_gpus_per_worker: float = 0, precision: str | None = None, chunks_in_flight: int = 2):
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ConfigError(f"encoding.address must be null (a private local Ray), auto, HOST:PORT or "
                              f"ray://HOST:PORT, got {address!r}")
        self.address = address.strip() if address else None
        self.num_workers = _number(num_workers, "num_workers", 1, integer=True)
        self.num_cpus_per_worker = _number(num_cpus_per_worker, "num_cpus_per_worker", 0)
        self.num_gpus_per_worker = _number(num_gpus_per_worker, "num_gpus_per_worker", 0)
        self.chunks_in_flight = _number(chunks_in_flight, "chunks_in_flight", 1, integer=True)
        self.precision = None if precision is None else check_precision(precision)
        self.device = "cuda" if self.num_gpus_per_worker > 0 else "cpu"
        if self.address is not None:
            self._check_reachable()  # before any work, not after the models are loaded

    # --- the EncodingEngine protocol (cascade.index.encoding) -------------------------------
    def encode_chunks(self, doc_pass: DocPass, texts: Callable[[int, int], list[str]], chunks: Sequence[tuple],
                      save: Callable[[int, int, Encoded], None], progress: Callable[[int], None]) -> dict:
        if doc_pass.recipe is None:
            raise ConfigError("this encoder cannot be rebuilt on Ray workers (its DocPass has no recipe); "
                              "encode in this process with encoding=local")
        check_pass_precision(self.precision, doc_pass)
        ray = import_ray()
        started = self._connect(ray)
        try:
            count = self._fitting_workers(ray)
            actor = ray.remote(EncodeWorker).options(num_cpus=self.num_cpus_per_worker,
                                                      num_gpus=self.num_gpus_per_worker)
            threads = max(1, int(self.num_cpus_per_worker))
            actors = [actor.remote(doc_pass.recipe, self.device, threads) for _ in range(count)]
            log.info("encoding %d chunks on %d Ray workers (%s, %s CPU and %s GPU each)", len(chunks), count,
                     self.device, self.num_cpus_per_worker, self.num_gpus_per_worker)
            try:
                self._dispatch(ray, actors, texts, chunks, save, progress)
            finally:
                for handle in actors:
                    ray.kill(handle)
        finally:
            if started:
                ray.shutdown()
        return {"engine": self.name, "workers": count, "worker_device": self.device}

    # --- internals ------------------------------------------------------------------------------
    def _connect(self, ray: Any) -> bool:
        """Connect to Ray; True when this call started it (and must stop it)."""
        if ray.is_initialized():
            return False
        if self.address is None:
            cpus = max(os.cpu_count() or 1, int(self.num_workers * self.num_cpus_per_worker + 0.999))
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        else:
            try:
                ray.init(address=self.address, logging_level=logging.WARNING)
            except Exception as err:  # noqa: BLE001 - ConnectionError, ValueError...: report with the fix
                raise CascadeError(f"could not join the Ray cluster at encoding.address={self.address}: "
                                   f"{_reason(err)}. Start it first (ray start --head on the head node), or "
                                   "set encoding.address=null for a private local Ray") from None
        return True

    def _check_reachable(self) -> None:
        """A HOST:PORT (or ray://HOST:PORT) nobody listens on is an error now (Ray itself retries for minutes)."""
        if self.address is None or self.address == "auto":  # a private local Ray, or Ray finds the cluster
            return
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as err:
            raise CascadeError(f"no Ray cluster answers at encoding.address={self.address} ({err}); start its head "
                               "first (`ray start --head --port=PORT` on the head node) and give HOST:PORT, auto, "
                               "or ray://HOST:PORT, or set encoding.address=null for a private local Ray") from None

    def _fitting_workers(self, ray: Any) -> int:
        """How many of ``num_workers`` the cluster's free resources hold now (at least one, or an error)."""
        free = ray.available_resources()
        count = self.num_workers
        for resource, each in (("CPU", self.num_cpus_per_worker), ("GPU", self.num_gpus_per_worker)):
            if each > 0:
                count = min(count, int(free.get(resource, 0) / each + 1e-9))
        if count < 1:
            raise ConfigError(f"the Ray cluster has {free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs "
                              f"free: not enough for one encoding worker of {self.num_cpus_per_worker} CPU and "
                              f"{self.num_gpus_per_worker} GPU; lower encoding.num_cpus_per_worker or "
                              "encoding.num_gpus_per_worker, or add nodes")
        if count < self.num_workers:
            log.warning("the Ray cluster has room for %d of the %d encoding workers asked for; using %d",
                        count, self.num_workers, count)
        return count

    def _dispatch(self, ray: Any, actors: list, texts: Callable[[int, int], list[str]], chunks: Sequence[tuple],
                  save: Callable[[int, int, Encoded], None], progress: Callable[[int], None]) -> None:
        queue, pending, busy, saved = deque(chunks), {}, [0] * len(actors), 0

        def submit() -> None:
            while queue:
                i = min(range(len(actors)), key=busy.__getitem__)
                if busy[i] >= self.chunks_in_flight:
                    return
                start, end = queue.popleft()
                pending[actors[i].encode.remote(texts(start, end))] = (start, end, i)
                busy[i] += 1

        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                start, end, i = pending.pop(ref)
                busy[i] -= 1
                try:
                    encoded = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - RayTaskError, RayActorError...: report, keep the saved
                    raise CascadeError(
                        f"a Ray encoding worker failed on documents {start}:{end}: {_reason(err)}. The {saved} "
                        "chunks finished so far are saved; run the same command again to encode only the "
                        "missing ones") from None
                save(start, end, encoded)
                progress(end - start)
                saved += 1
            submit()

    def __repr__(self) -> str:
        return (f"RayEngine(address={self.address!r}, num_workers={self.num_workers}, "
                f"num_cpus_per_worker={self.num_cpus_per_worker}, num_gpus_per_worker={self.num_gpus_per_worker})")
