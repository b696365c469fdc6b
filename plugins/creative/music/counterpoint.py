"""Counterpoint as sampling rules: the faults the evaluator counts, never drawn.

Left-to-right sampling draws the grid time-major (step t: soprano, alto, tenor, bass), so
when voice j is drawn at step t every voice above it is already decided at t and every voice
at every earlier step. ``voice_rules`` is the ``constraint`` of ``Autoregressive.sample``; it
forbids, for voice j at step t:

- parallels (``banned_pitches``): the pitch tokens that would, with any voice above, make a
  parallel fifth or octave (unison included) by the evaluator's definition (``metrics.parallels``)
  — both voices sounding since their previous sonority, both moving in the same direction,
  the interval mod 12 a fifth (7) or an octave (0) at both sonorities;
- crossings (``metrics.voice_crossings``): a pitch above the voice just above it at t, or
  holding a note that the voice above has moved below; and where the voice just below is
  given at t (a bass to re-voice over), a pitch or a held note below it — so no drawn voice
  sounds above the one over it or below a given one under it;
- range: a pitch outside bounds given per piece and voice (a voice's usual range, moved with
  the key the piece will be written in).

``REST`` is never forbidden, so there is always a token left to draw; holding, resting,
oblique and contrary motion are never forbidden by the parallels rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import grid as G

PERFECT = (0, 7)  # unison/octave and fifth, mod 12


def decode(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4, L) tokens -> (pitch sounding or -1, struck) per cell: ``grid.pitches`` and ``grid.onsets``, on the tokens' device."""
    grids = tokens.cpu().numpy()
    return torch.from_numpy(G.pitches(grids)).to(tokens.device), torch.from_numpy(G.onsets(grids)).to(tokens.device)


def banned_pitches(p: torch.Tensor, struck: torch.Tensor, t: int, j: int) -> torch.Tensor:
    """(B, n_pitches) bool: the pitches voice ``j`` may not strike at step ``t`` (voices above decided at t).

    p, struck: (B, 4, >= t + 1) from ``decode``; column t of voice j is ignored.
    """
    cand = torch.arange(G.PITCH_LOW, G.PITCH_HIGH + 1, device=p.device)
    banned = torch.zeros(p.shape[0], len(cand), dtype=torch.bool, device=p.device)
    if t == 0:
        return banned
    steps = torch.arange(t, device=p.device)
    pj = p[:, j, :t]
    for u in range(j):
        pu = p[:, u, : t + 1]
        both = (pu[:, :t] >= 0) & (pj >= 0)
        sonority = both & (struck[:, u, :t] | struck[:, j, :t])
        last_gap = torch.where(~both, steps, torch.full_like(steps, -1)).amax(-1)
        a = torch.where(sonority, steps, torch.full_like(steps, -1)).amax(-1)  # the pair's previous sonority
        ok = (a > last_gap) & (pu[:, t] >= 0)  # both sounding from it up to t, and voice u sounds at t
        a = a.clamp(min=0)[:, None]
        pu_a, pj_a = pu.gather(1, a)[:, 0], pj.gather(1, a)[:, 0]
        du = pu[:, t] - pu_a
        before = (pu_a - pj_a).abs() % 12
        after = (pu[:, t, None] - cand[None]).abs() % 12
        dj = cand[None] - pj_a[:, None]
        perfect = (before == PERFECT[0]) | (before == PERFECT[1])
        banned |= (ok & (du != 0) & perfect)[:, None] & (torch.sign(dj) == torch.sign(du)[:, None]) & (after == before[:, None])
    return banned


def voice_rules(
    before: torch.Tensor, *, parallels: bool = True, crossings: bool = True, bounds: torch.Tensor | None = None
) -> Callable[[torch.Tensor, int], torch.Tensor | None] | None:
    """The rules for one window of time-major tokens (None when none is asked for).

    before: (B, 4, S) the piece's steps ahead of the window. bounds: (B, 4, 2) the lowest and
    highest MIDI pitch each voice of each piece may strike (None: no range rule).
    """
    if not (parallels or crossings or bounds is not None):
        return None
    cand = torch.arange(G.PITCH_LOW, G.PITCH_HIGH + 1)
    outside = None if bounds is None else (cand[None, None] < bounds[:, :, :1]) | (cand[None, None] > bounds[:, :, 1:])  # (B, 4, pitches)

    def rule(seq: torch.Tensor, i: int) -> torch.Tensor | None:
        t, j = divmod(i, 4)
        out = torch.zeros(len(seq), G.N_TOKENS, dtype=torch.bool, device=seq.device)
        banned = out[:, 2 : G.VOCAB]  # a view: the pitch tokens
        if outside is not None:
            banned |= outside[:, j].to(seq.device)
        below = crossings and j < len(G.VOICES) - 1 and bool((seq[:, i + 1] != G.MASK).any())  # the voice below given here
        if j == 0 and not below:  # the soprano has no voice above it
            return out if outside is not None else None
        window = seq[:, : 4 * (t + 1)].reshape(len(seq), t + 1, 4).transpose(1, 2)
        p, struck = decode(torch.cat([before.to(seq.device), window], dim=2))  # cells not drawn yet read as rests
        now, pitches = before.shape[2] + t, cand.to(seq.device)
        held = p[:, j, now - 1] if now else torch.full_like(p[:, j, 0], -1)  # what a HOLD would sound
        if parallels and j:
            banned |= banned_pitches(p, struck, now, j)
        if crossings and j:
            upper = p[:, j - 1, now]
            banned |= (upper[:, None] >= 0) & (pitches[None] > upper[:, None])
            out[:, G.HOLD] |= (upper >= 0) & (held > upper)
        if below:
            lower = p[:, j + 1, now]  # sounding only where given: the voice below is drawn after this one
            banned |= (lower[:, None] >= 0) & (pitches[None] < lower[:, None])
            out[:, G.HOLD] |= (lower >= 0) & (held >= 0) & (held < lower)
        return out

    return rule
