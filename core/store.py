"""The run store: one folder per run, holding everything needed to reproduce or audit it.

    <root>/runs/<run_id>/
        spec.yaml          the resolved spec (generator + every section, defaults filled in)
        versions.json      genforge, its plugins, torch, ...
        data.json          the prepared data's fingerprint, path and counts (rows kept/rejected), generator details
        checkpoints/       step-00000100.pt ...   (written atomically; loaded with weights_only)
        checkpoint.json    the weights the sampler uses (the generator's file, e.g. model.safetensors)
        training.json      steps, parameters, seconds, how training stopped, resumed from, throughput
        samples/           the samples, in their kind's format
        samples.json       kind, path, count, seconds, samples per second, generator details
        logs/train.jsonl   one line per progress event
        metrics.json       every metric, by evaluator
        figures/           PNG files, one folder per evaluator (and training/, samples/)
        report.md          the human-readable report
        status.json        state (created, running, finished, failed), step, error

The root is ``$GENFORGE_HOME`` (default ``~/.genforge``); prepared data is cached under
``<root>/cache/<fingerprint>`` so runs on the same data share it.

Shared storage: when the root is a URL (``s3://bucket/genforge``, ``gs://...``, any fsspec
protocol, ``file://`` too), each machine works in a local mirror of the run folder
(``$GENFORGE_MIRROR``, default ``~/.cache/genforge/mirror/<hash of the URL>``) and every
file a step writes is pushed to the URL as soon as it is complete: each checkpoint when it
is saved, the samples, metrics and report at the end of their step. A run started on one
worker can therefore be resumed on another: ``RunStore(url).get(run_id)`` pulls it first.
Prepared data stays in the local cache (it is rebuilt from its source where missing).
Credentials come from the environment (e.g. ``AWS_ACCESS_KEY_ID`` for s3fs) or from
``set_storage_options`` (the Prefect flows fill it from a Secret block); never from a spec.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError, DataError, LeaseLost, RunBusy, RunNotFound


_held_locks: dict[str, list] = {}  # run folder -> [open lock file, depth], for this process
_REMOTE_MARKER = ".remote"  # in a mirrored run folder: the run's URL
_SMALL = 1 << 20  # files under 1 MiB are always pushed (they change in place: status, metrics)
_storage_options: dict[str, Any] = {}
_unredacted: dict[str, str] = {}  # redacted URL -> the URL as given; this process's memory only, never written
_stores: dict[str, str] = {}  # the same for run stores' roots: a run's URL under one is restored by its prefix
LEASE_SECONDS = 60.0  # a shared store's run lease: renewed every third of it while held ($GENFORGE_LEASE_SECONDS)


def is_url(root: str | Path) -> bool:
    return "://" in str(root)


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


def prepared_once(out: Path, write: Callable[[Path], dict], stats_name: str = "stats.json") -> tuple[dict, str]:
    """A prepared-data folder ``out``, written by ``write(folder) -> stats`` unless it exists: (stats, "hit" or "miss").

    ``write`` fills a temporary folder beside ``out`` that is renamed into place when complete,
    so ``out`` exists only whole: a bad file or a full disk leaves nothing behind, and when
    another process prepares the same data first, theirs is used. ``write`` must also write
    ``stats_name`` (the marker of a complete folder).
    """
    out = Path(out)
    if (out / stats_name).exists():
        return json.loads((out / stats_name).read_text()), "hit"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        stats = write(tmp)
        tmp.replace(out)
        return stats, "miss"
    except OSError:
        if not (out / stats_name).exists():
            raise
        return json.loads((out / stats_name).read_text()), "hit"  # another process was first
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


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class Run:
    """One run's folder (a local mirror when the store is a URL: see ``push``/``pull``)."""

    def __init__(self, path: Path, remote: str | None = None):
        self.path = Path(path)
        self.id = self.path.name
        marker = self.path / _REMOTE_MARKER
        if remote is None and marker.exists():
            remember_store(store_root())  # the marker holds the run's URL without credentials: under this store, as configured
            remote, missing = unredact(marker.read_text().strip())
            if missing:
                raise ConfigError(
                    f"{self.path} belongs to the store {remote.rsplit('/runs/', 1)[0]}, whose credentials this process was not given; "
                    "set GENFORGE_HOME (or --store) to that store's URL"
                )
        self.remote = remote

    # -- shared storage -------------------------------------------------------------
    def push(self, *names: str) -> None:
        """Upload the named files (default: every file) to the run's URL; a no-op for local runs.

        A file is sent when the URL lacks it, its size differs, or it is small (small files such
        as status.json change in place). Checkpoints pruned locally are deleted remotely.
        """
        if not self.remote:
            return
        fs = filesystem(self.remote)
        base = _strip(fs, self.remote)
        remote = {_rel(p, base): info.get("size") for p, info in _find(fs, base).items()}
        local = [self.path / n for n in names] if names else [p for p in self.path.rglob("*") if p.is_file()]
        for p in local:
            if not p.exists() or p.name.startswith("."):  # temp files and the marker stay local
                continue
            rel = p.relative_to(self.path).as_posix()
            size = p.stat().st_size
            if remote.get(rel) != size or size < _SMALL:
                fs.makedirs(f"{base}/{Path(rel).parent.as_posix()}".rstrip("/."), exist_ok=True)
                fs.put_file(str(p), f"{base}/{rel}")
        if not names:
            for rel in remote:
                if rel.startswith("checkpoints/") and not (self.path / rel).exists():
                    fs.rm_file(f"{base}/{rel}")

    def pull(self, *names: str) -> None:
        """Download the run's files (default: all) from its URL into the local folder."""
        if not self.remote:
            return
        fs = filesystem(self.remote)
        base = _strip(fs, self.remote)
        self.path.mkdir(parents=True, exist_ok=True)
        self._mark_remote()
        for p, info in _find(fs, base).items():
            rel = _rel(p, base)
            if (names and rel not in names) or rel.startswith("."):  # the lease and other markers stay where they are
                continue
            dest = self.path / rel
            if dest.exists() and dest.stat().st_size == info.get("size") and info.get("size", 0) >= _SMALL:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            os.close(fd)
            try:
                fs.get_file(p, tmp)
                os.replace(tmp, dest)
            finally:
                Path(tmp).unlink(missing_ok=True)

    def _mark_remote(self) -> None:
        if self.remote:
            (self.path / _REMOTE_MARKER).write_text(redact_secrets(self.remote))

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
    def read_json(self, name: str, default: Any = None) -> Any:
        """A JSON file of the run (``default`` where it does not exist); a damaged one is a one-line ``DataError`` naming it."""
        p = self.path / name
        if not p.exists():
            return default
        try:
            return json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{p} is damaged ({exc}); restore it, or delete it to rebuild it by resuming the run") from None

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        atomic_write_text(p, json.dumps(obj, indent=2, default=str) + "\n")
        self.push(name)
        return p

    @property
    def spec(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "spec.yaml").read_text())

    def write_spec(self, generator: str, config: dict[str, Any]) -> None:
        """spec.yaml: URLs recorded without credentials or query strings (see ``redact_secrets``)."""
        spec = redact_secrets({"generator": generator, **config})
        atomic_write_text(self.path / "spec.yaml", yaml.safe_dump(spec, sort_keys=False))
        self.push("spec.yaml")

    @property
    def generator(self) -> str:
        return self.spec["generator"]

    @property
    def status(self) -> dict[str, Any]:
        try:
            return self.read_json("status.json", {"state": "created"})
        except DataError as exc:  # one damaged run must not hide the others in `genforge runs`
            return {"state": "unreadable", "error": str(exc)}

    def set_status(self, state: str, **extra: Any) -> None:
        status = self.status
        changed = status.get("state") != state
        status.update(state=state, updated=dt.datetime.now(dt.timezone.utc).isoformat(), **extra)
        if state not in ("failed", "interrupted"):
            status.pop("error", None)
        atomic_write_text(self.path / "status.json", json.dumps(status, indent=2, default=str) + "\n")
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
        holds a lease on the store (``.lease.json`` in the run's folder there, see ``Lease``):
        another machine is refused while it is fresh.
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
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise RunBusy(f"run {self.id} is busy: {holder}; wait for it to finish, or stop that process and `genforge resume` it") from None
            holder = f"{what} by pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now().isoformat(timespec='seconds')}"
            lease = Lease(self, holder) if self.remote else None
            if lease is not None:
                lease.acquire()
            fh.seek(0)
            fh.truncate()
            fh.write(holder)
            fh.flush()
            _held_locks[key] = [fh, 1]
            try:
                yield
            except LeaseLost:  # raised in this thread by the lease's renewal thread: say why
                raise LeaseLost(
                    f"run {self.id} was taken over by another machine ({lease.lost if lease else 'unknown'}) after this one missed "
                    "renewing its lease; this machine stopped training it"
                ) from None
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


class Lease:
    """A run's claim on a shared store, so that two machines never train one run.

    ``.lease.json`` in the run's folder on the store holds the holder, a random token and an
    expiry ``GENFORGE_LEASE_SECONDS`` (default 60) ahead; a thread renews it every third of
    that while the run executes, and release deletes it. Taking it: refused while another
    holder's lease is unexpired; else write ours, wait a moment and read it back (object
    stores have no compare-and-swap: of two machines writing at once, the one whose token
    is not read back gives way). A machine that dies stops renewing, so its lease lapses
    within a minute: before Prefect's crash automation (90 s without a heartbeat) restarts
    the run elsewhere. A machine that stalls past its lease and finds it taken stops its
    own run (``LeaseLost``, raised in the holding thread; its status is left to the new holder). Leases are written whole (beside, then moved). Expiry compares
    wall clocks: keep the machines' clocks in sync (NTP).
    """

    SETTLE = 0.5  # seconds between writing a lease and reading it back

    def __init__(self, run: Run, holder: str):
        import threading

        self.run = run
        self.fs = filesystem(run.remote)
        self.url = f"{_strip(self.fs, run.remote)}/.lease.json"
        self.holder = holder
        self.token = secrets.token_hex(8)
        self.seconds = max(3.0, float(os.environ.get("GENFORGE_LEASE_SECONDS") or LEASE_SECONDS))
        self.lost: str | None = None  # who took the lease from this holder, when that happens
        self._stop = threading.Event()
        self._thread: Any = None
        self.holder_thread = threading.get_ident()  # the thread that runs the locked work

    def _read(self) -> dict | None:
        try:
            with self.fs.open(self.url, "rb") as fh:
                lease = json.loads(fh.read())
            return lease if isinstance(lease, dict) else None
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):  # a half-written lease from a crashed writer: no claim
            return None

    def _write(self) -> None:
        """Written beside it, then moved over it: a reader never sees half a lease (an object store's put is whole anyway)."""
        now = dt.datetime.now(dt.timezone.utc).timestamp()
        lease = {"holder": self.holder, "token": self.token, "renewed": now, "expires": now + self.seconds}
        folder = self.url.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.lease.{self.token}.tmp"
        self.fs.pipe_file(tmp, json.dumps(lease).encode())
        self.fs.mv(tmp, self.url)

    def _refuse(self, lease: dict) -> RunBusy:
        left = lease.get("expires", 0) - dt.datetime.now(dt.timezone.utc).timestamp()
        return RunBusy(
            f"run {self.run.id} is busy on another machine: {lease.get('holder', 'unknown holder')} "
            f"(its lease on the shared store lapses in {max(0, left):.0f} s unless renewed); wait for it to finish, "
            "or stop it and `genforge resume` the run"
        )

    def acquire(self) -> None:
        import threading
        import time

        lease = self._read()
        if lease and lease.get("token") != self.token and lease.get("expires", 0) > dt.datetime.now(dt.timezone.utc).timestamp():
            raise self._refuse(lease)
        self._write()
        time.sleep(self.SETTLE)
        lease = self._read()
        if not lease or lease.get("token") != self.token:
            raise self._refuse(lease or {})
        self._thread = threading.Thread(target=self._renew, name=f"genforge-lease-{self.run.id}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        import ctypes

        while not self._stop.wait(self.seconds / 3):
            try:
                lease = self._read()
                if lease and lease.get("token") != self.token:
                    # This machine stalled past its lease and another took the run over: stop here, like Ctrl-C
                    # (the run is marked interrupted), rather than train it twice.
                    self.lost = str(lease.get("holder"))
                    logging.getLogger("genforge").error("run %s: another machine took the lease (%s); stopping this one", self.run.id, self.lost)
                    # LeaseLost raised in the holder's thread at its next Python instruction (a signal could be ignored there)
                    if not self._stop.is_set():  # (not once the holder is releasing it anyway)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.holder_thread), ctypes.py_object(LeaseLost))
                    return
                self._write()
            except Exception as exc:  # the store unreachable for a moment: try again at the next renewal
                logging.getLogger("genforge").warning("run %s: lease not renewed (%s)", self.run.id, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)  # a renewal in flight finishes before the lease is deleted
        try:
            lease = self._read()
            if lease and lease.get("token") == self.token:
                self.fs.rm_file(self.url)
        except Exception as exc:  # it lapses by itself; the run's own outcome is what matters here
            logging.getLogger("genforge").warning("run %s: lease not released (%s); it lapses within %.0f s", self.run.id, exc, self.seconds)


class RunStore:
    """The folder of all runs (and the prepared-data cache) under a root."""

    def __init__(self, root: str | Path | None = None):
        root = str(root) if root else store_root()
        self.url = root.rstrip("/") if is_url(root) else None
        if self.url:
            remember_store(self.url)  # so a run's marker, which holds it redacted, finds it again
        self.root = mirror_dir(self.url) if self.url else Path(root).expanduser()
        self.runs = self.root / "runs"
        self.cache = self.root / "cache"

    def __str__(self) -> str:  # what messages show: no credentials of a store URL
        return redact_url(self.url) if self.url else str(self.root)

    def _run(self, run_id: str) -> Run:
        check_run_id(run_id)
        return Run(self.runs / run_id, f"{self.url}/runs/{run_id}" if self.url else None)

    def create(self, generator: str, run_id: str | None = None) -> Run:
        """A new run folder; ``run_id`` (e.g. derived from an orchestrator's run) must be new."""
        if run_id is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_id = f"{stamp}-{generator}-{secrets.token_hex(3)}"
        run = self._run(run_id)
        run.path.mkdir(parents=True)
        run._mark_remote()
        run.set_status("created", created=dt.datetime.now(dt.timezone.utc).isoformat())
        return run

    def exists(self, run_id: str) -> bool:
        if self.url:
            fs = filesystem(self.url)
            return fs.exists(f"{_strip(fs, self.url)}/runs/{run_id}/spec.yaml")
        return (self.runs / run_id / "spec.yaml").exists()

    def all(self) -> list[Run]:
        if self.url:  # fetch what a listing needs: each run's spec and status
            fs = filesystem(self.url)
            base = f"{_strip(fs, self.url)}/runs"
            ids = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)] if fs.exists(base) else []
            for run_id in ids:
                if _valid_id(run_id):
                    self._run(run_id).pull("spec.yaml", "status.json")
        if not self.runs.exists():
            return []
        runs = [self._run(p.name) for p in self.runs.iterdir() if _valid_id(p.name) and (p / "spec.yaml").exists()]
        return sorted(runs, key=lambda r: (r.status.get("created", ""), r.id))

    def get(self, run_id: str) -> Run:
        """A run by id, by ``latest``, by a unique prefix, or by its folder's path (a folder of this store's ``runs/``)."""
        if run_id == "latest":
            runs = self.all()
            if not runs:
                raise RunNotFound(f"no runs under {self}")
            runs[-1].pull()
            return runs[-1]
        if "/" in run_id or os.sep in run_id:  # a folder: only one of this store's runs
            as_path = Path(run_id).expanduser().resolve()
            if as_path.parent != self.runs.resolve() or not (as_path / "spec.yaml").exists():
                raise RunNotFound(f"{run_id!r} is not a run folder of this store ({self.runs}); give a run id, or --store for another store")
            run_id = as_path.name
        check_run_id(run_id)
        if self.exists(run_id):
            run = self._run(run_id)
            run.pull()
            return run
        matches = [r for r in self.all() if r.id.startswith(run_id)]
        if len(matches) == 1:
            matches[0].pull()
            return matches[0]
        if matches:
            raise RunNotFound(f"run id {run_id!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")
        raise RunNotFound(f"no run {run_id!r} under {self.runs} (try `genforge show latest`)")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # fullmatch: no trailing newline


def redact_url(url: str) -> str:
    """A URL fit to print or record: user:password and the query string (tokens of presigned links) replaced by ``<redacted>``.

    Each part of a chained fsspec URL (``simplecache::s3://...``) is redacted; a URL without
    either is returned as given.
    """
    import urllib.parse

    url = str(url)
    if "://" not in url:  # a local path
        return url
    chained = re.split(r"::(?=[A-Za-z][A-Za-z0-9+.-]*(?:::|://|$))", url)  # fsspec chains; not IPv6's [::1]
    if len(chained) > 1:
        return "::".join(redact_url(part) for part in chained)
    try:
        parts = urllib.parse.urlsplit(url)
        secret = parts.username or parts.password or parts.query
    except ValueError:  # not a URL urllib reads (a bad port, brackets): cut by pattern
        return re.sub(r"\?.*$", "?<redacted>", re.sub(r"^([^:/]+://)[^/]*@", r"\1<redacted>@", url))
    if not secret:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    netloc = "<redacted>@" + netloc if "@" in parts.netloc else netloc
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "<redacted>" if parts.query else "", parts.fragment))


def redact_secrets(obj: Any) -> Any:
    """``obj`` (a spec, a list, a string) with every URL redacted, the originals remembered by this process only.

    What genforge writes (spec.yaml, markers, logs) holds the redacted form; ``unredact`` gives the
    original back within the process that saw it (a run, a resume given the URL again).
    """
    if isinstance(obj, dict):
        return {k: redact_secrets(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(v) for v in obj]
    if isinstance(obj, str) and "://" in obj:
        redacted = redact_url(obj)
        if redacted != obj:
            _unredacted[redacted] = obj
        return redacted
    return obj


def remember_store(url: str) -> None:
    """A run store's root URL, for ``unredact`` to restore the URLs of runs under it."""
    if is_url(url):
        redacted = redact_url(url.rstrip("/"))
        if redacted != url.rstrip("/"):
            _stores[redacted] = url.rstrip("/")


def unredact(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """``obj`` with redacted URLs this process knows restored, and the dotted names of those it does not know."""
    missing: list[str] = []
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out[k], m = unredact(v, f"{where}.{k}" if where else str(k))
            missing += m
        return out, missing
    if isinstance(obj, list):
        items = [unredact(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [n for _, m in items for n in m]
    if isinstance(obj, str) and "<redacted>" in obj:
        if obj in _unredacted:
            return _unredacted[obj], []
        for redacted, url in _stores.items():  # a run's URL under a store this process knows
            rest = obj[len(redacted.rstrip("/")):]
            if obj.startswith(redacted.rstrip("/") + "/") and "<redacted>" not in rest:
                return url.rstrip("/") + rest, []
        return obj, [where]
    return obj, []


def _valid_id(run_id: str) -> bool:
    return bool(_RUN_ID.fullmatch(run_id)) and ".." not in run_id


def check_run_id(run_id: str) -> str:
    """A run id is one folder name: letters, digits, '.', '_', '-'; no separators, no '..' (it is joined into paths and URLs)."""
    if not isinstance(run_id, str) or not _valid_id(run_id):
        raise RunNotFound(f"{run_id!r} is not a run id: use letters, digits, '.', '_' and '-' (no path separators or '..')")
    return run_id


def _strip(fs, url: str) -> str:
    return fs._strip_protocol(url).rstrip("/")


def _rel(path: str, base: str) -> str:
    return path[len(base):].lstrip("/")


def _find(fs, base: str) -> dict[str, dict]:
    return fs.find(base, detail=True) if fs.exists(base) else {}
