"""``genforge harmonise``: the music plugin's own command (added through the host's ``genforge_commands`` hook)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

GENERATOR = "chorale-diffusion"


def find_run(run_id: str, store: str | None):
    """A finished ``chorale-diffusion`` run: ``latest`` is the newest such run, else the run named."""
    from genforge.core import GenforgeError, RunStore

    runs = RunStore(store)
    if run_id == "latest":
        done = [r for r in runs.all() if r.generator == GENERATOR and (r.path / "checkpoint.json").exists()]
        if not done:
            raise GenforgeError(
                f"no trained {GENERATOR} run in {runs}; train one first: genforge run {GENERATOR} (or genforge demo {GENERATOR})"
            )
        return max(done, key=lambda r: r.id)
    run = runs.get(run_id)
    if run.generator != GENERATOR:
        raise GenforgeError(f"run {run.id} is a {run.generator} run; harmonise needs a {GENERATOR} run")
    return run


def harmonise(
    melody: Annotated[Path, typer.Argument(help="the melody: a MIDI or MusicXML file with one line of notes")],
    run: Annotated[str, typer.Option(help="a trained chorale-diffusion run (id, prefix, folder) or 'latest'")] = "latest",
    out: Annotated[Path | None, typer.Option(help="folder for the results (default: ./<melody>-harmonised)")] = None,
    n: Annotated[int, typer.Option(min=1, help="harmonisations to write")] = 1,
    seed: Annotated[int, typer.Option(help="random seed: harmonisation i uses seed + i, so --n 1 and --n 4 agree on the first")] = 0,
    register: Annotated[
        str,
        typer.Option(
            help="melody: the four parts in the melody's own register (moved back by the octaves it was moved); choir: the voices' ranges"
        ),
    ] = "melody",
    store: Annotated[str | None, typer.Option(help="run store (default: $GENFORGE_HOME)")] = None,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu or cuda")] = "auto",
) -> None:
    """Harmonise a melody in four parts (soprano kept, alto, tenor and bass written): MIDI, MusicXML and a WAV preview."""
    import torch

    from genforge.core import GenforgeError
    from genforge.core.runner import Steps
    from genforge.core.training import choose_device

    from . import grid as G
    from .generator import ChoraleDiffusion, compose, write_pieces
    from .melody import read_melody

    if register not in ("melody", "choir"):
        raise GenforgeError(f"--register {register!r}: give melody (the melody's own register) or choir (the voices' ranges)")
    tokens, info = read_melody(melody)
    the_run = find_run(run, store)
    steps = Steps(the_run)
    cfg = steps.config.sample.model_copy(update={"n": 1, "seed": seed, "melody": str(melody), "previews": n})
    device = choose_device(device)
    net, meta = ChoraleDiffusion.load_model(steps.checkpoint().path, device)
    pieces = []
    for i in range(n):  # one seed per piece: the first harmonisation of --seed 0 is the same with --n 1 and --n 4
        gen = torch.Generator(device=device).manual_seed(seed + i)
        drawn, _ = compose(net, meta, ChoraleDiffusion.given(1, len(tokens), tokens, device), cfg, gen, info.get("fermatas"))
        pieces.append(drawn[0])
    back = ""
    if info["transposed"] and register == "melody":
        moved_back = [G.transpose(p, -info["transposed"]) for p in pieces]
        if all(m is not None for m in moved_back):
            pieces = moved_back
            back = f"; the four parts moved back {-info['transposed']:+d} to the melody's register (--register choir keeps them in range)"
        else:
            back = f"; kept in the choir's register (moved back {-info['transposed']:+d}, a part leaves MIDI {G.PITCH_LOW}-{G.PITCH_HIGH})"
    folder = out or Path(f"{melody.stem}-harmonised")
    renderer = write_pieces(pieces, folder, cfg.model_copy(update={"n": n}))
    moved = f", moved {info['transposed']:+d} semitones into the soprano range{back}" if info["transposed"] else ""
    print(
        f"harmonised {info['file']} ({info['notes']} notes, {info['bars']} bars{moved}) with run {the_run.id} ({meta['model']['order']}):"
    )
    if cfg.final_cadence and meta["model"]["order"] == "autoregressive":
        marked = len(info.get("fermatas") or [])
        print(
            f"  cadences: the last note{f' and the {marked} fermata(s) marked in the melody' if marked else ''} "
            "(sample.final_cadence; fermatas come from MusicXML, MIDI has none)"
        )
    print(f"  {folder / 'midi'}/  {folder / 'musicxml'}/  {folder / 'wav'}/ (audio by {renderer})")
    if renderer == "numpy-additive":
        print(
            "  the WAV is a plain additive-synthesis preview: for a real choir sound install FluidSynth and a General MIDI "
            "soundfont (Debian/Ubuntu: apt-get install fluidsynth fluid-soundfont-gm; macOS: brew install fluid-synth), "
            "or open the MIDI file in any music program"
        )
