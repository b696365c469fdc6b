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
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import DataError

MAX_LINE = 1 << 20  # characters: longer than any line of a text data format (a SMILES, a CSV row of prices)


def check_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a readable regular file, else one ``DataError`` line saying what it is instead and what to do."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise DataError(f"{what} {p} is a symbolic link to {os.readlink(p)}, which does not exist") from None
        raise DataError(f"{what} {p} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{what} {p} is a loop of symbolic links; point it at a file") from None
        raise DataError(f"{what} {p} cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{what} {p} is a folder; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{what} {p} is not a regular file (a FIFO, a socket or a device); give a file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{what} {p} cannot be read: permission denied")
    return p


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
    p = check_file(path, what)
    opener = gzip.open if p.name.endswith(".gz") else open
    try:
        with opener(p, "rb") as fh:
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
