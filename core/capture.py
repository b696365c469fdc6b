"""What plugin code prints while it runs (an evaluator, a generator's step): written to a capped log, not the terminal.

An evaluator that prints 20 MB would otherwise put all of it on the terminal, in the Prefect log
and in whatever collects the worker's output. While plugin code runs, ``sys.stdout`` and
``sys.stderr`` are routers: what a *captured thread* writes goes to that thread's section of a
``CappedLog`` (``logs/plugins.log`` of a run, ``plugins.log`` of a ``genforge evaluate``), which
keeps at most ``LOG_CAP`` bytes and says how much it cut; what any other thread writes (the
progress bar, the host's own lines) goes where it went before.

Per thread, because an evaluator runs in a worker thread (``runner.evaluate_samples``) that may
outlive its deadline: whatever it prints later still goes to its log. Output that native code
writes straight to file descriptors 1 and 2 (a C library's own warnings) is not captured.
``GENFORGE_NO_CAPTURE=1`` switches capture off (a ``breakpoint()`` in plugin code needs the terminal).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOG_CAP = 1 << 20  # bytes a plugin log keeps, notes included
SECTION_CAP = LOG_CAP // 4  # bytes one piece of plugin code may fill: one that prints without end leaves room for the others
_NOTE_ROOM = 4096  # of the cap, kept for the lines that say what was cut
_lock = threading.RLock()


class CappedLog:
    """An append-only text log of at most ``cap`` bytes (counting what the file held already); what does not fit is counted."""

    def __init__(self, path: Path, cap: int = LOG_CAP):
        self.path, self.cap = Path(path), cap
        self._fh: Any = None
        self._lock = threading.Lock()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _append(self, data: bytes, limit: int) -> int:
        """Write as much of ``data`` as keeps the file within ``limit`` bytes; returns the bytes written."""
        with self._lock:
            if self._fh is None:
                try:
                    # the log's own folder only: a run folder deleted while plugin code prints is not recreated
                    self.path.parent.mkdir(exist_ok=True)
                    self._fh = open(self.path, "ab")  # kept open while plugin code writes; see close
                except OSError:
                    return 0  # nowhere to write: counted as cut, never an error in the plugin's print()
            room = max(0, limit - self._fh.tell())
            if room:
                self._fh.write(data[:room])
                self._fh.flush()
            return min(room, len(data))

    def section(self, label: str) -> Section:
        """A part of the log for one piece of plugin code (``label``: what it is), headed by a line once it writes."""
        return Section(self, label, min(SECTION_CAP, self.cap))

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None  # a thread still writing (an evaluator past its deadline) opens it again


class Section:
    """What one piece of plugin code writes: kept while the log has room, counted once it has not."""

    def __init__(self, log: CappedLog, label: str, cap: int):
        self.log, self.label, self.cap = log, label, cap
        self.written = 0  # bytes the plugin code wrote
        self.kept = 0  # of which in the log
        self.cut = 0  # of which not
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        data = str(text).encode("utf-8", errors="replace")
        with self._lock:
            if not self.written and data:
                self.log._append(f"== {self.label} ==\n".encode(), self.log.cap - _NOTE_ROOM)
            self.written += len(data)
            room = max(0, self.cap - self.kept)
            kept = self.log._append(data[:room], self.log.cap - _NOTE_ROOM) if room else 0
            self.kept += kept
            self.cut += len(data) - kept
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Say, in the log, how much of this section was cut (if any)."""
        if self.cut:
            note = (
                f"\n[genforge: {self.cut:,} of the {self.written:,} bytes {self.label} wrote were cut: this log keeps at most "
                f"{self.cap:,} bytes of each and {self.log.cap:,} in all]\n"
            )
            self.log._append(note.encode(), self.log.cap)


class _Router:
    """Stands in for ``sys.stdout`` or ``sys.stderr``: a captured thread's writes go to its section, the rest to ``default``."""

    def __init__(self, default: Any):
        self.default = default
        self.sections: dict[int, Section] = {}
        self.users = 0  # captures under way (a thread past its deadline among them): the router stays until none is

    def _target(self) -> Any:
        return self.sections.get(threading.get_ident(), self.default)

    def write(self, text: str) -> int:
        target = self._target()
        return len(text) if target is None else target.write(text)  # no stream at all (pythonw): as print would, nothing

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        target = self._target()
        if target is not None:
            target.flush()

    def isatty(self) -> bool:
        target = self._target()
        return False if isinstance(target, Section) else bool(getattr(target, "isatty", lambda: False)())

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, buffer, ...: the stream it stands in for
        return getattr(self.default, name)


def enabled() -> bool:
    return os.environ.get("GENFORGE_NO_CAPTURE", "") in ("", "0", "false", "no")


@contextlib.contextmanager
def captured(log: CappedLog | None, label: str) -> Iterator[Section | None]:
    """While the body runs, what this thread prints goes to a new section of ``log`` (None, or capture switched off: nothing changes)."""
    if log is None or not enabled():
        yield None
        return
    section = log.section(label)
    ident = threading.get_ident()
    with _lock:
        routers = []
        for name in ("stdout", "stderr"):
            router = getattr(sys, name)
            if not isinstance(router, _Router):
                router = _Router(router)
                setattr(sys, name, router)
            routers.append((name, router, router.sections.get(ident)))  # a capture within a capture: the outer one comes back
            router.sections[ident] = section
            router.users += 1
    try:
        yield section
    finally:
        with _lock:
            for name, router, outer in routers:
                if outer is not None:
                    router.sections[ident] = outer
                else:
                    router.sections.pop(ident, None)
                router.users -= 1
                if not router.users and getattr(sys, name) is router:  # the last capture is done: the stream as it was
                    setattr(sys, name, router.default)
        section.close()


@contextlib.contextmanager
def uncaptured() -> Iterator[None]:
    """While the body runs, this thread writes to the terminal again (the host's listeners: a progress bar, the Prefect bridge)."""
    ident = threading.get_ident()
    with _lock:
        held = [(r, r.sections.pop(ident)) for r in (sys.stdout, sys.stderr) if isinstance(r, _Router) and ident in r.sections]
    try:
        yield
    finally:
        with _lock:
            for router, section in held:
                router.sections[ident] = section
