"""The run store: one folder per run, holding everything needed to reproduce or audit it.

    <root>/runs/<run_id>/
        spec.yaml          the resolved spec (generator + every section, defaults filled in)
        versions.json      genforge, its plugins, torch, ...
        data.json          the prepared data's fingerprint, path and counts (rows kept/rejected)
        checkpoints/       step-00000100.pt ...   (written atomically; loaded with weights_only)
        model.safetensors  the weights the sampler used
        samples/           the samples, in their kind's format
        metrics.json       every metric, by evaluator
        figures/           PNG files
        report.md          the human-readable report
        status.json        state (created, running, finished, failed), step, error

The root is ``$GENFORGE_HOME`` (default ``~/.genforge``); prepared data is cached under
``<root>/cache/<fingerprint>`` so runs on the same data share it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .errors import RunNotFound


def home() -> Path:
    return Path(os.environ.get("GENFORGE_HOME", Path.home() / ".genforge")).expanduser()


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


class Run:
    """One run's folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

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
        p = self.path / name
        return json.loads(p.read_text()) if p.exists() else default

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        atomic_write_text(p, json.dumps(obj, indent=2, default=str) + "\n")
        return p

    @property
    def spec(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "spec.yaml").read_text())

    def write_spec(self, generator: str, config: dict[str, Any]) -> None:
        atomic_write_text(self.path / "spec.yaml", yaml.safe_dump({"generator": generator, **config}, sort_keys=False))

    @property
    def generator(self) -> str:
        return self.spec["generator"]

    @property
    def status(self) -> dict[str, Any]:
        return self.read_json("status.json", {"state": "created"})

    def set_status(self, state: str, **extra: Any) -> None:
        status = self.status
        status.update(state=state, updated=dt.datetime.now(dt.timezone.utc).isoformat(), **extra)
        if state != "failed":
            status.pop("error", None)
        self.write_json("status.json", status)

    def metrics(self) -> dict[str, Any]:
        return self.read_json("metrics.json", {})

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


class RunStore:
    """The folder of all runs (and the prepared-data cache) under a root."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else home()
        self.runs = self.root / "runs"
        self.cache = self.root / "cache"

    def create(self, generator: str) -> Run:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{generator}-{secrets.token_hex(3)}"
        path = self.runs / run_id
        path.mkdir(parents=True)
        run = Run(path)
        run.set_status("created", created=dt.datetime.now(dt.timezone.utc).isoformat())
        return run

    def all(self) -> list[Run]:
        if not self.runs.exists():
            return []
        runs = [Run(p) for p in self.runs.iterdir() if (p / "spec.yaml").exists()]
        return sorted(runs, key=lambda r: (r.status.get("created", ""), r.id))

    def get(self, run_id: str) -> Run:
        """A run by id, by ``latest``, by a unique prefix, or by its folder's path."""
        if run_id == "latest":
            runs = self.all()
            if not runs:
                raise RunNotFound(f"no runs under {self.runs}")
            return runs[-1]
        as_path = Path(run_id).expanduser()
        if (as_path / "spec.yaml").exists():
            return Run(as_path.resolve())
        direct = self.runs / run_id
        if (direct / "spec.yaml").exists():
            return Run(direct)
        matches = [r for r in self.all() if r.id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RunNotFound(f"run id {run_id!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")
        raise RunNotFound(f"no run {run_id!r} under {self.runs} (try `genforge show latest`)")
