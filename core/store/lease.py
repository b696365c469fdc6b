"""A run's lease on a shared store, so that two machines never train one run.

The lease is a sequence of records in the run's folder on the store, ``.lease/g-<generation>.json``
(holder, token, expiry). The newest generation is the lease. Every change — taking it, renewing
it, taking over an expired one, releasing it — writes generation g + 1 with the store's atomic
create-if-absent (``create_if_absent``: link(2) on a local or NFS path, ``If-None-Match: *`` on
S3, ``ifGenerationMatch=0`` on GCS), after reading that g is the newest. Of two machines that
read the same g, exactly one creates g + 1; the other reads it and is refused. No sleeping, no
read-back: the create is the compare-and-swap.

- Taking: refused while the newest record is another holder's, unexpired and not released.
- Renewing (a thread, every third of ``GENFORGE_LEASE_SECONDS``, default 60): the holder writes
  g + 1 only while g is its own; finding another holder's record means the lease was taken over
  (this machine stalled past its expiry): the lease is marked lost, never renewed again.
- Losing it stops training cooperatively: the host checks ``Lease.check`` at every progress
  event of the engine and before pushing any file to the store; before pushing a checkpoint it
  reads the newest record on the store first (a fence: a holder whose lease was taken over never
  pushes another checkpoint).
- Releasing writes a record marked released (the newest is kept, so generations only grow;
  records two generations old are deleted as the lease moves on). Because old records are
  deleted, a create can succeed for a machine that stalled between reading g and creating
  g + 1 long enough for g + 1 to be written and pruned; so a create counts only when no newer
  generation is listed after it, and is withdrawn otherwise.

Expiry compares wall clocks: keep the machines' clocks in sync (NTP). A store without an atomic
create (see ``mirror.atomic_create_supported``) is said so in one line when a lease is taken.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
from typing import Any

from ..errors import LeaseLost, RunBusy
from . import mirror

LEASE_SECONDS = 60.0
_GENERATION = re.compile(r"g-(\d{12})\.json$")
log = logging.getLogger("genforge")


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def lease_seconds() -> float:
    return max(3.0, float(os.environ.get("GENFORGE_LEASE_SECONDS") or LEASE_SECONDS))


class Lease:
    """One holder's claim on a run of a shared store (``url``: the run's folder there)."""

    def __init__(self, run_id: str, url: str, holder: str):
        self.run_id = run_id
        self.fs = mirror.filesystem(url)
        self.folder = f"{mirror.strip(self.fs, url)}/.lease"
        self.url = url
        self.holder = holder
        self.token = mirror.token()
        self.seconds = lease_seconds()
        self.generation = 0  # of this holder's newest record
        self.expires = 0.0
        self.lost: str | None = None  # who holds it now, once another machine took it from this one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- records ---------------------------------------------------------------------
    def _path(self, generation: int) -> str:
        return f"{self.folder}/g-{generation:012d}.json"

    def generations(self) -> list[int]:
        self.fs.invalidate_cache(self.folder)  # s3fs and gcsfs cache listings: a lease must see the store as it is now
        try:
            names = self.fs.ls(self.folder, detail=False)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _GENERATION.search(str(n))))

    def newest(self) -> tuple[int, dict | None]:
        """(generation, record) of the newest record; (0, None) when the run was never leased."""
        for _ in range(5):  # a record deleted between listing and reading: list again
            found = self.generations()
            if not found:
                return 0, None
            try:
                with self.fs.open(self._path(found[-1]), "rb") as fh:
                    record = json.loads(fh.read())
            except FileNotFoundError:
                continue
            except (ValueError, UnicodeDecodeError):  # not ours to read: treat as a claim that has lapsed
                record = {"holder": "unreadable lease record", "token": "", "expires": 0}
            return found[-1], record if isinstance(record, dict) else {"token": "", "expires": 0}
        raise RunBusy(f"run {self.run_id}: its lease on the store keeps changing; try again")

    def _create(self, generation: int, released: bool = False) -> bool:
        now = _now()
        record = {
            "holder": self.holder,
            "token": self.token,
            "generation": generation,
            "renewed": now,
            "expires": 0.0 if released else now + self.seconds,
            "released": released,
        }
        if not mirror.create_if_absent(self.fs, self._path(generation), json.dumps(record).encode()):
            return False
        if any(g > generation for g in self.generations()):
            # A reader that stalled since it listed g - 1 created a generation already pruned: the lease has moved
            # on past it. The record is withdrawn and the create counts as lost, as if g had still been there.
            try:
                self.fs.rm_file(self._path(generation))
            except (FileNotFoundError, OSError):
                pass
            return False
        self.generation, self.expires = generation, record["expires"]
        self._prune(generation)
        return True

    def _prune(self, generation: int) -> None:
        for old in self.generations():
            if old < generation - 1:
                try:
                    self.fs.rm_file(self._path(old))
                except (FileNotFoundError, OSError):
                    pass

    def _free(self, record: dict | None) -> bool:
        return record is None or record.get("released") or record.get("token") == self.token or record.get("expires", 0) <= _now()

    def _refuse(self, record: dict) -> RunBusy:
        left = record.get("expires", 0) - _now()
        return RunBusy(
            f"run {self.run_id} is busy on another machine: {record.get('holder', 'unknown holder')} "
            f"(its lease on the shared store lapses in {max(0, left):.0f} s unless renewed); wait for it to finish, "
            "or stop it and `genforge resume` the run"
        )

    # -- the holder's side ----------------------------------------------------------
    def acquire(self) -> None:
        """Take the lease (one atomic create), or raise ``RunBusy`` naming its holder."""
        mirror.warn_without_atomic_create(self.fs, self.url)
        self.fs.makedirs(self.folder, exist_ok=True)
        for _ in range(5):
            generation, record = self.newest()
            if not self._free(record):
                raise self._refuse(record)
            if self._create(generation + 1):
                self._thread = threading.Thread(target=self._renew_loop, name=f"genforge-lease-{self.run_id}", daemon=True)
                self._thread.start()
                return
            # another machine wrote g + 1 first: read what it wrote
        generation, record = self.newest()
        raise self._refuse(record or {})

    def renew(self) -> bool:
        """Write the next generation if the newest is still ours; False (and ``lost`` set) when another holder has it."""
        if self.lost:
            return False
        generation, record = self.newest()
        if record is None or record.get("token") != self.token:
            self._lose(record)
            return False
        if not self._create(generation + 1):
            self._lose(self.newest()[1])
            return False
        return True

    def _lose(self, record: dict | None) -> None:
        self.lost = str((record or {}).get("holder", "unknown holder"))
        log.error("run %s: another machine took its lease (%s); this machine stops the run", self.run_id, self.lost)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self.renew():
                    return
            except Exception as exc:  # the store unreachable for a moment: try again at the next renewal
                log.warning("run %s: lease not renewed (%s)", self.run_id, exc)

    def check(self, strict: bool = False) -> None:
        """Raise ``LeaseLost`` when this holder no longer holds the lease.

        The store is read when ``strict`` (before a checkpoint is pushed: the fence) or when the
        renewals are late; otherwise what the renewal thread last found is trusted.
        """
        if not self.lost and (strict or _now() > self.expires - self.seconds / 6):
            try:
                generation, record = self.newest()
                if record is None or record.get("token") != self.token:
                    self._lose(record)
            except RunBusy:
                pass
        if self.lost:
            raise LeaseLost(
                f"run {self.run_id} was taken over by another machine ({self.lost}) after this one missed renewing its lease; "
                "this machine stopped it"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)  # a renewal in flight finishes first
        if self.lost:
            return  # the record is the new holder's
        try:
            generation, record = self.newest()
            if record is not None and record.get("token") == self.token:
                self._create(generation + 1, released=True)
        except Exception as exc:  # it lapses by itself; the run's own outcome is what matters here
            log.warning("run %s: lease not released (%s); it lapses within %.0f s", self.run_id, exc, self.seconds)

    def state(self) -> dict[str, Any]:
        return {"holder": self.holder, "generation": self.generation, "expires": self.expires, "lost": self.lost}
