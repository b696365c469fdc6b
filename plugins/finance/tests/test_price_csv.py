"""A user's price CSV read strictly: a row of the wrong length, a loose number, a file that is not text or not a file.

Each case was read silently wrong, or failed with a raw exception, before the reader was made
strict (the "Nothing silently wrong" probe); each must now be one ``DataError`` line naming
the file and what to do. The property-based test of the same reader is ``test_price_csv_properties.py``.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genforge.core import DataError
from genforge.plugins.finance.data import read_price_csv


def write(tmp_path: Path, data: str | bytes, name: str = "prices.csv") -> Path:
    f = tmp_path / name
    f.write_bytes(data.encode() if isinstance(data, str) else data)
    return f


def refused(path: Path, pattern: str, columns: list[str] | None = None, **settings: str) -> str:
    """The one-line ``DataError`` reading ``path`` (with ``date_format`` or ``timezone``) gives; it names the file."""
    with pytest.raises(DataError, match=pattern) as info:
        read_price_csv(path, columns, **settings)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    return message


# -- rows of the wrong length -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "date,spx\n2016-07-13,2.31\n2016-07-14,1,5\n2016-07-15,2.4\n",  # the probe's row: read as a price of 1 before
        "date,spx,ndx\n2016-07-13,2.31,4\n2016-07-14,2,5,4\n",  # digits,digits among the prices
        "date,spx\n2016-07-13,2.31\n2016-07-14,-1,5\n",
    ],
    ids=["one-column", "two-columns", "signed"],
)
def test_a_row_with_a_cell_more_than_the_header_is_refused_as_a_decimal_comma(tmp_path, text):
    header = len(text.splitlines()[0].split(","))
    message = refused(write(tmp_path, text), rf"row 3 has {header + 1} cells where the header has {header}: a decimal comma\?")
    assert message.endswith("quote such numbers or use a decimal point")


def test_a_row_with_other_extra_cells_is_refused_with_the_count(tmp_path):
    message = refused(write(tmp_path, "date,spx\n2016-07-13,2.31\n2016-07-14,2.4,note\n"), r"row 3 has 3 cells where the header has 2")
    assert "decimal comma" not in message
    trailing_commas = "date,spx\n2016-07-13,2.31,\n2016-07-14,2.4,\n"
    refused(write(tmp_path, trailing_commas), r"row 2 has 3 cells where the header has 2")


def test_a_row_with_fewer_cells_than_the_header_is_refused_not_read_as_a_gap(tmp_path):
    # before: the missing ndx cell was a gap, the row silently kept
    f = write(tmp_path, "date,spx,ndx\n2020-01-02,100,200\n2020-01-03,101\n2020-01-06,102,203\n")
    refused(f, r"row 3 has 2 cells where the header has 3; .*an empty cell for a missing price")
    refused(f, r"row 3 has 2 cells where the header has 3", columns=["spx"])  # even when ndx is not asked for
    refused(write(tmp_path, "date,spx\n2020-01-02,100\n2020-01-03\n"), r"row 3 has 1 cell where the header has 2")


def test_the_decimal_comma_through_the_cli_stops_the_run_in_one_line(tmp_path, store):
    from genforge.flows.cli import invoke

    f = write(tmp_path, "date,spx\n2016-07-13,2.31\n2016-07-14,1,5\n2016-07-15,2.4\n")
    r = invoke("run", "gaussian", "--no-prefect", "--set", f"data.path={f}")
    assert r.code == 2 and "Traceback" not in r.stderr
    said = "has 3 cells where the header has 2: a decimal comma? quote such numbers or use a decimal point"
    assert r.stderr.strip() == f"error: {f}, row 3 {said}"


# -- numbers and dates, strictly -------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell, pattern",
    [
        ("1_000", r"'1_000' is not a number"),  # float() reads 1000
        ("１００", r"'１００' is not a number"),  # fullwidth digits: float() reads 100
        ("\u00a0100", r"'\\xa0100' is not a number"),  # a no-break space is not stripped like a space
        ('"1,000,00"', r"'1,000,00' is not a number"),
        ('"1,5"', r"'1,5' is not a number: a decimal comma\? use a decimal point \(1\.5\)"),
        ("0x10", r"'0x10' is not a number"),
        ("1.2.3", r"'1.2.3' is not a number"),
        ("Infinity", r"price Infinity is not positive"),
    ],
    ids=["underscore", "fullwidth", "no-break-space", "bad-grouping", "quoted-decimal-comma", "hex", "two-points", "infinity"],
)
def test_a_number_is_digits_a_point_and_an_exponent_only(tmp_path, cell, pattern):
    refused(write(tmp_path, f"date,spx\n2020-01-02,100\n2020-01-03,{cell}\n"), rf"row 3, column 'spx': {pattern}")


def test_the_numbers_the_format_allows_read_exactly(tmp_path):
    text = 'date,spx\n2020-01-02, 101.5 \n2020-01-03,"1,234.5"\n2020-01-06,1.5e2\n2020-01-07,+7\n2020-01-08,.25\n2020-01-09,NA\n'
    prices = read_price_csv(write(tmp_path, text))
    assert prices["spx"].tolist()[:5] == [101.5, 1234.5, 150.0, 7.0, 0.25] and np.isnan(prices["spx"].iloc[5])


@pytest.mark.parametrize("cell", ["2020-01", "2020", "20200103", "2020/01/03", "2020-1-3", "03.01.2020"])
def test_a_date_is_year_month_day(tmp_path, cell):
    # pandas' ISO 8601 parser reads 2020-01 and 2020 as the first of the month or year
    refused(write(tmp_path, f"date,spx\n2020-01-02,100\n{cell},101\n"), rf"row 3, column 'date': '{cell}' is not a date \(YYYY-MM-DD\)")


def test_a_time_of_day_after_the_date_is_dropped(tmp_path):
    prices = read_price_csv(write(tmp_path, "date,spx\n2020-01-02 00:00:00,100\n2020-01-03T16:30,101\n"))
    assert list(prices.index) == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")]


def test_a_header_column_without_a_name_or_named_twice_is_refused(tmp_path):
    refused(write(tmp_path, "date,spx,\n2020-01-02,100,\n2020-01-03,101,\n"), r"row 1: column 3 of the header has no name")
    refused(write(tmp_path, "date,spx,spx\n2020-01-02,100,1\n2020-01-03,101,2\n"), r"column 'spx' appears twice in the header")
    refused(write(tmp_path, "date,spx,ndx\n2020-01-02,100,1\n2020-01-03,101,2\n"), r"'spx' asked for more than once", ["spx", "spx"])


# -- files that are not text, or not files -------------------------------------------------------------


def test_a_latin1_file_names_the_byte_and_its_position(tmp_path):
    text = "date,caf\u00e9\n2020-01-02,100\n2020-01-03,101\n"
    f = write(tmp_path, text.encode("latin-1"))
    assert refused(f, "is not UTF-8 text") == f"{f} is not UTF-8 text (byte 0xe9 at position 8): save it as UTF-8 (in Excel: CSV UTF-8)"


def test_a_bad_byte_far_into_the_file_is_placed_from_the_start_of_the_file(tmp_path):
    rows = "".join(f"{d.date()},{100 + i}\n" for i, d in enumerate(pd.bdate_range("2000-01-03", periods=20_000)))
    data = ("date,spx\n" + rows).encode() + b"2100-01-01,\xff\n"
    refused(write(tmp_path, data), rf"byte 0xff at position {len(data) - 2}\)")


def test_binary_files_are_refused_in_one_line(tmp_path):
    refused(write(tmp_path, bytes(range(256)) * 20, "random.bin"), r"is not UTF-8 text \(byte 0x80 at position 128\)")
    refused(write(tmp_path, b"PK\x03\x04\x14\x00\x00\x00", "book.xlsx"), r"line 1 holds a NUL byte: is it a CSV")
    utf16 = "date,spx\n2020-01-02,100\n".encode("utf-16")  # Excel's "Unicode text"
    refused(write(tmp_path, utf16, "utf16.csv"), r"is not UTF-8 text \(byte 0xff at position 0\): save it as UTF-8")


def test_a_line_longer_than_the_limit_is_refused_without_reading_it_whole(tmp_path):
    from genforge.plugins.finance import price_csv

    f = tmp_path / "one-line.csv"
    with open(f, "w") as fh:
        fh.write("date,spx\n2020-01-02,")
        fh.write("7" * (50 << 20))  # 50 MB: before, csv's "field larger than field limit (131072)"
        fh.write("\n")
    refused(f, rf"line 2 is longer than {price_csv.MAX_LINE:,} characters: is it a CSV of dated prices\?")


def test_an_unclosed_quote_is_one_line(tmp_path):
    refused(write(tmp_path, 'date,spx\n2020-01-02,"100\n' + "2020-01-03,101\n" * 20_000), r"not a CSV of dated prices")


def test_a_folder_a_missing_file_and_a_symlink_loop_are_named(tmp_path):
    refused(tmp_path, r"is a folder; give the path of a CSV of dated prices")
    refused(tmp_path / "nope.csv", r"does not exist")
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    refused(loop, r"is a loop of symbolic links")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "prices.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []

    def read() -> None:
        try:
            outcome.append(read_price_csv(fifo))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked in open(): give it a writer and an end of file, then fail
        with open(fifo, "w"):
            pass
        reader.join(10)
        pytest.fail("reading a FIFO blocked until something wrote to it")
    assert isinstance(outcome[0], DataError) and str(outcome[0]) == (
        f"{fifo} is not a regular file (a FIFO, a device or a socket); give the path of a CSV of dated prices"
    )


def test_line_endings_and_a_byte_order_mark_read_the_same(tmp_path):
    want = read_price_csv(write(tmp_path, "date,spx\n2020-01-02,100\n2020-01-03,101\n"))
    for i, text in enumerate(["\ufeffdate,spx\r\n2020-01-02,100\r\n2020-01-03,101\r\n", "date,spx\r2020-01-02,100\r2020-01-03,101\r"]):
        pd.testing.assert_frame_equal(read_price_csv(write(tmp_path, text, f"{i}.csv")), want)


def test_prepare_names_a_folder_given_as_data_path(tmp_path, store):
    from genforge.core.runner import Steps, create_run

    run = create_run("gaussian", overrides=["data.start=null", "data.test_start=null", f"data.path={tmp_path}"])
    with pytest.raises(DataError, match=rf"^{tmp_path} is a folder; give the path of a CSV of dated prices$"):
        Steps(run).prepare()


# -- time stamps and date formats -------------------------------------------------------------------


def stamped(dates: pd.DatetimeIndex, stamp: str) -> str:
    """A one-asset price file whose dates are written ``{date}`` + ``stamp`` (``T21:00:00Z``, say)."""
    return "date,spx\n" + "".join(f"{d.date()}{stamp},{100 + i}\n" for i, d in enumerate(dates))


def test_a_time_with_a_utc_offset_is_dated_as_written_or_in_the_exchanges_zone(tmp_path):
    dates = pd.bdate_range("2016-01-04", periods=30, name="date")
    plain = read_price_csv(write(tmp_path, stamped(dates, ""), "plain.csv"))
    for i, stamp in enumerate(["T21:00:00Z", " 16:00:00-05:00", "T06:00:00+0900", "T16:00-05:00", "T21:00:00.000Z"]):
        f = write(tmp_path, stamped(dates, stamp), f"{i}.csv")
        pd.testing.assert_frame_equal(read_price_csv(f), plain)  # the date as written
    # the New York close is 21:00 UTC in winter: dated in New York, the same days; in Tokyo, the next morning
    utc = write(tmp_path, stamped(dates, "T21:00:00Z"), "utc.csv")
    pd.testing.assert_frame_equal(read_price_csv(utc, timezone="America/New_York"), plain)
    tokyo = read_price_csv(utc, timezone="Asia/Tokyo")
    assert list(tokyo.index) == list(dates + pd.Timedelta(days=1)) and tokyo["spx"].tolist() == plain["spx"].tolist()
    # a stamp without an offset is the exchange's own time: dated as written in any zone
    pd.testing.assert_frame_equal(read_price_csv(write(tmp_path, stamped(dates, "T16:00"), "n.csv"), timezone="Asia/Tokyo"), plain)


def test_two_stamps_on_one_exchange_date_are_a_repeated_date(tmp_path):
    f = write(tmp_path, "date,spx\n2016-01-04T21:00:00Z,100\n2016-01-05T01:00:00Z,101\n2016-01-06T21:00:00Z,102\n")
    assert len(read_price_csv(f)) == 3  # as written: three dates
    message = refused(f, r"row 3, column 'date': date 2016-01-04", timezone="America/New_York")
    assert message.endswith("date 2016-01-04 ('2016-01-05T01:00:00Z' in America/New_York) repeats row 2")


@pytest.mark.parametrize("cell", ["2016-01-05T25:00:00Z", "2016-01-05T16:00:00+2500", "2016-01-05T16:00:00 UTC", "2016-01-05Z"])
def test_a_time_or_offset_that_is_not_one_is_refused(tmp_path, cell):
    refused(
        write(tmp_path, f"date,spx\n2016-01-04,100\n{cell},101\n"),
        rf"row 3, column 'date': '{re.escape(cell)}' is not a date \(YYYY-MM-DD\)",
    )


def test_a_date_format_reads_its_dates_and_only_them(tmp_path):
    text = "date,spx\n03/04/2016,100\n04/04/2016,101\n5/4/2016 16:00,102\n"
    us = read_price_csv(write(tmp_path, text), date_format="MM/DD/YYYY")
    assert [str(d.date()) for d in us.index] == ["2016-03-04", "2016-04-04", "2016-05-04"]
    eu = read_price_csv(write(tmp_path, text), date_format="DD/MM/YYYY")
    assert [str(d.date()) for d in eu.index] == ["2016-04-03", "2016-04-04", "2016-04-05"]
    dots = read_price_csv(write(tmp_path, text.replace("/", "."), "dots.csv"), date_format="DD.MM.YYYY")
    assert dots.index.equals(eu.index)
    # never guessed: a day and a month while the format is ISO (pandas would read March 4)
    message = refused(write(tmp_path, text), r"row 2, column 'date': '03/04/2016' is not a date \(YYYY-MM-DD\)")
    assert message.endswith("is it day and month, or month and day? set data.date_format to DD/MM/YYYY or MM/DD/YYYY")
    refused(write(tmp_path, text.replace("/", "."), "dots.csv"), r"'03\.04\.2016' is not a date \(YYYY-MM-DD\): .* to DD\.MM\.YYYY$")
    # a row in another format than the one configured names row, column and the format expected
    mixed = write(tmp_path, "date,spx\n03/04/2016,100\n2016-04-04,101\n", "mixed.csv")
    refused(mixed, r"row 3, column 'date': '2016-04-04' is not a date \(DD/MM/YYYY, data.date_format\)$", date_format="DD/MM/YYYY")
    refused(write(tmp_path, "date,spx\n31/04/2016,100\n01/05/2016,101\n"), r"row 2, .*'31/04/2016' is not a date", date_format="DD/MM/YYYY")
