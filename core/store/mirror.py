"""A run store at a URL: the store root, each machine's local mirror, pushing and pulling files, atomic creates.

When the root is a URL (``s3://bucket/genforge``, ``gs://...``, any fsspec protocol,
``file://`` too), each machine works in a local mirror of the run folder
(``$GENFORGE_MIRROR``, default ``~/.cache/genforge/mirror/<hash of the URL>``) and every
file a step writes is pushed to the URL as soon as it is complete. Credentials come from
the environment (e.g. ``AWS_ACCESS_KEY_ID`` for s3fs) or from ``set_storage_options``
(the Prefect flows fill it from a Secret block); never from a spec.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from .files import temp_file
from .secrets import is_url, redact_url

SMALL = 1 << 20  # files under 1 MiB are always pushed (they change in place: status, metrics)
_storage_options: dict[str, Any] = {}
# Protocols whose fsspec filesystem writes ``pipe_file(mode="create")`` as one conditional request:
# s3fs sends ``If-None-Match: *`` (AWS S3), gcsfs ``ifGenerationMatch=0``. A local path uses link(2).
ATOMIC_CREATE = {"s3", "s3a", "gs", "gcs"}
_warned: set[str] = set()


def store_root() -> str:
    """The configured root as given: a local path or a URL."""
    return os.environ.get("GENFORGE_HOME") or str(Path.home() / ".genforge")


def mirror_dir(url: str) -> Path:
    """The local working copy of a remote store."""
    base = Path(os.environ.get("GENFORGE_MIRROR") or Path.home() / ".cache" / "genforge" / "mirror").expanduser()
    return base / hashlib.sha1(url.encode()).hexdigest()[:16]


def home() -> Path:
    """The local root: ``$GENFORGE_HOME``, or its mirror when that is a URL."""
    root = store_root()
    return mirror_dir(root.rstrip("/")) if is_url(root) else Path(root).expanduser()


def set_storage_options(options: dict[str, Any]) -> None:
    """Options (credentials, endpoint) for the remote store's fsspec filesystem."""
    _storage_options.clear()
    _storage_options.update(options)


def filesystem(url: str):
    import fsspec

    fs, _ = fsspec.core.url_to_fs(url, **_storage_options)
    return fs


def strip(fs, url: str) -> str:
    return fs._strip_protocol(url).rstrip("/")


def relative(path: str, base: str) -> str:
    return path[len(base) :].lstrip("/")


def find(fs, base: str) -> dict[str, dict]:
    return fs.find(base, detail=True) if fs.exists(base) else {}


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def atomic_create_supported(fs) -> bool:
    """Whether ``create_if_absent`` is one atomic operation on this filesystem (else check-then-write)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return _is_local(fs) or any(p in ATOMIC_CREATE for p in protocols)


def create_if_absent(fs, path: str, data: bytes) -> bool:
    """Write ``path`` whole unless it exists: True when this call created it, False when it existed.

    Atomic where the store has the operation: a local (or NFS) path writes a temporary file and
    hard-links it into place (``link`` fails if the name exists), S3 and GCS send a conditional
    write. Elsewhere it checks, then writes (see ``atomic_create_supported``).
    """
    if _is_local(fs):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(target)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)
    if atomic_create_supported(fs):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True
    if fs.exists(path):
        return False
    fs.pipe_file(path, data)
    return True


def warn_without_atomic_create(fs, url: str) -> None:
    """One line per store and process where the lease cannot be exact."""
    if atomic_create_supported(fs) or url in _warned:
        return
    _warned.add(url)
    logging.getLogger("genforge").warning(
        "the run store %s (%s) offers no atomic create-if-absent: its run lease is checked, then written, so two machines "
        "that start the same run within a moment of each other could both take it (S3, GCS and local or NFS paths are exact)",
        redact_url(url),
        fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0],
    )


def push(path: Path, remote: str | None, names: tuple[str, ...] = ()) -> None:
    """Upload the named files of a run folder (default: every file) to the run's URL; a no-op for local runs.

    A file is sent when the URL lacks it, its size differs, or it is small (small files such
    as status.json change in place). Checkpoints pruned locally are deleted remotely.
    """
    if not remote:
        return
    fs = filesystem(remote)
    base = strip(fs, remote)
    there = {relative(p, base): info.get("size") for p, info in find(fs, base).items()}
    local = [path / n for n in names] if names else [p for p in path.rglob("*") if p.is_file()]
    for p in local:
        if not p.exists() or p.name.startswith("."):  # temp files and the marker stay local
            continue
        rel = p.relative_to(path).as_posix()
        size = p.stat().st_size
        if there.get(rel) != size or size < SMALL:
            fs.makedirs(f"{base}/{Path(rel).parent.as_posix()}".rstrip("/."), exist_ok=True)
            fs.put_file(str(p), f"{base}/{rel}")
    if not names:
        for rel in there:
            if rel.startswith("checkpoints/") and not (path / rel).exists():
                fs.rm_file(f"{base}/{rel}")


def pull(path: Path, remote: str | None, names: tuple[str, ...] = ()) -> None:
    """Download a run's files (default: all) from its URL into the local folder."""
    if not remote:
        return
    fs = filesystem(remote)
    base = strip(fs, remote)
    path.mkdir(parents=True, exist_ok=True)
    for p, info in find(fs, base).items():
        rel = relative(p, base)
        if (names and rel not in names) or rel.startswith("."):  # the lease and other markers stay where they are
            continue
        dest = path / rel
        if dest.exists() and dest.stat().st_size == info.get("size") and info.get("size", 0) >= SMALL:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(dest)
        os.close(fd)
        try:
            fs.get_file(p, tmp)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)


def token() -> str:
    return secrets.token_hex(8)
