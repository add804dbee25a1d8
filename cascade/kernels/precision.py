"""Which reduced precision a device runs, and what ``auto`` means there: one answer for encoders and kernels.

A *requested* precision is ``auto``, ``fp32``, ``bf16`` or ``fp16``; :func:`resolve_precision` turns
it into the *effective* one (``fp32``, ``bf16`` or ``fp16``): what actually runs on a device, and what
cache keys record. Forward passes then run under :func:`autocast` of the effective precision.

* ``cuda``: ``auto`` is fp16; bf16 needs a GPU that has it (``torch.cuda.is_bf16_supported``).
* ``cpu``: ``auto`` is bf16 where the CPU computes bf16 natively (x86: AVX-512 BF16 or AMX,
  ``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``; ARM: the BF16 extension), else fp32.
  bf16 on another CPU is refused: torch would emulate it, slower than fp32. fp16 is refused on
  every CPU: fp16 is the GPU's reduced precision, and torch's CPU fp16 matmuls were no faster
  than fp32 even on a CPU with AVX-512 FP16 (``experiments/encoding_throughput/README.md``).
* any other device (``mps``...): fp32 only.

Unsupported requests are a :class:`~cascade.core.errors.ConfigError` naming the setting and the fix,
raised when a stage is built, before any corpus is read.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import platform
import subprocess
from pathlib import Path

from cascade.core.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EFFECTIVE = ("fp32", "bf16", "fp16")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
STAGE_NOTE = " (in configs every neural stage follows encoding.precision unless stage.<name>.precision is set)"
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 flags; "bf16" is the ARM feature name


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; macOS ``sysctl``), empty where unknown."""
    try:
        if platform.system() == "Darwin":
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            return {"bf16"} if out == "1" else set()
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except (OSError, subprocess.SubprocessError):
        return set()
    return cpuinfo_flags(text)


def cpuinfo_flags(text: str) -> set[str]:
    """The feature flags in ``/proc/cpuinfo`` text (x86 ``flags``, ARM ``Features`` lines)."""
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX on x86, BF16 on ARM)."""
    found = sorted(cpu_flags() & _CPU_BF16_FLAGS)
    log.debug("CPU bf16 support: %s", ", ".join(found) or "none")
    return bool(found)


def device_type(device: str | None) -> str:
    """``cuda``, ``cpu``... of a device string; None: ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device:
        return str(device).split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported(device: str | None) -> bool:
    """Whether ``device`` (None: the default one) computes bf16 natively."""
    kind = device_type(device)
    if kind == "cpu":
        return cpu_bf16_supported()
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def check_precision(precision: object, key: str = "encoding.precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ConfigError naming ``key``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{key} must be one of {', '.join(PRECISIONS)} (the autocast precision of encoder "
                          f"passes; auto: bf16 on CPUs that have it, fp16 on GPUs, else fp32), got "
                          f"{precision!r}")
    return str(precision)


def resolve_precision(precision: object, device: str | None, key: str = "encoding.precision", note: str = "") -> str:
    """The effective precision (fp32, bf16 or fp16) that ``precision`` runs at on ``device``.

    A precision the device cannot run is a ConfigError naming ``key`` and the fix (``note`` appended).
    """
    try:
        return _resolve(check_precision(precision, key), device_type(device), device, key)
    except ConfigError as err:
        if not note:
            raise
        raise ConfigError(f"{err}{note}") from None


def _resolve(requested: str, kind: str, device: str | None, key: str) -> str:
    if requested == "fp32":
        return "fp32"
    if kind == "cuda":
        if requested == "bf16" and not bf16_supported(device):
            raise ConfigError(f"{key}=bf16: this GPU has no bf16 support (torch.cuda.is_bf16_supported() is "
                              "False); use fp16, auto (fp16 on a GPU) or fp32")
        return "fp16" if requested == "auto" else requested
    if kind == "cpu":
        if requested == "fp16":
            raise ConfigError(f"{key}=fp16 runs on CUDA GPUs only (torch's fp16 on the CPU is no faster than "
                              f"fp32); on the CPU use {key}=auto (bf16 where the CPU has it), bf16 or fp32")
        if requested == "bf16" and not bf16_supported("cpu"):
            raise ConfigError(f"{key}=bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX; /proc/cpuinfo "
                              f"flags avx512_bf16 or amx_bf16), so torch would emulate it, slower than fp32; "
                              f"use {key}=auto (fp32 here) or fp32, or run on a CPU or GPU with bf16")
        return "bf16" if bf16_supported("cpu") else "fp32"
    if requested != "auto":
        raise ConfigError(f"{key}={requested}: reduced precision is supported on cpu and cuda only, not on "
                          f"{kind}; use {key}=auto or fp32")
    return "fp32"


def torch_dtype(effective: str):
    """The torch dtype of an effective precision (``torch.float32`` for fp32)."""
    import torch

    if effective not in EFFECTIVE:
        raise ConfigError(f"precision {effective!r} is not an effective precision; use one of {', '.join(EFFECTIVE)}")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[effective]


def autocast(effective: str, device: str | None) -> contextlib.AbstractContextManager:
    """A context in which ``device``'s forward passes run at ``effective`` (fp32: no autocast)."""
    if effective == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type(device), dtype=torch_dtype(effective))


def check_compute_dtype(compute_dtype: object, key: str) -> str:
    """A kernel compute dtype (:data:`COMPUTE_DTYPES`), else a ConfigError naming ``key``."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"{key} must be auto, float32 or bfloat16 (auto: bfloat16 where bf16_supported(device): "
                          f"AVX-512 BF16 / AMX CPUs and most GPUs, else float32), got {compute_dtype!r}")
    return str(compute_dtype)


def resolve_compute_dtype(compute_dtype: object, device: str | None, key: str) -> str:
    """The kernel dtype ``compute_dtype`` runs at on ``device``: ``auto`` is bfloat16 where the device
    computes bf16 natively (the same detection as ``encoding.precision=auto``), else float32."""
    if check_compute_dtype(compute_dtype, key) != "auto":
        return str(compute_dtype)
    return "bfloat16" if bf16_supported(device) else "float32"
