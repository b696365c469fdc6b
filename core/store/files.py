"""Files the store writes whole: atomic writes, the prepared-data cache, JSON-lines logs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError


def refuse_links(path: Path, root: Path | None = None) -> Path:
    """``path``, unless it or a folder on the way to it from ``root`` (not ``root`` itself) is a symbolic link: then a one-line ``DataError`` naming the link.

    The store writes only inside itself: a run, cache or model folder that is a link (``runs/x ->
    /etc``, ``cache -> /mnt/elsewhere``) would have metrics, status files and locks land wherever it
    points. The check is by name, not resolved, so ``root`` itself may be a link (``~/.genforge ->
    /data/genforge``). ``root`` None, or not above ``path``: ``path`` and its parent folder are checked.
    """
    path = Path(path)
    try:
        parts = path.relative_to(root).parts if root is not None else None
    except ValueError:
        parts = None
    if parts is None:
        root, parts = path.parent.parent, path.parts[-2:]
    here = Path(root)
    for part in parts:
        here = here / part
        if here.is_symlink():
            try:
                target = os.readlink(here)
            except OSError:
                target = "?"
            raise DataError(
                f"{here} is a symbolic link (to {target}): genforge writes only inside its store, never through a link; "
                "remove the link, or point GENFORGE_HOME (--store) at the store it belongs to"
            )
    return path


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux's /proc), else set and put back at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # for that instant a file another thread creates is private (0o077), never more open than asked
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def temp_file(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` (``.name.XXXX.tmp``), open, with the permissions an ordinary new file gets: 0o666 less the umask.

    ``tempfile.mkstemp`` makes it 0o600 whatever the umask, and ``os.replace`` keeps that: on a
    store a team shares (umask 0o002 or 0o022) no one else could read a run's files.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never half-written; its mode follows the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


MANIFEST = ".manifest.json"  # in a prepared folder: each file's size and SHA-256, written before the folder is renamed into place


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> dict[str, dict]:
    """Record every file under ``folder`` (its size and SHA-256) in ``folder/.manifest.json``."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    atomic_write_text(folder / MANIFEST, json.dumps({"files": files}, indent=1))
    return files


def check_manifest(folder: Path) -> str | None:
    """None when every file ``folder``'s manifest lists is there with its size and SHA-256; else what is wrong, in words."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return "it has no manifest of its files"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "its manifest is damaged"
    for name, want in listed.items():
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != want.get("size") or file_digest(p) != want.get("sha256"):
            return f"{name} changed since it was prepared"
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    extra = [name for name in extra if name not in listed]
    if extra:  # a generator that reads what a folder holds (every *.npz) would read it as its own
        return f"{extra[0]} was added since it was prepared" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    return None


def prepared_once(out: Path, write: Callable[[Path], dict], stats_name: str = "stats.json") -> tuple[dict, str]:
    """A prepared-data folder ``out``, written by ``write(folder) -> stats`` unless it exists whole: (stats, cache).

    ``cache`` is "hit" (found, every file as it was written), "miss" (written now) or "rebuilt
    (<why>)" (found but incomplete, or a file in it changed or went missing: never used, written
    again). ``write`` fills a temporary folder beside ``out``, which gets a manifest of its files
    (size, SHA-256) and is renamed into place when complete, so ``out`` exists only whole: a bad
    file or a full disk leaves nothing behind. Processes of one machine that prepare the same data
    at once take turns (a lock file beside ``out``): the first writes it, the others find it.
    ``write`` must also write ``stats_name`` (the marker of a complete folder).
    """
    import fcntl

    from .mirror import home

    out = refuse_links(Path(out), home())  # before anything is read or written there
    stats = _verified(out, stats_name)
    if stats is not None:
        return stats, "hit"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, however this process ends
        stats = _verified(out, stats_name)
        if stats is not None:  # another process prepared it while this one waited
            return stats, "hit"
        cache = "miss"
        if out.exists():  # there, but not whole or not as written: set aside, never used
            why = check_manifest(out) if (out / stats_name).exists() else f"{stats_name} is missing (an interrupted preparation)"
            cache = f"rebuilt ({why})"
            aside = out.with_name(f".{out.name}.damaged-{time.time_ns()}")
            out.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0o700 would keep a shared cache from the team
            stats = write(tmp)
            write_manifest(tmp)
            tmp.replace(out)
            return stats, cache
        except OSError:
            if _verified(out, stats_name) is None:
                raise
            return json.loads((out / stats_name).read_text()), "hit"  # another machine (a shared cache) was first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed


def _verified(out: Path, stats_name: str) -> dict | None:
    """The stats of a prepared folder that is complete and whose files match its manifest, else None."""
    if not (out / stats_name).exists() or check_manifest(out) is not None:
        return None
    try:
        stats = json.loads((out / stats_name).read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return stats if isinstance(stats, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON lines of a log; a partial or damaged line (a crash mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
