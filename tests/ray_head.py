"""A private Ray head on 127.0.0.1 for the Ray tests (sweep launcher, encoding engine)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")
# no token authentication between the tests' processes (Ray >= 2.5x enables it by default)
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(head: subprocess.Popen) -> None:
    """End the head and everything it started (its own process group), nothing else."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.killpg(head.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@contextmanager
def ray_head(log: Path, env_extra: dict | None = None):
    """Start ``ray start --head`` (2 CPUs) on a free port; yield ``127.0.0.1:PORT``; stop it after.

    Skips the test when the ``ray`` command is missing or the head does not come up in 90 s.
    """
    if not RAY.is_file():
        pytest.skip(f"the ray command is not next to {sys.executable}")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    env = {**os.environ, **RAY_ENV, **(env_extra or {})}
    with log.open("w") as out:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            status = subprocess.run([str(RAY), "status", f"--address={address}"], env=env,
                                    capture_output=True, text=True, timeout=60)
            if status.returncode == 0 and "CPU" in status.stdout:
                break
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"a Ray head could not start on {address} here:\n{log.read_text()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)
