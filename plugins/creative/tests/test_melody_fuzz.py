"""The melody reader under generated input (hypothesis): any bytes given as a MIDI or MusicXML melody are read as a soprano
line or refused in one ``DataError`` line; nothing else escapes.

2,000 examples in the default suite (a few seconds); a longer run:
``GENFORGE_HYPOTHESIS_EXAMPLES=100000 pytest plugins/creative/tests/test_melody_fuzz.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genforge.core import DataError
from genforge.plugins.creative.music import grid as G
from genforge.plugins.creative.music.melody import read_melody

EXAMPLES = int(os.environ.get("GENFORGE_HYPOTHESIS_EXAMPLES", "2000"))
FOLDER = Path(tempfile.mkdtemp(prefix="genforge-melody-"))
MIDI_HEAD = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk"
XML_HEAD = b'<?xml version="1.0"?><score-partwise version="4.0"><part-list><score-part id="P1"><part-name>S</part-name></score-part></part-list><part id="P1">'


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(head=st.sampled_from([b"", MIDI_HEAD, XML_HEAD]), body=st.binary(max_size=120), suffix=st.sampled_from([".mid", ".musicxml"]))
def test_any_bytes_are_a_melody_or_one_data_error(head, body, suffix):
    path = FOLDER / f"melody{suffix}"
    path.write_bytes(head + body)
    try:
        tokens, info = read_melody(path)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    low, high = G.RANGES["soprano"]
    pitches = [t for t in tokens if t not in (G.REST, G.HOLD)]
    assert info["notes"] > 0 and all(low <= G.token_pitch(t) <= high for t in pitches)
