"""Models that outlive their runs: named models, numbered self-contained versions, aliases moved atomically.

In the run store, beside ``runs/`` (local folder or URL alike, through fsspec)::

    <root>/models/<name>/
        versions/000001.json       a version's record: written last, with the store's create-if-absent
        blobs/<token>/             its files: the trained model (what sampling reads) and the run's records
        aliases/000000000001.json  the alias log: each record holds every alias and the move that made it

A version is self-contained: the generator's model files (``Generator.model_files``: weights,
what rebuilds the network, whatever else sampling reads), the resolved spec, the data
fingerprint, the metrics, figures and report of its run. It survives its run folder's deletion.

Registering uploads the files to a fresh ``blobs/<token>/`` folder, then claims the next number
by creating ``versions/<n>.json`` with create-if-absent (link(2) locally, ``If-None-Match: *`` on
S3): of two registrations that read the same newest number, one gets it and the other takes the
next. A process killed during registration leaves a blob folder that no record names, never a
listed version.

An alias move reads the newest alias record (generation g) and creates g + 1 with the whole
map and the move (alias, from, to, when, by, why): the create is the compare-and-swap, so two
concurrent moves never lose one. The log is the audit trail and is never pruned. An alias only
ever names a version whose record exists (versions are never deleted).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, GenforgeError, shown
from . import mirror
from .files import atomic_write_bytes, file_digest
from .run import valid_id

_VERSION_FILE = re.compile(r"(\d{6})\.json$")
_ALIAS_FILE = re.compile(r"(\d{12})\.json$")
CHAMPION = "champion"
RUN_RECORDS = (
    "spec.yaml",
    "versions.json",
    "data.json",
    "training.json",
    "checkpoint.json",
    "samples.json",
    "metrics.json",
    "report.md",
)  # a run's records a version keeps (with figures/): its card and its lineage


class ModelNotFound(GenforgeError):
    """A model, version or alias that the registry does not hold."""


def check_name(name: str, what: str = "model name") -> str:
    """A model or alias name is one folder name: letters, digits, '.', '_', '-', starting with a letter or digit."""
    if not isinstance(name, str) or not valid_id(name):  # the run-id rules: one folder name, joined into paths and URLs
        raise ConfigError(f"{shown(name)} is not a {what}: use letters, digits, '.', '_' and '-' (no path separators or '..')")
    return name


def safe_relative(rel: Any, what: str) -> str:
    """A path inside a version's folder, as a record names it: relative, POSIX, no ``..``; else a ``DataError`` (a forged or
    damaged record must never make genforge read or write outside the version's folder or the run folder)."""
    from pathlib import PurePosixPath

    p = PurePosixPath(str(rel))
    if not str(rel) or p.is_absolute() or ".." in p.parts or "\\" in str(rel):
        raise DataError(f"{what} names the path {shown(rel)}, which is not inside its folder; the record is damaged")
    return p.as_posix()


def who() -> str:
    """Who moves an alias or registers a version: the Prefect flow run when inside one, else user@host."""
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        return f"flow run {flow_run}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class ModelVersion:
    """One registered version: its record and where its files are."""

    model: str
    version: int
    record: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"

    @property
    def generator(self) -> str:
        return str(self.record.get("generator", ""))

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id", ""))

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record.get("metrics") or {})


class Registry:
    """The models of one run store (``root``: a local folder or a URL; default ``$GENFORGE_HOME``)."""

    def __init__(self, root: str | Path | None = None):
        root = str(root) if root else mirror.store_root()
        self.url = root.rstrip("/")
        self.fs = mirror.filesystem(self.url if mirror.is_url(self.url) else str(Path(self.url).expanduser()))
        local = not mirror.is_url(self.url)
        self.base = str(Path(self.url).expanduser()) if local else mirror.strip(self.fs, self.url)
        self.models_dir = f"{self.base}/models"
        # where a version's files are read from: the store itself when local, else a local copy under the mirror
        self.local_root = Path(self.base) if local else mirror.mirror_dir(self.url)

    def __str__(self) -> str:
        from .secrets import redact_url

        return redact_url(self.url)

    # -- reading ------------------------------------------------------------------------
    def _ls(self, folder: str) -> list[str]:
        self.fs.invalidate_cache(folder)  # s3fs and gcsfs cache listings: the registry must see the store as it is now
        try:
            return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return []

    def _read(self, path: str) -> dict[str, Any]:
        try:
            with self.fs.open(path, "rb") as fh:
                value = json.loads(fh.read())
        except FileNotFoundError:
            raise
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is damaged ({exc}); restore it from the store's backup") from None
        if not isinstance(value, dict):
            raise DataError(f"{path} is damaged (it holds {type(value).__name__} JSON, not an object)")
        return value

    def models(self) -> list[str]:
        return sorted(n for n in self._ls(self.models_dir) if valid_id(n) and self._version_numbers(n))

    def _version_numbers(self, model: str) -> list[int]:
        names = self._ls(f"{self.models_dir}/{model}/versions")
        return sorted(int(m.group(1)) for n in names if (m := _VERSION_FILE.fullmatch(n)))

    def versions(self, model: str) -> list[ModelVersion]:
        check_name(model)
        return [self.version(model, n) for n in self._version_numbers(model)]

    def version(self, model: str, number: int) -> ModelVersion:
        check_name(model)
        try:
            record = self._read(f"{self.models_dir}/{model}/versions/{number:06d}.json")
        except FileNotFoundError:
            known = self._version_numbers(model)
            if not known:
                raise ModelNotFound(f"no model {model!r} in the store {self}{self._known_models()}") from None
            raise ModelNotFound(f"model {model!r} has no version {number}; its versions: {', '.join(map(str, known))}") from None
        return ModelVersion(model, number, record)

    def _known_models(self) -> str:
        models = self.models()
        return f"; models: {', '.join(models)}" if models else " (it has no models yet: `genforge register RUN --model NAME`)"

    def alias_log(self, model: str) -> list[dict[str, Any]]:
        """Every alias move of ``model``, oldest first: each record holds ``aliases`` (the map after it) and ``move``."""
        check_name(model)
        folder = f"{self.models_dir}/{model}/aliases"
        found = sorted(int(m.group(1)) for n in self._ls(folder) if (m := _ALIAS_FILE.fullmatch(n)))
        return [{"generation": g, **self._read(f"{folder}/{g:012d}.json")} for g in found]

    def _newest_aliases(self, model: str) -> tuple[int, dict[str, int]]:
        folder = f"{self.models_dir}/{model}/aliases"
        for _ in range(5):  # a record is never deleted, but a listing may race a create: list again
            found = sorted(int(m.group(1)) for n in self._ls(folder) if (m := _ALIAS_FILE.fullmatch(n)))
            if not found:
                return 0, {}
            try:
                record = self._read(f"{folder}/{found[-1]:012d}.json")
            except FileNotFoundError:
                continue
            try:
                return found[-1], {str(k): int(v) for k, v in (record.get("aliases") or {}).items()}
            except (TypeError, ValueError, AttributeError):
                raise DataError(f"{folder}/{found[-1]:012d}.json is damaged (its aliases are not version numbers)") from None
        raise GenforgeError(f"model {model}: its aliases keep changing; try again")

    def aliases(self, model: str) -> dict[str, int]:
        check_name(model)
        return self._newest_aliases(model)[1]

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME@alias``, ``NAME:version`` or ``NAME`` (its champion) -> the version; one-line errors naming what exists."""
        if not isinstance(ref, str) or not ref:
            raise ConfigError("give a model as NAME, NAME@alias or NAME:version")
        if "@" in ref:
            model, alias = ref.split("@", 1)
            check_name(model)
            check_name(alias, "alias")
        elif ":" in ref:
            model, number = ref.split(":", 1)
            check_name(model)
            if not number.isdigit():
                raise ConfigError(f"{shown(ref)}: a version is a number, as in {model}:3")
            return self.version(model, int(number))
        else:
            model, alias = check_name(ref), CHAMPION
        if not self._version_numbers(model):
            raise ModelNotFound(f"no model {model!r} in the store {self}{self._known_models()}")
        held = self.aliases(model)
        if alias not in held:
            known = ", ".join(f"@{a} (version {v})" for a, v in sorted(held.items())) or "none yet"
            raise ModelNotFound(f"model {model!r} has no alias {alias!r}; its aliases: {known}; its versions: {self._versions_line(model)}")
        return self.version(model, held[alias])

    def _versions_line(self, model: str) -> str:
        return ", ".join(map(str, self._version_numbers(model)))

    # -- writing ------------------------------------------------------------------------
    def register(self, run_path: Path, model: str, model_files: list[Path], record: dict[str, Any], by: str | None = None) -> ModelVersion:
        """A new version of ``model`` from a run folder: its model files and records are uploaded, then the number is claimed.

        ``model_files``: paths inside ``run_path`` (what sampling reads); ``record``: what the
        caller knows of the run (generator, run id, metrics, ...), kept in the version's record.
        """
        check_name(model)
        self._guard()
        run_path = Path(run_path)
        token = mirror.token()
        blob = f"{self.models_dir}/{model}/blobs/{token}"
        files: dict[str, str] = {}  # relative path -> SHA-256
        model_rel = []
        for p in model_files:
            try:
                rel = Path(p).resolve().relative_to(run_path.resolve()).as_posix()
            except ValueError:
                raise DataError(
                    f"{p}: a model file outside the run folder {run_path} (Generator.model_files names only files inside it)"
                ) from None
            model_rel.append(rel)
        records = [run_path / n for n in RUN_RECORDS if (run_path / n).is_file()]
        figures = sorted(p for p in (run_path / "figures").rglob("*") if p.is_file()) if (run_path / "figures").is_dir() else []
        for p in [*[run_path / r for r in model_rel], *records, *figures]:
            if not p.is_file():
                raise DataError(f"{p} is missing: run {record.get('run_id')} has no whole trained model to register")
            rel = p.relative_to(run_path).as_posix()
            if rel in files:
                continue
            files[rel] = file_digest(p)
            target = f"{blob}/{rel}"
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(p), target)
        full = {
            **record,
            "model": model,
            "registered": _now(),
            "registered_by": by or who(),
            "blob": f"blobs/{token}",
            "model_files": model_rel,
            "files": files,
        }
        versions = f"{self.models_dir}/{model}/versions"
        self.fs.makedirs(versions, exist_ok=True)
        number = (self._version_numbers(model) or [0])[-1] + 1
        for _ in range(100):
            full["version"] = number
            if mirror.create_if_absent(self.fs, f"{versions}/{number:06d}.json", json.dumps(full, indent=1).encode()):
                return ModelVersion(model, number, full)
            number = max(number + 1, (self._version_numbers(model) or [0])[-1] + 1)  # another registration took it
        raise GenforgeError(f"model {model}: could not claim a version number (too many registrations at once); try again")

    def move_alias(
        self,
        model: str,
        alias: str,
        version: int,
        reason: str,
        by: str | None = None,
        expect: int | None | bool = True,
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version``; returns the new alias record.

        ``expect``: True moves it whatever it pointed at (a person's override: retried until it
        lands); an int or None (no such alias yet) moves it only while it still points there (a
        gate: a refusal, ``GenforgeError``, once another move got in first).
        """
        check_name(model)
        check_name(alias, "alias")
        self._guard()
        self.version(model, version)  # an alias only ever names a version whose record exists
        folder = f"{self.models_dir}/{model}/aliases"
        self.fs.makedirs(folder, exist_ok=True)
        for _ in range(100):
            generation, held = self._newest_aliases(model)
            before = held.get(alias)
            if expect is not True and before != expect:
                raise GenforgeError(
                    f"model {model}: @{alias} moved to version {before} while this move was decided (it expected "
                    f"{'no ' + alias if expect is None else f'version {expect}'}); decide again"
                )
            record = {
                "aliases": {**held, alias: version},
                "move": {"alias": alias, "from": before, "to": version, "when": _now(), "by": by or who(), "reason": reason},
            }
            if mirror.create_if_absent(self.fs, f"{folder}/{generation + 1:012d}.json", json.dumps(record, indent=1).encode()):
                return {"generation": generation + 1, **record}
        raise GenforgeError(f"model {model}: its aliases keep changing; try again")

    def _guard(self) -> None:
        """Before a write: a local store's ``models/`` must not be a link out of the store; a store without an atomic
        create-if-absent is said so once (two concurrent writes could then both land)."""
        if not mirror.is_url(self.url):
            from .files import refuse_links

            refuse_links(Path(self.models_dir), Path(self.base))
        mirror.warn_without_atomic_create(self.fs, self.url)

    # -- files ----------------------------------------------------------------------------
    def files(self, version: ModelVersion) -> Path:
        """A local folder with the version's files, each checked against the SHA-256 recorded when it was registered."""
        blob = str(version.record.get("blob", ""))
        if not re.fullmatch(r"blobs/[0-9a-f]{16}", blob):
            raise DataError(f"model {version.ref}: its record names no files (blob {shown(blob)}); it is damaged")
        local = self.local_root / "models" / version.model / blob
        remote = f"{self.models_dir}/{version.model}/{blob}"
        if not mirror.is_url(self.url):
            from .files import refuse_links

            refuse_links(local, Path(self.base))  # models/<name>/blobs/... read only inside the store
        listed = version.record.get("files") or {}
        if not isinstance(listed, dict):
            raise DataError(f"model {version.ref}: its record's files are damaged")
        missing = [f for f in version.record.get("model_files") or [] if f not in listed]
        if missing:
            raise DataError(f"model {version.ref}: its model file {shown(missing[0])} has no recorded SHA-256; the record is damaged")
        for rel, digest in listed.items():
            rel = safe_relative(rel, f"model {version.ref}'s record")
            p = local / rel
            if mirror.is_url(self.url) and not (p.is_file() and file_digest(p) == digest):
                p.parent.mkdir(parents=True, exist_ok=True)
                try:
                    data = self.fs.cat_file(f"{remote}/{rel}")
                except FileNotFoundError:
                    raise DataError(f"model {version.ref}: its file {rel} is missing from the store") from None
                atomic_write_bytes(p, data)
            if not p.is_file():
                raise DataError(f"model {version.ref}: its file {rel} is missing from the store ({p})")
            if file_digest(p) != digest:
                raise DataError(f"model {version.ref}: its file {rel} does not match the SHA-256 recorded when it was registered")
        return local

    def run_ids(self) -> dict[str, list[str]]:
        """Run id -> the versions registered from it that an alias points at (``name:3@champion``): runs a team relies on."""
        held: dict[str, list[str]] = {}
        for model in self.models():
            for alias, number in self.aliases(model).items():
                try:
                    run_id = self.version(model, number).run_id
                except (ModelNotFound, DataError):
                    continue
                held.setdefault(run_id, []).append(f"{model}:{number}@{alias}")
        return held
