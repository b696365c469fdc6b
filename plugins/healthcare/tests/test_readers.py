"""The SMILES file reader under generated input (hypothesis): every row is either read as exactly what the file says, or
counted with a reason; nothing else escapes but one ``DataError`` for a file that is no text at all.

2,000 examples in the default suite (a few seconds); a longer run:
``GENFORGE_HYPOTHESIS_EXAMPLES=100000 pytest plugins/healthcare/tests/test_readers.py``.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genforge.core import DataError
from genforge.plugins.healthcare.data import read_smiles_rows

EXAMPLES = int(os.environ.get("GENFORGE_HYPOTHESIS_EXAMPLES", "2000"))
SMILES_CHARS = "CNOSPFIclnos()[]=#@+-123456789%/\\."
cell = st.text(alphabet=SMILES_CHARS + "abc ,\"'\t;é\u00a0", max_size=12)
row = st.lists(cell, min_size=0, max_size=5)
junk = st.binary(max_size=40)
FOLDER = Path(tempfile.mkdtemp(prefix="genforge-readers-"))


def _expected_csv(lines: list[bytes]) -> list[tuple[str, bool]]:
    """What each data row of a CSV holds, parsed independently: (the SMILES cell, readable)."""
    header = next(csv.reader([lines[0].decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")]))
    names = [h.strip().lower() for h in header]
    idx = names.index("smiles")
    out = []
    for raw in lines[1:]:
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
            cells = next(csv.reader([text]), [])
        except (UnicodeDecodeError, csv.Error):
            out.append(("", False))
            continue
        ok = any(c.strip() for c in cells) and len(cells) == len(header)
        out.append((cells[idx].strip() if ok else "", ok))
    return out


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(st.one_of(row.map(lambda r: ("row", r)), junk.map(lambda b: ("bytes", b))), max_size=8), extra_cols=st.integers(0, 2))
def test_every_csv_row_is_read_as_written_or_counted(rows, extra_cols):
    header = ["id", "smiles"] + [f"x{i}" for i in range(extra_cols)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(header)
    lines = [buf.getvalue().encode()]
    for kind, value in rows:
        if kind == "row":
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow(value)
            lines.append(out.getvalue().encode())
        else:
            lines.append(value.replace(b"\n", b" ").replace(b"\r", b" ").replace(b"\x00", b"") + b"\n")
    path = FOLDER / "library.csv"
    path.write_bytes(b"".join(lines))
    try:
        got = list(read_smiles_rows(path))
    except DataError:
        return  # refused whole, in one line (e.g. a multi-line quoted field): fine
    want = _expected_csv(lines)
    assert len(got) == len(want)
    for (smiles, why), (expected, readable) in zip(got, want):
        if why is None:
            assert readable and smiles == expected  # read: exactly the file's SMILES cell, never a neighbour's
        else:
            assert smiles == ""  # counted with a reason, never parsed


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_smi_file_are_rows_or_one_data_error(data):
    path = FOLDER / "any.smi"
    path.write_bytes(data)
    try:
        rows = list(read_smiles_rows(path))
    except DataError:
        assert b"\x00" in data[:8192]  # only a file that is no text at all is refused whole
        return
    text_lines = data.split(b"\n")
    assert len(rows) <= len(text_lines)
    for smiles, why in rows:
        assert (why is None) == bool(smiles)
        assert smiles == "" or (" " not in smiles and "\n" not in smiles and smiles.encode() in data)
