"""Property-based test of the price CSV reader: a frame equal to what the file says, or one ``DataError`` line; nothing else.

Files are small (a header, up to 6 rows, up to 3 price columns) and come from valid dated
price rows, some of them mutated: a cell more or less, an underscore in a number, a decimal
comma (quoted or not), a junk character or byte, a bad or repeated date, blank lines, a
byte-order mark, spaces around a cell, other line endings. ``says`` reads each file by the
documented format (docs/finance.md) on its own, without the reader's code; where it finds the
file valid, ``read_price_csv`` must return exactly its frame, and where not, raise ``DataError``.
Unmutated files are also checked against the numbers they were generated from.

The default run is 2,000 derandomised examples (a few seconds). A longer, random run::

    GENFORGE_HYPOTHESIS_EXAMPLES=100000 PYTHONPATH=... python -m pytest -q -p no:cacheprovider \\
        plugins/finance/tests/test_price_csv_properties.py

(a failure prints the example, and the seed to reproduce it with ``--hypothesis-seed``).
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from genforge.core import DataError
from genforge.plugins.finance.data import read_price_csv

LONG_RUN = os.environ.get("GENFORGE_HYPOTHESIS_EXAMPLES")
SETTINGS = settings(
    max_examples=int(LONG_RUN or 2000),
    deadline=None,
    derandomize=not LONG_RUN,  # the default suite is the same every time; a long run explores anew
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow],
)
NAMES = ["spx", "ndx", "vix"]
NA = ["", "NA", "n/a", "NaN", "null", "."]
JUNK_CHARS = ["_", ",", ";", " ", "\t", '"', "'", "e", "x", "-", ".", "\u00e9", "\u00a0", "\uff11", "\ufeff", "\x00", "\x0b", "\r", "\n"]
JUNK_BYTES = [b"\xe9", b"\xff", b"\xc3", b"\xc3\xa9", b"\xef\xbb\xbf", b"\x00", b'"', b",", b"\n", b"\r"]

# a frame's content, cheap to build and compare: (columns, ((date, prices), ...) by date), a gap as None
Table = tuple[tuple[str, ...], tuple[tuple[datetime.date, tuple[float | None, ...]], ...]]


def table(columns: list[str], rows: list[tuple[datetime.date, list[float]]]) -> Table:
    return tuple(columns), tuple(sorted((d, tuple(None if np.isnan(v) else v for v in values)) for d, values in rows))


def as_table(frame: pd.DataFrame) -> Table:
    """What ``read_price_csv`` returned, as a ``Table``; its form (date index, float64 columns) checked on the way."""
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "date", frame.index
    assert all(dtype == np.float64 for dtype in frame.dtypes), frame.dtypes
    assert frame.index.is_monotonic_increasing and (frame.index == frame.index.normalize()).all()
    return table(list(frame.columns), list(zip((t.date() for t in frame.index), frame.to_numpy().tolist())))


# -- generated files ----------------------------------------------------------------------------


# strategies built once (a strategy made inside a draw is validated anew each time: most of the run's cost)
BYTE = st.integers(0, 255)
MANTISSA = st.integers(1, 10**7)
DAYS = st.lists(st.integers(0, 60), max_size=6, unique=True)
STYLES = ["plain", "exp", "thousands", "signed", "padded", "gap"]


def pick(draw, n: int) -> int:
    """A number in 0..n-1."""
    return draw(BYTE) % n


def choose(draw, options: list):
    return options[pick(draw, len(options))]


def price(draw) -> tuple[str, float]:
    """A price cell as a file may write it, and the number it says (NaN: a gap)."""
    style = choose(draw, STYLES)
    if style == "gap":
        return choose(draw, NA), np.nan
    value = Decimal(draw(MANTISSA)).scaleb(pick(draw, 10) - 6)
    if style == "exp":
        return f"{value:e}", float(value)
    if style == "thousands":
        return f"{value:,f}", float(value)  # "1,234.5" (quoted when written: it holds a comma)
    text = f"{value:f}"
    return {"signed": "+" + text, "padded": f" {text}\t"}.get(style, text), float(value)


@st.composite
def price_files(draw) -> tuple[bytes, list[str] | None, Table | None]:
    """(the file's bytes, the columns asked for, what it holds when unmutated and valid, else None)."""
    names = NAMES[: 1 + pick(draw, 3)]
    rows, truth = [], []
    for day in draw(DAYS):
        date = datetime.date(2020, 1, 1) + datetime.timedelta(days=day)
        cells = [price(draw) for _ in names]
        rows.append([date.isoformat()] + [text for text, _ in cells])
        truth.append((date, [value for _, value in cells]))
    columns = None if pick(draw, 3) else [n for n in names if pick(draw, 2)] or None
    lines = [["date", *names], *rows]
    mutations = [choose(draw, MUTATIONS) for _ in range(max(0, pick(draw, 6) - 2))]  # none in half the files
    for mutate in mutations:
        mutate(draw, lines)
    out = io.StringIO()
    csv.writer(out, lineterminator=choose(draw, ["\n", "\r\n", "\r"])).writerows(lines)
    data = choose(draw, [b"", b"\xef\xbb\xbf"]) + out.getvalue().encode()
    if not pick(draw, 5):  # a fifth of the files: a raw byte (or a few) somewhere
        at = pick(draw, len(data) + 1) if len(data) < 256 else draw(st.integers(0, len(data)))
        data = data[:at] + choose(draw, JUNK_BYTES) + data[at:]
        mutations.append("bytes")
    if mutations or len(truth) < 2:
        return data, columns, None
    wanted = columns or names
    return data, columns, table(wanted, [(d, [values[names.index(c)] for c in wanted]) for d, values in truth])


def _row(draw, lines) -> list[str] | None:
    return lines[1 + pick(draw, len(lines) - 1)] if len(lines) > 1 else None


def _cell(draw, lines) -> tuple[list[str], int] | None:
    row = _row(draw, lines)
    return (row, pick(draw, len(row))) if row else None


def extra_cell(draw, lines):
    if (row := _row(draw, lines)) is not None:
        row.insert(pick(draw, len(row) + 1), choose(draw, ["5", "", "x", "101.5"]))


def missing_cell(draw, lines):
    if row := _row(draw, lines):
        row.pop(pick(draw, len(row)))


def insert(draw, text: str, char: str) -> str:
    at = pick(draw, len(text) + 1)
    return text[:at] + char + text[at:]


def underscore(draw, lines):
    if found := _cell(draw, lines):
        row, i = found
        row[i] = insert(draw, row[i], "_")


def decimal_comma(draw, lines):
    if found := _cell(draw, lines):
        row, i = found
        comma = row[i].replace(".", ",")
        if pick(draw, 2):
            row[i] = comma  # quoted when written: one cell "1,5"
        else:
            row[i : i + 1] = comma.split(",")  # unquoted: 1,5 is two cells


def junk_char(draw, lines):
    if found := _cell(draw, lines):
        row, i = found
        row[i] = insert(draw, row[i], choose(draw, JUNK_CHARS))


def bad_date(draw, lines):
    if row := _row(draw, lines):
        other = _row(draw, lines)[:1]  # another row's date: a repeat
        row[:1] = [choose(draw, ["2020-02-30", "2020-01", "20200102", "2020/01/02", "", *other])]


def blank_line(draw, lines):
    lines.insert(1 + pick(draw, len(lines)), choose(draw, [[], [""] * len(lines[0]), [" "]]))


def not_a_price(draw, lines):
    if (found := _cell(draw, lines)) and found[1] > 0:
        row, i = found
        row[i] = choose(draw, ["0", "-5", "-0.0", "1e999", "inf", "1e-999"])


MUTATIONS = [extra_cell, missing_cell, underscore, decimal_comma, junk_char, bad_date, blank_line, not_a_price]


# -- the documented format, read without the reader's code -------------------------------------------


def says(data: bytes, columns: list[str] | None) -> Table | None:
    """The prices a file holds by the documented format, or None where it breaks a rule (then the reader must refuse it)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        return None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None
    if not rows:
        return None
    header = [h.strip(" \t") for h in rows[0]]
    names = header[1:]
    if len(header) < 2 or "" in names or len(set(names)) < len(names):
        return None
    wanted = columns or names
    if any(c not in names for c in wanted):
        return None
    dates, values = [], []
    for row in rows[1:]:
        cells = [c.strip(" \t") for c in row]
        if not any(cells):
            continue
        if len(cells) != len(header):
            return None
        date = as_date(cells[0])
        if date is None or date in dates:
            return None
        prices = [as_price(cells[header.index(c)]) for c in wanted]
        if any(p is None for p in prices):
            return None
        dates.append(date)
        values.append(prices)
    if len(dates) < 2:
        return None
    return table(wanted, list(zip(dates, values)))


def as_date(cell: str) -> datetime.date | None:
    """YYYY-MM-DD, ASCII digits, a real calendar day (no time of day is generated)."""
    parts = cell.split("-")
    if len(cell) != 10 or [len(p) for p in parts] != [4, 2, 2] or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    try:
        return datetime.date(*map(int, parts))
    except ValueError:
        return None


def as_price(cell: str) -> float | None:
    """A gap (NaN), a positive finite number written plainly or grouped in thousands, or None."""
    if cell.lower() in {na.lower() for na in NA}:
        return np.nan

    def digits(text: str) -> bool:
        return text.isascii() and text.isdigit()

    if "," in cell:  # grouped in thousands: unsigned, no exponent, "1,234" or "1,234.5"
        whole, point, fraction = cell.partition(".")
        groups = whole.split(",")
        if not (all(map(digits, groups)) and len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
            return None
        if point and not digits(fraction):
            return None
    else:  # [sign] digits [. digits] [e [sign] digits], at least one digit before the exponent
        body = cell[1:] if cell[:1] in ("+", "-") else cell
        mantissa, e, exponent = body.replace("E", "e").partition("e")
        if e and not digits(exponent[1:] if exponent[:1] in ("+", "-") else exponent):
            return None
        whole, _, fraction = mantissa.partition(".")
        if not (whole or fraction) or not all(digits(part) for part in (whole, fraction) if part):
            return None
    value = float(Decimal(cell.replace(",", "")))
    return value if np.isfinite(value) and value > 0 else None


# -- the property ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="price-csv-") as tmp:
        yield Path(tmp)


@SETTINGS
@given(case=price_files())
def test_the_reader_returns_what_the_file_says_or_one_dataerror_line(folder, case):
    data, columns, generated = case
    path = folder / "prices.csv"
    path.write_bytes(data)
    want = says(data, columns)
    if generated is not None:  # unmutated: the independent reading agrees with the numbers written
        assert want == generated, (data, want, generated)
    try:
        got = read_price_csv(path, columns)
    except DataError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message, message
        assert want is None, f"refused a file the format allows: {message}\n{data!r}"
        event("refused")
        return
    assert want is not None, f"read a file the format refuses:\n{data!r}\n{got}"
    event("read")
    assert as_table(got) == want, f"read differently from what the file says:\n{data!r}\n{got}\nthe file says {want}"
