"""Files the store writes whole: atomic writes, the prepared-data cache, JSON-lines logs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def prepared_once(out: Path, write: Callable[[Path], dict], stats_name: str = "stats.json") -> tuple[dict, str]:
    """A prepared-data folder ``out``, written by ``write(folder) -> stats`` unless it exists: (stats, "hit" or "miss").

    ``write`` fills a temporary folder beside ``out`` that is renamed into place when complete,
    so ``out`` exists only whole: a bad file or a full disk leaves nothing behind. Processes of
    one machine that prepare the same data at once take turns (a lock file beside ``out``): the
    first writes it, the others find it. ``write`` must also write ``stats_name`` (the marker of a
    complete folder).
    """
    import fcntl

    out = Path(out)
    if (out / stats_name).exists():
        return json.loads((out / stats_name).read_text()), "hit"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, however this process ends
        if (out / stats_name).exists():  # another process prepared it while this one waited
            return json.loads((out / stats_name).read_text()), "hit"
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            stats = write(tmp)
            tmp.replace(out)
            return stats, "miss"
        except OSError:
            if not (out / stats_name).exists():
                raise
            return json.loads((out / stats_name).read_text()), "hit"  # another machine (a shared cache) was first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed


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
