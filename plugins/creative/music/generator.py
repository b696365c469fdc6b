"""The ``chorale-diffusion`` generator: four-part chorales on the shared transformer, masked or autoregressive.

A chorale is a (4, T) grid of tokens (``grid.py``) read time-major as one sequence
(step 0: S A T B, step 1: S A T B, ...). One backbone, the core ``TransformerDenoiser``,
trained one of two ways (``model.order``):

- ``autoregressive`` (default): the network causal, trained on the next token
  (``genforge.core.blocks.Autoregressive``); at equal CPU budget it reaches better
  likelihood and more idiomatic pieces, and its sampler keeps the counterpoint rules
  (``counterpoint.py``: no parallel fifths or octaves, no voice crossings, every voice in its
  range); it sees given cells only behind the
  position it draws, and writes them as given.
- ``masked``: absorbing-state masked diffusion (``genforge.core.blocks.MaskedDiffusion``,
  the block the molecule generator uses). It infills any subset of cells: a melody to
  harmonise, a phrase to continue, a part to re-voice — it sees the given cells on both sides.

Pieces longer than the training window (``model.window`` sixteenths) are generated window
by window, each new window given the last half of the one before. Seeing one bar back, a
model that knows every key drifts from one to another between windows; so by default
(``model.home_key``) it learns in one: training pieces are moved to C major or A minor by
their key, and ``compose`` moves each sample from there to a key of the corpus (given cells —
a melody to harmonise — go there and back by their own key). Held-out likelihood is
measured after training on the test pieces' windows (``training.json``, ``details``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from genforge.core import (
    Checkpoint,
    Generator,
    GeneratorConfig,
    PreparedData,
    Reference,
    Run,
    SampleConfig,
    Samples,
    TrainConfig,
    Trainer,
)
from genforge.core.blocks import Autoregressive, MaskedDiffusion, Strategy, TransformerConfig, TransformerDenoiser
from genforge.core.kinds import Music
from genforge.core.training import load_weights, save_weights

from . import corpus, render
from . import data as chorale_data
from . import grid as G
from .cadence import Endings, combine, ending_rule, plan_endings
from .counterpoint import voice_rules
from .data import ChoraleDataConfig

WEIGHTS = "model.safetensors"  # with model.json beside it (core.training.save_weights)
DIFFUSION = MaskedDiffusion(mask_id=G.MASK)  # no padding: windows are whole
AUTOREGRESSIVE = Autoregressive(start_id=G.MASK)  # the mask id doubles as the start token: never a target


class ChoraleModelConfig(TransformerConfig):
    d_model: int = Field(128, ge=16)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    order: Literal["masked", "autoregressive"] = Field(
        "autoregressive",
        description="left to right (with the counterpoint rules at sampling) or masked diffusion (infills seeing both sides), on the same backbone",
    )
    home_key: bool | None = Field(
        None,
        description="learn in one key: training pieces moved to C major or A minor by their key, samples moved from there to keys drawn from the training pieces' own (given cells: back to theirs), so no piece wanders between keys from window to window (unset: on, unless data.transpose asks for transposed copies)",
    )
    window: int = Field(
        32, ge=8, description="sixteenths per training window (32: two 4/4 bars); longer pieces are generated window by window"
    )
    hop: int = Field(4, ge=1, description="sixteenths between training windows' starts (4: a beat)")

    @model_validator(mode="after")
    def _window(self) -> ChoraleModelConfig:
        if self.window % 8:
            raise ValueError(
                f"model.window ({self.window}) must be an even number of beats (a multiple of 8 sixteenths): generation moves on by half a window"
            )
        return self


class ChoraleTrainConfig(TrainConfig):
    max_steps: int | None = Field(4000, ge=1)
    max_minutes: float | None = Field(6.0, gt=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    checkpoint_every: int = Field(250, ge=1)


class ChoraleSampleConfig(SampleConfig):
    n: int = Field(64, ge=1, le=100_000, description="pieces to generate")
    batch_size: int = Field(64, ge=1)
    bars: int = Field(8, ge=1, le=512, description="length of each piece in 4/4 bars (16 sixteenths each)")
    steps: int = Field(64, ge=1, description="masked: unmasking rounds per window")
    hop: int | None = Field(
        None,
        ge=1,
        description="sixteenths each generated window moves on from the one before, whose rest it is given as context (unset: half of model.window, one bar; smaller: more context, more windows)",
    )
    strategy: Strategy = Field(
        "ancestral",
        description="masked: which cells to reveal each round (ancestral: MDLM's exact reverse process; confidence and margin reveal held notes first and stall)",
    )
    temperature: float = Field(1.0, gt=0, description="softmax temperature (lower: more tonal, plainer, more held notes)")
    top_p: float = Field(0.98, gt=0, le=1, description="autoregressive: nucleus sampling mass")
    avoid_parallels: bool = Field(
        True,
        description="autoregressive: never draw a note that makes parallel fifths or octaves with a voice above it (the rule the evaluator counts)",
    )
    avoid_crossings: bool = Field(
        True,
        description="autoregressive: never draw a note above the voice over it, nor hold one that voice has moved below (voice crossings, which the evaluator counts)",
    )
    keep_range: bool = Field(
        True,
        description="autoregressive: never draw a note outside its voice's usual range in the key the piece is written in (with model.home_key, free pieces' keys are then drawn before sampling, in proportion to the training pieces')",
    )
    final_cadence: bool = Field(
        True,
        description="autoregressive: end every piece on a dominant and a held root-position tonic (a free piece's last half note; a melody's last note), in the key of what comes before (cadence.py)",
    )
    phrase_bars: int | None = Field(
        2,
        ge=1,
        description="autoregressive, free pieces with final_cadence: end a phrase every this many bars on I or V in root position, held its last half note (Bach's median phrase: two bars; None: no phrases)",
    )
    melody: str | None = Field(
        None, description="a MIDI or MusicXML melody to harmonise: each piece keeps it as the soprano and fills alto, tenor and bass"
    )
    previews: int = Field(3, ge=0, description="pieces also rendered as WAV audio previews")
    tempo: float = Field(80, gt=10, le=300, description="quarter notes per minute in the MIDI, MusicXML and audio")


class ChoraleDiffusionConfig(GeneratorConfig):
    data: ChoraleDataConfig = Field(default_factory=ChoraleDataConfig)
    model: ChoraleModelConfig = Field(default_factory=ChoraleModelConfig)
    train: ChoraleTrainConfig = Field(default_factory=ChoraleTrainConfig)
    sample: ChoraleSampleConfig = Field(default_factory=ChoraleSampleConfig)

    @property
    def home_key(self) -> bool:
        """Whether the model learns in one key: ``model.home_key``, or when unset, unless ``data.transpose`` asks for copies in other keys (runs saved before it)."""
        return self.model.home_key if self.model.home_key is not None else not self.data.transpose

    @model_validator(mode="after")
    def _sections_agree(self) -> ChoraleDiffusionConfig:
        if self.sample.hop and self.sample.hop >= self.model.window:
            raise ValueError(
                f"sample.hop ({self.sample.hop}) must be shorter than model.window ({self.model.window}): each generated window is given the rest of the one before"
            )
        if self.model.hop > self.model.window:
            raise ValueError(f"model.hop ({self.model.hop}) cannot exceed model.window ({self.model.window})")
        if self.model.home_key and self.data.transpose:
            raise ValueError(
                f"data.transpose ({self.data.transpose}) adds nothing when model.home_key moves every training piece to C major / A minor; "
                "set data.transpose=0, or model.home_key=false (or leave it unset) to learn every key from transposed copies"
            )
        return self


def flatten(grids: np.ndarray | torch.Tensor):
    """(N, 4, T) -> (N, 4T), time-major (step 0: S A T B, step 1: ...)."""
    return (
        grids.transpose(1, 2).reshape(len(grids), -1)
        if isinstance(grids, torch.Tensor)
        else grids.transpose(0, 2, 1).reshape(len(grids), -1)
    )


def unflatten(seqs: torch.Tensor) -> torch.Tensor:
    """(N, 4T) -> (N, 4, T)."""
    return seqs.reshape(len(seqs), -1, 4).transpose(1, 2)


def training_windows(grids: list[np.ndarray], window: int, hop: int) -> np.ndarray:
    """(N, 4·window) token sequences cut from every piece (see ``grid.windows``)."""
    return flatten(np.concatenate([G.windows(g, window, hop) for g in grids]))


def build(model: ChoraleModelConfig | dict) -> TransformerDenoiser:
    cfg = model if isinstance(model, ChoraleModelConfig) else ChoraleModelConfig(**model)
    arch = TransformerConfig(**cfg.model_dump(include=set(TransformerConfig.model_fields)))
    return TransformerDenoiser(arch, G.N_TOKENS, 4 * cfg.window, causal=cfg.order == "autoregressive")


@torch.no_grad()
def generate(
    net: TransformerDenoiser,
    meta: dict,
    given: torch.Tensor,
    cfg: ChoraleSampleConfig,
    generator: torch.Generator,
    bounds: torch.Tensor | None = None,
    endings: Endings | None = None,
) -> np.ndarray:
    """Fill the ``MASK`` cells of ``given`` (N, 4, T), window by window; returns (N, 4, T) tokens, cleaned.

    Autoregressive: with the rules ``cfg`` asks for (``counterpoint.voice_rules``); ``bounds``
    (N, 4, 2), the pitches each voice may strike, is the range rule (None: none); ``endings``
    (``cadence.plan_endings``), the final cadence (None: none), which wins where the rules clash.
    """
    window, order = meta["model"]["window"], meta["model"]["order"]
    hop = cfg.hop or window // 2
    if hop >= window:
        raise ValueError(
            f"sample.hop ({hop}) must be shorter than the model's window ({window} sixteenths): each window is given the rest of the one before"
        )
    x, length, start = given.clone(), given.shape[2], 0
    while True:
        end = min(start + window, length)
        part = x[:, :, start:end].clone()
        first = part[:, :, 0].clone()
        if start > 0:  # a note held into the window is struck at its start, as in the training windows (grid.crop)
            held = first == G.HOLD
            if held.any():
                sounding = torch.from_numpy(G.pitches(x[:, :, : start + 1].cpu().numpy())[:, :, start]).to(x.device)
                part[:, :, 0] = torch.where(held & (sounding >= 0), sounding - G.PITCH_LOW + 2, torch.where(held, G.REST, first))
        seq = flatten(part)
        if order == "masked":
            seq = DIFFUSION.sample(net, steps=cfg.steps, temperature=cfg.temperature, strategy=cfg.strategy, generator=generator, given=seq)
        else:
            rule = combine(  # in order of precedence: the final cadence, the counterpoint rules, the phrase ends
                ending_rule(endings, x[:, :, :start], bounds) if endings is not None else None,
                voice_rules(x[:, :, :start], parallels=cfg.avoid_parallels, crossings=cfg.avoid_crossings, bounds=bounds),
                ending_rule(endings, x[:, :, :start], bounds, "phrases") if endings is not None and endings.phrases else None,
            )
            seq = AUTOREGRESSIVE.sample(
                net, seq, unknown_id=G.MASK, temperature=cfg.temperature, top_p=cfg.top_p, generator=generator, constraint=rule
            )
        out = unflatten(seq)
        if start > 0:
            out[:, :, 0] = torch.where(first == G.MASK, out[:, :, 0], first)  # given cells stay as they were
        x[:, :, start:end] = out
        if end >= length:
            break
        start += hop  # the next window is given the rest of this one
    return np.stack([G.clean(g) for g in x.cpu().numpy()])


def compose(
    net: TransformerDenoiser,
    meta: dict,
    given: torch.Tensor,
    cfg: ChoraleSampleConfig,
    generator: torch.Generator,
    fermatas: list[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """``generate`` in the key the model was trained in: (pieces, the semitones each was moved by afterwards).

    A model trained with ``model.home_key`` knows C major and A minor only (``key_offsets`` in its
    ``model.json``): a piece with given cells (a melody, a part to re-voice) is moved there by the
    key music21 hears in them, filled, and moved back by exactly as much, so the given cells come
    back note for note; a free piece is moved to a key of the training pieces (how far each was
    from home). With the range rule (``keep_range``, autoregressive) the free pieces' keys are
    drawn first, in proportion to the training pieces' (``corpus.plan_shifts``), and each voice is
    kept to its usual range moved to its piece's key; without it, each free piece goes to a key
    drawn among those that leave fewest of its note-steps out of range (``corpus.draw_shift``).
    Other models: ``generate`` as it is, moves 0. With ``sample.final_cadence`` (autoregressive), every piece ends on a
    cadence (``cadence.py``), and so does every phrase of a given melody ending at one of ``fermatas`` (steps).
    """
    offsets = meta.get("key_offsets")
    autoregressive = meta["model"]["order"] == "autoregressive"
    ruled = autoregressive and cfg.keep_range
    ends = autoregressive and cfg.final_cadence
    if not offsets:
        endings = plan_endings(given, home=False, fermatas=fermatas, phrase_bars=cfg.phrase_bars) if ends else None
        return generate(net, meta, given, cfg, generator, range_bounds([0] * len(given)) if ruled else None, endings), [0] * len(given)
    x = given.cpu().numpy()
    known = (x != G.MASK).any(axis=(1, 2))
    shifts: dict[bytes, int] = {}  # one key analysis per distinct given grid (a melody is given to every piece alike)
    for g, k in zip(x, known):
        if k and g.tobytes() not in shifts:
            h = corpus.home_shift(g, None)
            shifts[g.tobytes()] = h if G.transpose(g, h) is not None else 0  # given cells move unfolded, so they come back exactly
    home = [shifts[g.tobytes()] if k else 0 for g, k in zip(x, known)]
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))
    at_home = torch.from_numpy(_move(x, home)).to(given.device)
    endings = plan_endings(at_home, home=True, fermatas=fermatas, phrase_bars=cfg.phrase_bars) if ends else None
    if ruled:
        planned = iter(corpus.plan_shifts(offsets, int((~known).sum()), rng))
        away = [-h if k else next(planned) for h, k in zip(home, known)]
        pieces = generate(net, meta, at_home, cfg, generator, range_bounds(away), endings)
    else:
        pieces = generate(net, meta, at_home, cfg, generator, None, endings)
        away = [-h if k else corpus.draw_shift(p, offsets, rng) for p, h, k in zip(pieces, home, known)]
    return _move(pieces, away), away


def range_bounds(away: list[int]) -> torch.Tensor:
    """(N, 4, 2): each voice's usual range (``grid.RANGES``) where a piece to be moved by ``away`` semitones must write it."""
    ranges = torch.tensor([G.RANGES[v] for v in G.VOICES])
    return torch.stack([ranges - k for k in away])


def _move(grids: np.ndarray, shifts: list[int]) -> np.ndarray:
    """Each grid transposed by its shift; a note that would leave the vocabulary goes an octave back into it."""
    return np.stack([G.transpose(g, k, fold=True) for g, k in zip(grids, shifts)])


class ChoraleDiffusion(Generator):
    name: ClassVar[str] = "chorale-diffusion"
    kind: ClassVar[str] = "music"
    Config: ClassVar[type[ChoraleDiffusionConfig]] = ChoraleDiffusionConfig
    description: ClassVar[str] = (
        "four-part chorales over the voice x sixteenth grid: left to right with counterpoint rules (or masked diffusion), shared transformer; harmonises melodies"
    )
    libraries: ClassVar[tuple[str, ...]] = ("torch", "music21")
    # the promotion gate (docs/models.md): held-out NLL (a training detail) lower; parallel fifths and octaves not higher
    gate: ClassVar[dict] = {
        "metrics": ["training.heldout_nll"],
        "directions": {"training.heldout_nll": False},
        "guards": {"chorale.parallel_fifths": 0.0, "chorale.parallel_octaves": 0.0},
    }
    test_spec: ClassVar[dict] = {  # seconds on 2 cores: the first 12 files of the corpus
        "data": {"max_pieces": 12, "key_analysis": False},
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "window": 16, "hop": 8},
        "train": {"max_steps": 12, "max_minutes": None, "batch_size": 16, "checkpoint_every": 5, "log_every": 2},
        "sample": {"n": 4, "bars": 2, "steps": 4, "previews": 1},
        "evaluate": {"chorale": {"rolls": 2}},
    }

    # -- prepare ------------------------------------------------------------------------------
    def prepare(self, config: ChoraleDiffusionConfig, run: Run) -> PreparedData:
        progress = lambda done, total, name: run.report_progress("parse", done, total)  # noqa: E731
        path, key, stats, cache = chorale_data.prepare(config.data, run.cache_root, progress)
        return PreparedData(path, key, {**stats, "cache": cache})

    def reference(self, data: PreparedData, config: ChoraleDiffusionConfig) -> Reference:
        return Reference(self.kind, test=data.path / "test.npz", train=data.path / "train.npz", name=data.stats.get("source", ""))

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, data: PreparedData, config: ChoraleDiffusionConfig, trainer: Trainer) -> Checkpoint:
        if config.sample.melody:
            from .melody import read_melody

            read_melody(Path(config.sample.melody))  # a bad melody file stops here, before training
        m, cfg, device = config.model, config.train, trainer.device
        pieces, offsets = self.pieces(data.path / "train.npz", config.home_key)
        windows = torch.from_numpy(training_windows(pieces, m.window, m.hop))
        if device.type == "cuda":
            windows = windows.to(device)
        torch.manual_seed(cfg.seed)
        net = build(m)
        process = DIFFUSION if m.order == "masked" else AUTOREGRESSIVE

        def loss_fn(model: TransformerDenoiser, step: int):
            idx = trainer.shard(np.random.default_rng([cfg.seed, step]).integers(0, len(windows), cfg.batch_size))
            x = windows[torch.from_numpy(idx).to(windows.device)].to(device)
            loss, metrics = process.loss(model, x)
            return loss, {**metrics, "tokens": x.numel()}

        result = trainer.fit(net, loss_fn, count="tokens")
        weights = trainer.run_dir / WEIGHTS
        if not trainer.is_main:
            return Checkpoint(weights, result.step)
        save_weights(net, weights, {"model": m.model_dump(), "step": result.step, "key_offsets": offsets})
        details = {
            "order": m.order,
            "parameters": net.num_parameters(),
            "training_windows": len(windows),
            **self.heldout(net.to(device).eval(), data, m, config.home_key, device),
        }
        return Checkpoint(weights, result.step, details=details)

    @staticmethod
    def pieces(path: Path, home_key: bool) -> tuple[list[np.ndarray], dict[str, int] | None]:
        """The grids of a prepared ``.npz`` as the model sees them: with ``home_key``, moved to C major / A minor, and
        how far each piece was from there, counted ({"-2": 59, ...}: the keys ``compose`` sends samples back to)."""
        grids = chorale_data.load_grids(path)
        if not home_key:
            return grids, None
        grids, shifts = corpus.to_home_key(grids, chorale_data.load_keys(path))
        return grids, {str(k): n for k, n in sorted(Counter(-k for k in shifts).items())}

    @staticmethod
    def heldout(
        net: TransformerDenoiser, data: PreparedData, m: ChoraleModelConfig, home_key: bool, device: torch.device
    ) -> dict[str, float]:
        """Likelihood of the held-out pieces' windows: masked-cell NLL at rate 0.5 (masked) or next-token NLL (autoregressive)."""
        pieces, _ = ChoraleDiffusion.pieces(data.path / "test.npz", home_key)
        where = ", moved to C major / A minor as the training pieces were" if home_key else ""
        test = torch.from_numpy(training_windows(pieces, m.window, m.window)).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            if m.order == "masked":
                nll = np.mean([DIFFUSION.masked_nll(net, test[i : i + 256], rate=0.5, generator=gen) for i in range(0, len(test), 256)])
                return {
                    "heldout_masked_nll": round(float(nll), 4),
                    "heldout_note": f"nats per cell, half the cells of held-out windows masked, the rest given{where}",
                }
            nll = np.mean([AUTOREGRESSIVE.nll(net, test[i : i + 256]) for i in range(0, len(test), 256)])
            return {"heldout_nll": round(float(nll), 4), "heldout_note": f"nats per cell, next-cell likelihood of held-out windows{where}"}

    # -- sample -------------------------------------------------------------------------------
    @staticmethod
    def load_model(weights: Path, device: torch.device | str = "cpu") -> tuple[TransformerDenoiser, dict]:
        state, meta = load_weights(weights)
        net = build(meta["model"])
        net.load_state_dict(state)
        return net.to(device).eval(), meta

    def sample(self, checkpoint: Checkpoint, config: ChoraleDiffusionConfig, run: Run) -> Samples:
        from genforge.core.training import choose_device

        cfg = config.sample
        device = choose_device(config.train.device)
        net, meta = self.load_model(checkpoint.path, device)
        melody = None
        if cfg.melody:
            from .melody import read_melody

            melody, melody_info = read_melody(Path(cfg.melody))
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        pieces, moves, done = [], [], 0
        while done < cfg.n:
            b = min(cfg.batch_size, cfg.n - done)
            given = self.given(b, cfg.bars * 16 if melody is None else len(melody), melody, device)
            made, moved = compose(net, meta, given, cfg, gen, melody_info.get("fermatas") if melody is not None else None)
            pieces.extend(made)
            moves.extend(moved)
            done += b
            run.report_progress("sample", done, cfg.n)
        details = {
            "order": meta["model"]["order"],
            "bars": cfg.bars if melody is None else round(len(melody) / 16, 2),
            "steps": cfg.steps if meta["model"]["order"] == "masked" else None,
            "temperature": cfg.temperature,
            **(
                {
                    "top_p": cfg.top_p,
                    "avoid_parallels": cfg.avoid_parallels,
                    "avoid_crossings": cfg.avoid_crossings,
                    "keep_range": cfg.keep_range,
                    "final_cadence": cfg.final_cadence,
                    "phrase_bars": cfg.phrase_bars,
                }
                if meta["model"]["order"] == "autoregressive"
                else {}
            ),
        }
        if meta.get("key_offsets"):
            details["home_key"] = (
                "trained in C major / A minor; pieces moved from there by "
                + ", ".join(f"{k:+d}" for k in moves[:16])
                + (" ..." if len(moves) > 16 else "")
                + " semitones"
            )
        if melody is not None:
            details["melody"] = melody_info
        details["renderer"] = write_pieces(pieces, run.samples_dir, cfg)
        return Samples(self.kind, run.samples_dir / Music.filename, len(pieces), details)

    @staticmethod
    def given(n: int, length: int, melody: np.ndarray | None, device: torch.device) -> torch.Tensor:
        """(n, 4, length): every cell to generate, or the melody as every piece's soprano."""
        x = torch.full((n, 4, length), G.MASK, dtype=torch.long, device=device)
        if melody is not None:
            x[:, 0] = torch.from_numpy(melody).to(device)
        return x


def write_pieces(pieces: list[np.ndarray], folder: Path, cfg: ChoraleSampleConfig) -> str | None:
    """MIDI (the ``music`` kind), MusicXML, the grids and WAV previews of the pieces; returns the audio renderer used."""
    Music().write([render.midi_bytes(p, tempo=cfg.tempo) for p in pieces], folder)
    (folder / "musicxml").mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(pieces):
        render.write_musicxml(p, folder / "musicxml" / f"{i:05d}.musicxml", tempo=cfg.tempo, title=f"genforge chorale {i}")
    chorale_data.save_grids(folder / "grids.npz", pieces)
    renderer = None
    if cfg.previews:
        (folder / "wav").mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(pieces[: cfg.previews]):
            renderer = render.render_wav(p, folder / "wav" / f"{i:05d}.wav", tempo=cfg.tempo)
    return renderer
