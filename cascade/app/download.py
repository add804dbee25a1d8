"""Download a BEIR dataset zip and unpack it atomically (users online; tests use a local URL)."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from cascade.core.errors import DataError

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def download_beir(name: str, dest: str | os.PathLike, url: str | None = None) -> Path:
    """Fetch BEIR dataset ``name`` into ``dest/name`` and return that folder.

    An existing complete folder is returned as is; a partial download never
    replaces it (the zip is unpacked in a temp dir, then renamed).
    """
    target = Path(dest).expanduser() / name
    if (target / "corpus.jsonl").is_file():
        return target
    url = url or BEIR_URL.format(name=name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}.download."))
    try:
        archive = tmp / f"{name}.zip"
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:
            raise DataError(
                f"could not download {url} ({err}); fetch the zip by hand, unzip it and set dataset.path"
            ) from None
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(tmp / "unzipped")
        except zipfile.BadZipFile as err:
            raise DataError(f"{url} is not a readable zip ({err}); is it a BEIR dataset zip?") from None
        found = next((p.parent for p in (tmp / "unzipped").rglob("corpus.jsonl")), None)
        if found is None:
            raise DataError(f"{url} holds no corpus.jsonl; is it a BEIR dataset zip?")
        os.rename(found, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
