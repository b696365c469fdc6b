"""A user's CSV of dated prices, read strictly: a cell is what the file says, or the read stops with one line saying where.

The format (docs/finance.md): UTF-8 text (a byte-order mark at the start is allowed), a header
row, then one row per day: the date (``YYYY-MM-DD``, or the ``data.date_format`` given:
``DD/MM/YYYY``, ``MM/DD/YYYY``, ``DD.MM.YYYY``), optionally followed by a time of day and a UTC
offset (``2016-01-04T21:00:00Z``, ``2016-01-04 16:00:00-05:00``), and one cell per price column,
exactly as many cells as the header has. The row's date is the date as written, or, with a time
zone given (``data.timezone``), the date in that zone of a stamp that has an offset.
A price is a plain decimal number — an optional sign, digits, one decimal point, an optional
exponent (``101.5``, ``1.015e2``) — or, quoted, one grouped in thousands with commas
(``"1,234.5"``). Empty or NA cells (``NA_CELLS``) are gaps. Rows of empty cells are skipped.

Everything else is refused rather than guessed, because a guess feeds a risk figure: a row
with a cell more than the header (``2016-07-14,1,5``, an unquoted decimal comma, would
otherwise be a price of 1), ``1_000`` or ``１００`` (Python's ``float`` reads both), a date such
as ``2016-07`` (pandas reads it as the 1st), a file that is not UTF-8 text, a line longer
than ``MAX_LINE`` characters, a folder, a FIFO (never opened for reading: it would block), and
``03/04/2016`` while the format is ISO (pandas reads it as March 4; it may be April 3).
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import re
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from genforge.core import DataError
from genforge.core.inputs import MAX_LINE, open_regular  # MAX_LINE: a price row of many thousand assets fits; a binary blob does not

NA_CELLS = {"", "na", "n/a", "nan", "null", "."}  # a missing price (a gap), as CSV exports write it
NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")  # ASCII digits only: float() also takes 1_000 and １００
THOUSANDS = re.compile(r"[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?")  # "1,234.56", quoted (a comma anywhere else is an error)
INFINITE = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
# data.date_format -> (how it is written, the date's pattern); day and month take one or two digits where they are not ISO
DATE_FORMATS = {
    "ISO": ("YYYY-MM-DD", r"(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})"),
    "DD/MM/YYYY": ("DD/MM/YYYY", r"(?P<d>[0-9]{1,2})/(?P<m>[0-9]{1,2})/(?P<y>[0-9]{4})"),
    "MM/DD/YYYY": ("MM/DD/YYYY", r"(?P<m>[0-9]{1,2})/(?P<d>[0-9]{1,2})/(?P<y>[0-9]{4})"),
    "DD.MM.YYYY": ("DD.MM.YYYY", r"(?P<d>[0-9]{1,2})\.(?P<m>[0-9]{1,2})\.(?P<y>[0-9]{4})"),
}
# a time of day after the date, and a UTC offset after the time: Z, +09:00, +0900, -05:00
TIME = r"(?:[T ](?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:\.[0-9]+)?)?(?P<tz>Z|[+-][0-9]{2}:?[0-9]{2})?)?"
DATES = {name: re.compile(pattern + TIME) for name, (_, pattern) in DATE_FORMATS.items()}
DAY_MONTH = re.compile(r"[0-9]{1,2}([/.])[0-9]{1,2}\1[0-9]{4}([T ].*)?")  # 03/04/2016, 03.04.2016: which is the month?
DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")  # "1,5" in one (quoted) cell
BLANKS = " \t"  # what is stripped around a cell (not every Unicode space: a no-break space is not part of a number)


def read_price_csv(path: Path, columns: list[str] | None = None, date_format: str = "ISO", timezone: str | None = None) -> pd.DataFrame:
    """Dated prices from a CSV (header row, first column the date); anything wrong is a one-line ``DataError`` naming it.

    Empty or NA cells are gaps (kept as NaN and counted later); a cell that is not a positive
    number, a row whose cell count differs from the header's, or a file that cannot be text
    stops the read with the file's line number and the column's name (see the module docstring).
    ``date_format`` is a key of ``DATE_FORMATS``; ``timezone`` an IANA name (the exchange's), or None.
    """
    path = Path(path)
    dating = Dating(date_format, timezone)
    try:
        with _open_regular(path) as raw:
            return _read(path, _lines(path, raw), columns, dating)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text ({_first_bad_byte(path)}): save it as UTF-8 (in Excel: CSV UTF-8)") from None
    except csv.Error as exc:  # what the csv module itself refuses (a quoted cell that never closes, say)
        raise DataError(f"{path}: not a CSV of dated prices ({exc}); give a header row, then a date and prices on each row") from None


def _open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file (a FIFO is never read); else a ``DataError`` saying what it is."""
    return open_regular(path, "", "give the path of a CSV of dated prices")


def _lines(path: Path, raw: io.BufferedReader) -> Iterator[str]:
    """The file's lines as text, each at most ``MAX_LINE`` characters (``\\n``, ``\\r\\n`` or ``\\r`` ends one)."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
    number = 0
    while line := text.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise DataError(f"{path}: line {number} is longer than {MAX_LINE:,} characters: is it a CSV of dated prices?")
        if "\x00" in line:
            raise DataError(f"{path}: line {number} holds a NUL byte: is it a CSV (text), not a spreadsheet or other binary file?")
        yield line


def _first_bad_byte(path: Path) -> str:
    """Where the first byte that is not UTF-8 is: ``byte 0xe9 at position 1234`` (0-based, from the start of the file)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk, decoded with this one
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return f"byte 0x{exc.object[exc.start]:02x} at position {offset - pending + exc.start}"
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return f"a character cut short at the end, position {offset - len(exc.object) + exc.start}"
    return "a byte that is not UTF-8"


def _read(path: Path, lines: Iterator[str], columns: list[str] | None, dating: Dating) -> pd.DataFrame:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: the file is empty; expected a header row, then a date and prices on each row")
    header = [h.strip(BLANKS) for h in header]
    if len(header) < 2:
        raise DataError(f"{path}: the header has {len(header)} column(s); expected a date column, then one column per asset")
    for i, name in enumerate(header[1:], start=2):
        if not name:
            raise DataError(f"{path}, row 1: column {i} of the header has no name; name it, or remove the column (a trailing comma?)")
        if header.index(name) != i - 1:
            raise DataError(f"{path}, row 1: column {name!r} appears twice in the header; give each column its own name")
    wanted = columns or header[1:]
    missing = [c for c in wanted if c not in header[1:]]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(map(repr, missing))}; the file has {', '.join(header[1:])}")
    twice = sorted({c for c in wanted if wanted.count(c) > 1})
    if twice:
        raise DataError(f"{path}: column(s) {', '.join(map(repr, twice))} asked for more than once; name each once")
    index = [header.index(c) for c in wanted]
    dates, values, seen = [], [], {}
    for row in reader:
        line = reader.line_num  # the file's line (the header is line 1), blank lines counted
        if not any(cell.strip(BLANKS) for cell in row):
            continue  # a blank line, or a row of empty cells
        where = f"{path}, row {line}"
        if len(row) != len(header):
            cells = f"{len(row)} cell" + ("s" if len(row) != 1 else "")
            raise DataError(f"{where} has {cells} where the header has {len(header)}{_count_hint(row, len(header))}")
        cell = row[0].strip(BLANKS)
        date = dating.date(cell, where, header[0])
        if date in seen:
            read_as = "" if cell == date.isoformat() else f" ({cell!r}{dating.zone_text})"
            raise DataError(f"{where}, column {header[0]!r}: date {date}{read_as} repeats row {seen[date]}")
        seen[date] = line
        values.append([_price(row[i].strip(BLANKS), f"{where}, column {name!r}") for i, name in zip(index, wanted)])
        dates.append(date)
    if len(dates) < 2:
        raise DataError(f"{path}: {len(dates)} row(s) of prices; at least two are needed for a return")
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(dates, name="date"), columns=wanted, dtype="float64")
    return frame.sort_index()


def _count_hint(row: list[str], expected: int) -> str:
    """What to do about a row of the wrong length; a decimal comma (``1,5`` split into two cells) is named as such."""
    cells = [c.strip(BLANKS) for c in row[1:]]
    split = any(re.fullmatch(r"[+-]?[0-9]+", a) and re.fullmatch(r"[0-9]+", b) for a, b in zip(cells, cells[1:]))
    if len(row) > expected and split:
        return ": a decimal comma? quote such numbers or use a decimal point"
    if len(row) > expected:
        return "; every row needs a date and one cell per column of the header (a comma inside a cell must be quoted)"
    return "; every row needs a date and one cell per column of the header (an empty cell for a missing price)"


class Dating:
    """A date cell -> the exchange date it stands for, in one ``data.date_format`` and, optionally, one time zone."""

    def __init__(self, date_format: str = "ISO", timezone: str | None = None):
        if date_format not in DATE_FORMATS:
            raise ValueError(f"unknown date format {date_format!r}; use one of {', '.join(DATE_FORMATS)}")
        self.format = date_format
        written = DATE_FORMATS[date_format][0]
        self.written = written if date_format == "ISO" else f"{written}, data.date_format"
        self.pattern = DATES[date_format]
        self.zone = zoneinfo.ZoneInfo(timezone) if timezone else None
        self.zone_text = f" in {timezone}" if timezone else ""

    def date(self, cell: str, where: str, column: str) -> datetime.date:
        if not cell:
            raise DataError(f"{where}, column {column!r}: the date is missing")
        match = self.pattern.fullmatch(cell)
        try:
            if match is None:
                raise ValueError
            day = datetime.date(int(match["y"]), int(match["m"]), int(match["d"]))
            if match["H"] is None:
                return day
            time = datetime.time(int(match["H"]), int(match["M"]), int(match["S"] or 0))
            offset = _offset(match["tz"]) if match["tz"] else None
            if offset is None or self.zone is None:
                return day  # the date as written: local to the stamp's offset, or to the exchange when it has none
            return datetime.datetime.combine(day, time, tzinfo=offset).astimezone(self.zone).date()
        except ValueError:
            raise DataError(f"{where}, column {column!r}: {cell!r} is not a date ({self.written}){self.hint(cell)}") from None

    def hint(self, cell: str) -> str:
        """What to do about a date in another format: a day and a month in either order is never guessed."""
        other = DAY_MONTH.fullmatch(cell)
        if self.format == "ISO" and other:
            formats = "DD.MM.YYYY" if other[1] == "." else "DD/MM/YYYY or MM/DD/YYYY"
            return f": is it day and month, or month and day? set data.date_format to {formats}"
        return ""


def _offset(text: str) -> datetime.timezone:
    """``Z``, ``+09:00``, ``+0900``, ``-05:00`` as a fixed offset from UTC; ValueError past 23:59."""
    if text == "Z":
        return datetime.UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(text)
    sign = -1 if text[0] == "-" else 1
    return datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))


def _price(text: str, where: str) -> float:
    if text.lower() in NA_CELLS:
        return np.nan
    if NUMBER.fullmatch(text):
        price = float(text)
    elif THOUSANDS.fullmatch(text):
        price = float(text.replace(",", ""))
    elif text.lower() in INFINITE:
        price = np.inf
    elif DECIMAL_COMMA.fullmatch(text):
        raise DataError(f"{where}: {text!r} is not a number: a decimal comma? use a decimal point ({text.replace(',', '.')})")
    else:
        raise DataError(f"{where}: {text!r} is not a number")
    if not np.isfinite(price) or price <= 0:
        raise DataError(f"{where}: price {text} is not positive; prices, not returns, are expected")
    return price
