"""The final cadence as a sampling rule: a piece ends on a dominant, then a held root-position tonic.

Bach's chorales end on a root-position tonic in about 85 % of pieces (FIELD_NOTES), nearly
always by an authentic cadence (V–I) under a fermata. A model that sees one bar back does not
know where the piece ends, so left to itself it stops mid-phrase; ``ending_rule`` is a
``constraint`` for ``Autoregressive.sample`` (as ``counterpoint.voice_rules`` is) that writes
the ending by construction:

- where: a free piece's final chord is its last half note (8 sixteenths), the dominant the beat
  before it; a harmonised melody's final chord is struck with the melody's last note and the
  dominant with the note before it (``plan_endings``); phrases end, each on I or V in root
  position held as under a fermata, at a given melody's fermatas, and in a free piece every
  ``sample.phrase_bars`` bars (its last half note);
- the key: decided at each cadence (a phrase end, the final dominant), from everything sounding before it
  (``harmony.key_of``; a given melody counts whole, its last note weighted as a likely tonic);
  with a home-key model (``model.home_key``) the candidates are its two keys, C major and A minor;
- at the dominant: the bass on the fifth degree; the upper voices drawn there on notes of V7
  (5, 7, 2, 4 — the leading tone raised in minor) where a given soprano allows, else free;
  the bass held until the final chord;
- at the final chord: the bass on the tonic, the upper voices on the tonic triad, the third
  in the tenor if neither voice above has it; then every drawn voice held to the end (the
  fermata).

The model still chooses the voicing, the octave and the approach; the counterpoint rules keep
applying. Where the two together forbid every note, the final cadence wins over them, and the
counterpoint rules win over a phrase end (``combine``, in that order of precedence): a piece
always ends on its tonic, and a phrase end never makes a parallel.
The evaluator's ``final_cadence`` is therefore 1 by construction for pieces sampled with
``sample.final_cadence`` — the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import grid as G
from .counterpoint import decode
from .harmony import ALL_KEYS, DOMINANT_SEVENTH, Key, key_of

FINAL = 8  # sixteenths of a free piece's final chord (a half note)
DOMINANT = 4  # sixteenths of the dominant before it (a beat)
HOME_KEYS = (Key(0, False), Key(9, True))  # a home-key model writes in C major or A minor
Rule = Callable[[torch.Tensor, int], torch.Tensor | None]


@dataclass
class Endings:
    """Where each piece's ending lies, and its key once decided."""

    final: np.ndarray  # (B,) step the final chord is struck
    dominant: np.ndarray  # (B,) step the dominant is struck
    melody: np.ndarray | None  # (B, L) given soprano pitches (-1: none), for the key
    candidates: tuple[Key, ...] = ALL_KEYS
    keys: dict[tuple[int, int], Key] = field(default_factory=dict)  # (piece, cadence step) -> the key decided there
    phrases: dict[int, int] = field(default_factory=dict)  # a phrase-end chord's step -> the step it is held to

    def key(self, b: int, sounding: np.ndarray, cadence: int) -> Key:
        """Piece ``b``'s key at the cadence struck at step ``cadence``, decided once from ``sounding`` (4, S) pitches
        before it (cells not drawn yet are silent) and the piece's given melody."""
        if (b, cadence) not in self.keys:
            p = sounding[:, :cadence]
            w = np.bincount(p[p >= 0] % 12, minlength=12).astype(float)
            if self.melody is not None and (self.melody[b] >= 0).any():
                m = self.melody[b]
                w += np.bincount(m[m >= 0] % 12, minlength=12)
                w[m[m >= 0][-1] % 12] += 0.25 * w.sum()  # a melody's last note: most often the tonic
            self.keys[(b, cadence)] = key_of(w, self.candidates) or self.candidates[0]
        return self.keys[(b, cadence)]


def plan_endings(given: torch.Tensor, home: bool, fermatas: list[int] | None = None, phrase_bars: int | None = None) -> Endings:
    """The final and dominant steps of each piece of ``given`` (B, 4, L): a free piece's last half note and the beat
    before; with a given soprano, its last note's onset and the onset of the note before (at most a bar before).
    ``fermatas``: steps of given melody notes under a fermata — phrase ends, each a cadence (``ending_rule``);
    ``phrase_bars``: free pieces end a phrase every this many 4/4 bars, on a chord held its last half note."""
    x = given.cpu().numpy()
    n, _, length = x.shape
    final = np.full(n, max(length - FINAL, 1))
    dominant = np.maximum(final - DOMINANT, 0)
    melody = None
    known = (x[:, 0] != G.MASK).any(axis=1)
    if known.any():
        soprano = np.where(x[:, 0] == G.MASK, G.REST, x[:, 0])
        as_grids = np.repeat(soprano[:, None], 4, axis=1)  # (B, 4, L): the decoders read whole grids
        melody, onsets = G.pitches(as_grids)[:, 0], G.onsets(as_grids)[:, 0]
        for b in np.flatnonzero(known):
            struck = np.flatnonzero(onsets[b])
            if len(struck) >= 2:
                final[b], dominant[b] = struck[-1], max(struck[-2], struck[-1] - 16)
    phrases = {}
    if fermatas and melody is not None:
        row = np.flatnonzero(known)[0]
        struck = np.flatnonzero(onsets[row])
        for f in fermatas:
            later = struck[struck > f]
            if f in struck and len(later) and f < final[row]:  # the last note's fermata is the final cadence itself
                phrases[int(f)] = int(later[0])
    if phrase_bars and not known.any():
        every = phrase_bars * 16
        phrases = {k - FINAL: k for k in range(every, length, every) if k <= int(final.min()) - DOMINANT}
    return Endings(final, dominant, melody, HOME_KEYS if home else ALL_KEYS, {}, phrases)


def ending_rule(endings: Endings, before: torch.Tensor, bounds: torch.Tensor | None = None, part: str = "final") -> Rule:
    """The ending as a ``constraint`` for one window of time-major tokens; ``before`` (B, 4, S): the steps ahead of it;
    ``bounds`` (B, 4, 2): each voice's range (as ``voice_rules`` takes it), kept by the ending's notes where it can be.
    ``part``: ``"final"`` (the final cadence) or ``"phrases"`` (the phrase ends before it): two rules, so that the
    sampler can rank them — the final cadence above the counterpoint rules, the phrase ends below them."""
    n_pitches = G.PITCH_HIGH - G.PITCH_LOW + 1
    cand = torch.arange(G.PITCH_LOW, G.PITCH_HIGH + 1)
    pcs = cand % 12
    outside = None if bounds is None else (cand[None, None] < bounds[:, :, :1].cpu()) | (cand[None, None] > bounds[:, :, 1:].cpu())
    start = before.shape[2]

    def only(pc_set) -> torch.Tensor:
        return ~torch.isin(pcs, torch.tensor(sorted(pc_set)))

    def rule(seq: torch.Tensor, i: int) -> torch.Tensor | None:
        t, j = divmod(i, 4)
        step = start + t
        if part == "phrases":
            phrase_end = next((f for f, e in endings.phrases.items() if f <= step < e), None)
            rows = np.flatnonzero(step < endings.dominant) if phrase_end is not None else np.zeros(0, int)
        else:
            phrase_end = None
            rows = np.flatnonzero(step >= endings.dominant)
        if not len(rows):
            return None
        window = seq[:, : 4 * (t + 1)].reshape(len(seq), t + 1, 4).transpose(1, 2)
        p, _ = decode(torch.cat([before.to(seq.device), window], dim=2))  # cells not drawn yet read as rests
        p = p.cpu()
        sounding = p.numpy()
        banned = torch.zeros(len(seq), G.N_TOKENS, dtype=torch.bool)
        for b in rows:
            dom, fin = int(endings.dominant[b]), int(endings.final[b])
            key = endings.key(int(b), sounding[b], phrase_end if step < dom and phrase_end is not None else dom)
            held = int(p[b, j, step - 1]) if step else -1
            allowed: set[int] | None = None  # pitch classes a struck note may take here (None: any)
            hold_only = False
            if step < dom and phrase_end is not None:  # a phrase end: I under a note of the tonic triad, else V under one of V's
                top = int(p[b, 0, phrase_end])
                v = {(key.tonic + d) % 12 for d in DOMINANT_SEVENTH[:3]}
                if top < 0 and j == 0 and step == phrase_end:  # a free soprano: a note of I or of V
                    allowed = set(key.triad) | v
                else:
                    chord = None if top < 0 else set(key.triad) if top % 12 in key.triad else v if top % 12 in v else None
                    if chord is not None and step == phrase_end:
                        root = key.tonic if chord == set(key.triad) else (key.tonic + 7) % 12
                        allowed = {root} if j == 3 else chord
                    elif chord is not None:
                        hold_only = True  # the chord held to the phrase's end (a given soprano is not drawn)
            elif step == dom:
                if j == 3:
                    allowed = {(key.tonic + 7) % 12}
                else:
                    v7 = {(key.tonic + d) % 12 for d in DOMINANT_SEVENTH}
                    top = int(p[b, 0, step])
                    allowed = v7 if (j == 0 or top < 0 or top % 12 in v7) else None
            elif dom < step < fin:
                hold_only = j == 3
            elif step == fin:
                triad = set(key.triad)
                # the bass will move from V to I: a voice a fifth or octave above it moving to the same interval above
                # the tonic would make parallels, so that pitch class is left out (holding the note stays allowed)
                here, bass = (int(p[b, j, step - 1]), int(p[b, 3, step - 1])) if step else (-1, -1)
                if j < 3 and here >= 0 and bass >= 0 and (here - bass) % 12 in (0, 7):
                    triad = triad - {(key.tonic + here - bass) % 12} or triad
                if j == 3:
                    allowed = {key.tonic}
                elif j == 2 and not any(int(p[b, u, step]) % 12 == key.triad[1] for u in (0, 1) if int(p[b, u, step]) >= 0):
                    allowed = {key.triad[1]}
                else:
                    allowed = triad
            elif step > fin:
                hold_only = True
            row = banned[b]
            if hold_only:
                row[:] = True
                row[G.HOLD] = False
            elif allowed is not None:
                row[G.REST] = True
                row[2 : 2 + n_pitches] = only(allowed)
                if outside is not None and not (row[2 : 2 + n_pitches] | outside[b, j]).all():
                    row[2 : 2 + n_pitches] |= outside[b, j]  # in the voice's range where the range has such a note
                row[G.HOLD] = held < 0 or held % 12 not in allowed
        return banned.to(seq.device)

    return rule


def combine(*rules: Rule | None) -> Rule | None:
    """One constraint from several, in order of precedence: each rule after the first is added to those before it
    wherever that still leaves a token to draw (for a row it would empty, it is left out)."""
    rules = [r for r in rules if r is not None]
    if not rules:
        return None
    if len(rules) == 1:
        return rules[0]
    first, rest = rules[0], rules[1:]

    def rule(seq: torch.Tensor, i: int) -> torch.Tensor | None:
        bans = [r(seq, i) for r in rest]
        own = first(seq, i)
        out = own
        for ban in bans:
            if ban is None:
                continue
            if out is None:
                out = ban
                continue
            both = out | ban.to(out.device)
            out = torch.where(both[:, : G.VOCAB].all(-1, keepdim=True), out, both)
        return out

    return rule
