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
        logs/plugins.log   what the generator's steps and the evaluators printed (capped; genforge.core.capture)
        metrics.json       every metric, by evaluator
        figures/           PNG files, one folder per evaluator (and training/, samples/)
        report.md          the human-readable report
        status.json        state (created, running, finished, failed), step, error

The root is ``$GENFORGE_HOME`` (default ``~/.genforge``); prepared data is cached under
``<root>/cache/<fingerprint>`` so runs on the same data share it.

The modules, along the store's seams: ``files`` (atomic writes, the prepared-data cache),
``run`` (one run's folder, status and lock), ``mirror`` (a store at a URL: local mirrors,
push and pull, atomic creates), ``lease`` (a run's lease on a shared store) and ``secrets``
(URLs recorded without credentials). Everything a plugin needs is importable from here.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets as _secrets
from pathlib import Path

from ..errors import RunNotFound, shown
from . import mirror
from .files import atomic_write_bytes, atomic_write_text, file_digest, prepared_once, read_jsonl, refuse_links, temp_file
from .lease import LEASE_SECONDS, Lease
from .mirror import filesystem, home, is_url, mirror_dir, set_storage_options, store_root
from .run import Run, check_run_id, valid_id
from .secrets import _stores, _unredacted, redact_secrets, redact_text, redact_url, remember_store, unredact  # noqa: F401 (_stores, _unredacted: tests)

__all__ = [
    "LEASE_SECONDS",
    "Lease",
    "Run",
    "RunStore",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_run_id",
    "file_digest",
    "filesystem",
    "home",
    "is_url",
    "mirror_dir",
    "prepared_once",
    "read_jsonl",
    "refuse_links",
    "redact_secrets",
    "redact_text",
    "redact_url",
    "remember_store",
    "set_storage_options",
    "store_root",
    "temp_file",
    "unredact",
]


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
        """A run of this store by id: its folder is ``runs/<id>``, and neither is a symbolic link (refused before anything is written)."""
        check_run_id(run_id)
        return Run(refuse_links(self.runs / run_id, self.root), f"{self.url}/runs/{run_id}" if self.url else None)

    def create(self, generator: str, run_id: str | None = None) -> Run:
        """A new run folder; ``run_id`` (e.g. derived from an orchestrator's run) must be new."""
        if run_id is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_id = f"{stamp}-{generator}-{_secrets.token_hex(3)}"
        run = self._run(run_id)
        run.path.mkdir(parents=True)
        run._mark_remote()
        run.set_status("created", created=dt.datetime.now(dt.UTC).isoformat())
        return run

    def exists(self, run_id: str) -> bool:
        """A run folder: one with its spec or its status (a run whose spec.yaml was lost is still a run, named as damaged)."""
        if self.url:
            fs = filesystem(self.url)
            base = f"{mirror.strip(fs, self.url)}/runs/{run_id}"
            return fs.exists(f"{base}/spec.yaml") or fs.exists(f"{base}/status.json")
        return _is_run(self.runs / run_id)

    def all(self) -> list[Run]:
        if self.url:  # fetch what a listing needs: each run's spec and status
            fs = filesystem(self.url)
            base = f"{mirror.strip(fs, self.url)}/runs"
            ids = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)] if fs.exists(base) else []
            for run_id in ids:
                if valid_id(run_id):
                    self._run(run_id).pull("spec.yaml", "status.json")
        if not self.runs.exists():
            return []
        refuse_links(self.runs, self.root)
        # A run folder that is a link is no run of this store: left out here, and refused by name (get).
        runs = [self._run(p.name) for p in self.runs.iterdir() if valid_id(p.name) and not p.is_symlink() and _is_run(p)]
        return sorted(runs, key=lambda r: (str(r.status.get("created", "")), r.id))

    def get(self, run_id: str) -> Run:
        """A run by id, by ``latest``, by a unique prefix, or by its folder's path (a folder of this store's ``runs/``)."""
        if run_id == "latest":
            runs = self.all()
            if not runs:
                raise RunNotFound(f"no runs under {self}")
            runs[-1].pull()
            return runs[-1]
        if "/" in run_id or os.sep in run_id:  # a folder: only one of this store's runs
            try:
                as_path = Path(run_id).expanduser().resolve()
            except (RuntimeError, OSError):  # a symbolic link loop: no run folder
                as_path = Path(os.path.abspath(Path(run_id).expanduser()))
            if as_path.parent != self.runs.resolve() or not _is_run(as_path):
                raise RunNotFound(
                    f"{shown(run_id)} is not a run folder of this store ({self.runs}); give a run id, or --store for another store"
                )
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


def _is_run(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "spec.yaml").is_file() or (folder / "status.json").is_file())
