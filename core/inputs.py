"""Files a person gives genforge (data files, melodies, sample files): checked before they are read, read strictly.

A reader built on these never reads a file as something it is not: a path that is a folder, a
FIFO (reading it would block), a link that leads nowhere, a binary file, a line that is not UTF-8
or that is longer than any line a text format holds, is named in one ``DataError`` line (the
whole file) or reported per line (a line a reader can skip and count), never decoded with
replacement characters or parsed as far as it goes.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import DataError

MAX_LINE = 1 << 20  # characters: longer than any line of a text data format (one sample of a line notation, a CSV row of numbers)


def open_regular(path: str | Path, what: str = "file", hint: str = "give a file") -> io.BufferedReader:
    """``path`` opened for reading in binary if it is a regular file, else one ``DataError`` line saying what it is.

    Opened without blocking and checked on the open descriptor, so a FIFO is never read and a
    file swapped between a check and the open cannot slip through. ``hint`` ends the lines that
    say what to give instead.
    """
    p = Path(path).expanduser()
    name = f"{what} {p}" if what else str(p)  # what="": the message starts with the path
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if p.is_symlink():
            raise DataError(f"{name} is a symbolic link to {os.readlink(p)}, which does not exist; {hint}") from None
        raise DataError(f"{name} does not exist; {hint}") from None
    except PermissionError:
        raise DataError(f"{name} cannot be read (permission denied); make it readable or copy it somewhere that is") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{name} is a loop of symbolic links (or too deep a chain of them); {hint}") from None
        if exc.errno == errno.EISDIR:
            raise DataError(f"{name} is a folder; {hint}") from None
        raise DataError(f"{name} cannot be opened ({exc.strerror or exc}); {hint}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise DataError(f"{name} is a folder; {hint}")
        raise DataError(f"{name} is not a regular file (a FIFO, a device or a socket); {hint}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def check_file(path: str | Path, what: str = "file", hint: str = "give a file") -> Path:
    """``path`` as a readable regular file, else one ``DataError`` line saying what it is instead and what to do."""
    open_regular(path, what, hint).close()
    return Path(path).expanduser()


def check_folder(path: str | Path, what: str = "folder") -> Path:
    """``path`` as a folder, else one ``DataError`` line saying what it is instead."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DataError(f"{what} {p} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{what} {p} is a loop of symbolic links; point it at a folder") from None
        raise DataError(f"{what} {p} cannot be read ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"{what} {p} is not a folder")
    return p


def text_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, str | None, str | None]]:
    """Each line of a UTF-8 text file (gzip-compressed where the name ends in ``.gz``): (line number, text, problem).

    ``text`` is the line without its line ending (a byte-order mark at the start is dropped), or
    None when ``problem`` says why the line cannot be read (not UTF-8; longer than ``MAX_LINE``).
    A file that is not text at all (NUL bytes near its start), or a ``.gz`` that is not gzip, is
    one ``DataError`` naming it.
    """
    p = Path(path).expanduser()
    opened = open_regular(p, what)
    try:
        with gzip.GzipFile(fileobj=opened) if p.name.endswith(".gz") else opened as fh:
            head = fh.read(8192)
            if b"\x00" in head:
                raise DataError(f"{what} {p} is not a text file (it holds NUL bytes); give a UTF-8 text file")
            fh.seek(0)
            number = 0
            while True:
                raw = fh.readline(MAX_LINE + 1)
                if not raw:
                    return
                number += 1
                if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):  # the rest of the line, in bounded pieces
                        raw = fh.readline(MAX_LINE)
                    yield number, None, f"a line longer than {MAX_LINE:,} characters"
                    continue
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield number, None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                    continue
                yield number, text.rstrip("\r\n"), None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{what} {p} is not a whole gzip file ({exc}); give the file again") from None
    finally:
        opened.close()
