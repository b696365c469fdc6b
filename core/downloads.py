"""Data a plugin fetches: an http(s) URL downloaded once into a cache, a local path as it is."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.request
from pathlib import Path

from . import store
from .errors import DataError
from .store import redact_text, redact_url

MAX_DOWNLOAD_MB = float(os.environ.get("GENFORGE_MAX_DOWNLOAD_MB", "4096"))


def fetch(path_or_url: str, cache: Path, max_mb: float | None = None) -> Path:
    """A local path as is; an http(s) URL downloaded once into ``cache``.

    Cached under a hash of the whole URL (two URLs that end in the same file name are two
    files), streamed to a temporary file and renamed when complete, refused past ``max_mb``
    (``$GENFORGE_MAX_DOWNLOAD_MB``, default 4096); its size and SHA-256 are recorded beside it.
    """
    if not path_or_url.startswith(("http://", "https://")):
        return Path(path_or_url).expanduser()
    limit = int((max_mb if max_mb is not None else MAX_DOWNLOAD_MB) * 2**20)
    key = hashlib.sha256(path_or_url.encode()).hexdigest()[:16]
    # the file's name from the path alone: a query, a fragment or ;parameters may hold a token (never in a file name)
    name = re.split(r"[?#;]", path_or_url, maxsplit=1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    target = cache / f"{key}-{name}"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = store.temp_file(target)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(path_or_url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise DataError(
                        f"download of {redact_url(path_or_url)} passed {limit / 2**20:.0f} MB; raise GENFORGE_MAX_DOWNLOAD_MB to allow it"
                    )
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # network, a cut-off body, a malformed URL
        raise DataError(f"cannot fetch {redact_url(path_or_url)}: {type(exc).__name__}: {redact_text(str(exc))}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    store.atomic_write_text(
        target.with_name(target.name + ".json"), json.dumps({"url": redact_url(path_or_url), "bytes": size, "sha256": digest.hexdigest()})
    )
    return target
