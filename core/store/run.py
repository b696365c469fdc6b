"""One run's folder: its files, status and lock (and, on a shared store, its lease)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml

from ..config import YamlRefused, read_yaml
from ..errors import ConfigError, DataError, RunBusy, RunGone, RunNotFound, shown
from . import mirror
from .files import atomic_write_text, refuse_links
from .lease import Lease
from .secrets import redact_secrets, redact_text, remember_store, unredact

REMOTE_MARKER = ".remote"  # in a mirrored run folder: the run's URL
_held_locks: dict[str, list] = {}  # run folder -> [open lock file, depth, lease or None], for this process
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # fullmatch: no trailing newline


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, for JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def valid_id(run_id: str) -> bool:
    return bool(_RUN_ID.fullmatch(run_id)) and ".." not in run_id


def check_run_id(run_id: str) -> str:
    """A run id is one folder name: letters, digits, '.', '_', '-'; no separators, no '..' (it is joined into paths and URLs)."""
    if not isinstance(run_id, str) or not valid_id(run_id):
        raise RunNotFound(f"{shown(run_id)} is not a run id: use letters, digits, '.', '_' and '-' (no path separators or '..')")
    return run_id


class Run:
    """One run's folder (a local mirror when the store is a URL: see ``push``/``pull``)."""

    def __init__(self, path: Path, remote: str | None = None):
        self.path = Path(path)
        self.id = self.path.name
        marker = self.path / REMOTE_MARKER
        if remote is None and marker.exists():
            remember_store(mirror.store_root())  # the marker holds the run's URL without credentials: under this store, as configured
            remote, missing = unredact(marker.read_text().strip())
            if missing:
                raise ConfigError(
                    f"{self.path} belongs to the store {remote.rsplit('/runs/', 1)[0]}, whose credentials this process was not given; "
                    "set GENFORGE_HOME (or --store) to that store's URL"
                )
        self.remote = remote

    # -- shared storage -------------------------------------------------------------
    def push(self, *names: str, fence: bool = False) -> None:
        """Upload the named files (default: every file) to the run's URL; a no-op for local runs.

        Fenced: a process whose lease on the run was taken over pushes nothing more (``LeaseLost``);
        with ``fence`` the lease is read on the store first (a checkpoint is pushed so).
        """
        if not self.remote:
            return
        self.check_lease(strict=fence)
        mirror.push(self.path, self.remote, names)

    def pull(self, *names: str) -> None:
        """Download the run's files (default: all) from its URL into the local folder."""
        if not self.remote:
            return
        mirror.pull(self.path, self.remote, names)
        self._mark_remote()

    def check_lease(self, strict: bool = False) -> None:
        """Raise ``LeaseLost`` if this process held the run's lease and another machine took it (the engine's callbacks call this).

        ``strict`` reads the lease on the store rather than trusting the last renewal.
        """
        held = _held_locks.get(str(self.path.resolve()))
        if held is not None and held[2] is not None:
            held[2].check(strict)

    def _mark_remote(self) -> None:
        if self.remote:
            self.writable(REMOTE_MARKER).write_text(redact_secrets(self.remote))

    # -- locations ----------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def cache_root(self) -> Path:
        """The prepared-data cache of the store this run belongs to."""
        return self.path.parent.parent / "cache"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    # -- json/yaml helpers ----------------------------------------------------------
    def read_json(self, name: str, default: Any = None, shape: type | None = dict) -> Any:
        """A JSON file of the run (``default`` where it does not exist); a damaged one is a one-line ``DataError`` naming it.

        ``shape``: the type the file must hold (an object by default): valid JSON of another shape
        (``[]``, ``"x"``) is damage too, named as such, never an ``AttributeError`` further on.
        """
        p = self.path / name
        if not p.exists():
            return default
        try:
            value = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{p} is damaged ({exc}); restore it, or delete it to rebuild it by resuming the run") from None
        except IsADirectoryError:
            raise DataError(f"{p} is a folder where genforge keeps a file; remove it") from None
        except FileNotFoundError:  # deleted between the check and the read
            return default
        except OSError as exc:  # unreadable: another user's file, a lost mount
            raise DataError(f"{p} cannot be read ({exc.strerror or exc}); check its permissions") from None
        if shape is not None and not isinstance(value, shape):
            raise DataError(
                f"{p} is damaged (it holds {type(value).__name__} JSON, not an object); restore it, or delete it and resume the run"
            )
        return value

    @property
    def store_root(self) -> Path:
        """The local root of the store this run's folder is in (``<root>/runs/<id>``; a folder elsewhere: its parent)."""
        return self.path.parent.parent if self.path.parent.name == "runs" else self.path.parent

    def writable(self, name: str = "") -> Path:
        """``path/name``, to be written: refused (``DataError``) if the run folder, ``runs/`` or a folder inside the run on the
        way to ``name`` is a symbolic link; ``RunGone`` if the run folder is gone."""
        target = refuse_links(self.path / name, self.store_root) if name else refuse_links(self.path, self.store_root)
        if not self.path.is_dir():  # deleted while the run executed: never recreated as an orphan
            raise RunGone(f"the run folder {self.path} was deleted while the run executed; it stopped (nothing was recreated)")
        return target

    def write_json(self, name: str, obj: Any) -> Path:
        """Written whole; a NaN or infinite number is written as null (JSON has neither)."""
        p = self.writable(name)
        atomic_write_text(p, json.dumps(finite(obj), indent=2, default=str, allow_nan=False) + "\n")
        self.push(name)
        return p

    @property
    def spec(self) -> dict[str, Any]:
        """The resolved spec; a missing, damaged or wrong-shaped spec.yaml is a one-line ``DataError`` naming it."""
        p = self.path / "spec.yaml"
        try:
            spec = read_yaml(p.read_text())  # no anchors or aliases: a spec edited into a "billion laughs" is refused, not expanded
        except FileNotFoundError:
            raise DataError(f"{p} is missing: the run's spec is gone; restore it (or delete the run folder)") from None
        except YamlRefused as exc:
            raise DataError(f"{p} is damaged ({exc}); restore it (or delete the run folder)") from None
        except (UnicodeDecodeError, IsADirectoryError) as exc:
            raise DataError(f"{p} is damaged ({type(exc).__name__}); restore it (or delete the run folder)") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("generator"), str):
            raise DataError(
                f"{p} is damaged (not a spec: a mapping with a generator and its sections); restore it (or delete the run folder)"
            )
        return spec

    def write_spec(self, generator: str, config: dict[str, Any]) -> None:
        """spec.yaml: URLs recorded without credentials or query strings (see ``redact_secrets``)."""
        spec = redact_secrets({"generator": generator, **config})
        atomic_write_text(self.writable("spec.yaml"), yaml.safe_dump(spec, sort_keys=False))
        self.push("spec.yaml")

    @property
    def generator(self) -> str:
        return self.spec["generator"]

    @property
    def status(self) -> dict[str, Any]:
        """``status.json``, as it stands. A damaged file reads ``damaged`` (naming it); a ``running`` run whose holder is gone
        reads ``died`` (``recorded``: what the file says)."""
        try:
            status = self.read_json("status.json", {"state": "created"})
        except DataError as exc:  # one damaged run must not hide the others in `genforge runs`
            return {"state": "damaged", "error": str(exc)}
        if status.get("state") == "running":
            gone = self.holder_gone()
            if gone:
                return {**status, "state": "died", "recorded": "running", "error": f"{gone}; `genforge resume {self.id}` continues it"}
        return status

    def holder_gone(self) -> str | None:
        """Why the process that holds this run is known to be gone, or None when it runs (or this machine cannot tell).

        The run's lock names its holder (``... by pid N on HOST since ...``): on this host, a pid that
        no longer exists; on a shared store, a lease that lapsed or was released. An empty lock
        (released) is no evidence: a step-by-step run is ``running`` between its steps with no holder.
        """
        if str(self.path.resolve()) in _held_locks:
            return None
        try:
            holder = (self.path / ".lock").read_text().strip()
        except (FileNotFoundError, IsADirectoryError):
            holder = ""
        except OSError:
            return None
        if self.remote:
            try:
                _, record = Lease(self.id, self.remote, "").newest()
            except Exception:  # the store cannot be reached: no verdict
                return None
            if record is None or record.get("released") or record.get("expires", 0) < dt.datetime.now(dt.UTC).timestamp():
                return f"its holder ({record.get('holder') if record else 'unknown'}) stopped renewing its lease on the store"
            return None
        found = re.search(r"by pid (\d+) on (\S+) since", holder)
        if not holder:
            # released: between the steps of a step-by-step run (a flow's tasks) no process holds it, and that is
            # no evidence of a death; only a holder recorded and gone is
            return None
        if found and found.group(2) == socket.gethostname():
            try:
                os.kill(int(found.group(1)), 0)
            except ProcessLookupError:
                return f"its process (pid {found.group(1)} on {found.group(2)}) is gone: killed, or out of memory"
            except PermissionError:
                return None  # alive, another user's
        return None

    def set_status(self, state: str, **extra: Any) -> None:
        self.writable("status.json")
        try:
            status = self.read_json("status.json", {"state": "created"})
        except DataError:  # rewritten whole below
            status = {}
        changed = status.get("state") != state
        if "error" in extra:  # an error's text may quote a URL with its token: recorded redacted
            extra["error"] = redact_text(str(extra["error"]))
        status.update(state=state, updated=dt.datetime.now(dt.UTC).isoformat(), **extra)
        status.pop("recorded", None)
        if state not in ("failed", "interrupted"):
            status.pop("error", None)
        atomic_write_text(self.path / "status.json", json.dumps(finite(status), indent=2, default=str) + "\n")
        # Progress updates reach a remote store at most every 10 s; state changes at once.
        now = dt.datetime.now().timestamp()
        if changed or now - getattr(self, "_status_pushed", 0.0) > 10:
            self.push("status.json")
            self._status_pushed = now

    def metrics(self) -> dict[str, Any]:
        return self.read_json("metrics.json", {})

    def report_progress(self, stage: str, done: int, total: int | None) -> None:
        """A generator's step says how far it is (``run.report_progress("sample", 5000, 200000)``).

        The host relays it to listeners (``genforge_step_progress``: the CLI's bar, the Prefect log) and status.json.
        """
        listener = getattr(self, "progress_listener", None)
        if listener is not None:
            listener(stage, done, total)

    @contextlib.contextmanager
    def lock(self, what: str):
        """Hold the run's lock while ``what`` runs: a second process that tries gets one clear line, not a second run.

        An OS lock (``flock``) on ``.lock`` in the run folder, released when the holder exits
        however it exits; re-entrant within one process (the pipeline's tasks run in the
        flow's process). On a URL store each machine locks its own mirror, so the run also
        holds a lease on the store (``.lease/`` in the run's folder there, see ``Lease``):
        another machine is refused while it is fresh, and a holder whose lease is taken over
        stops at its next progress event or checkpoint (``LeaseLost``).
        """
        import fcntl

        key = str(self.path.resolve())
        held = _held_locks.get(key)
        if held is not None:  # this process holds it already
            held[1] += 1
            try:
                yield
            finally:
                held[1] -= 1
            return
        refuse_links(self.path, self.store_root)  # before the folder or its lock file is made
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            fh = open(self.writable(".lock"), "a+")
        except IsADirectoryError:
            raise DataError(f"{self.path / '.lock'} is a folder where genforge keeps the run's lock file; remove it") from None
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise RunBusy(
                    f"run {self.id} is busy: {holder}; wait for it to finish, or stop that process and `genforge resume` it"
                ) from None
            holder = f"{what} by pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now().isoformat(timespec='seconds')}"
            lease = Lease(self.id, self.remote, holder) if self.remote else None
            if lease is not None:
                lease.acquire()
            fh.seek(0)
            fh.truncate()
            fh.write(holder)
            fh.flush()
            _held_locks[key] = [fh, 1, lease]
            try:
                yield
            finally:
                del _held_locks[key]
                fh.seek(0)
                fh.truncate()  # no stale holder left to read once released
                if lease is not None:
                    lease.release()
        finally:
            fh.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"
