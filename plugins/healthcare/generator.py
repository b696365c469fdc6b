"""The ``molecule-diffusion`` generator: masked discrete diffusion over SELFIES (or SMILES) tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from genforge.core import (
    Checkpoint,
    ConfigError,
    DataConfig,
    DataError,
    Generator,
    GeneratorConfig,
    PreparedData,
    Reference,
    Run,
    SampleConfig,
    Samples,
    TrainConfig,
    Trainer,
    store,
)
from genforge.core.blocks import Autoregressive, MaskedDiffusion, Strategy, TransformerConfig, TransformerDenoiser, Weighting
from genforge.core.downloads import fetch
from genforge.core.kinds import Molecules
from genforge.core.plugin_manager import get_dataset
from genforge.core.store import redact_url
from genforge.core.training import load_weights, save_weights

from .data import drop_unusable, read_smiles, read_smiles_rows, validate_all
from .tokens import MASK_ID, PAD_ID, Tokenizer

PREPARE_VERSION = "molecules-prepare-2"  # bump when prepare's output changes for the same inputs
PRETRAINED = Path(__file__).parent / "pretrained"
# Masked diffusion over the tokenizer's ids (the shared block; the molecule tokens fix the special ids).
DIFFUSION = MaskedDiffusion(mask_id=MASK_ID, pad_id=PAD_ID)
# Left to right on the same backbone: the mask id doubles as the start token (never a target); <pad> ends a molecule.
AUTOREGRESSIVE = Autoregressive(start_id=MASK_ID)
PRETRAINED_NAMES = {"moses-pretrained": PRETRAINED / "moses-selfies.safetensors"}


def _meta_path(weights: Path) -> Path:
    """What rebuilds the network, beside its weights (``save_weights``): ``model.safetensors`` -> ``model.json``."""
    return Path(weights).with_suffix(".json")


def resolve_init(init_from: str) -> Path:
    """``moses-pretrained`` (shipped), a ``model.safetensors`` file, or a run folder -> weights file."""
    if init_from in PRETRAINED_NAMES:
        path = PRETRAINED_NAMES[init_from]
    else:
        path = Path(init_from).expanduser()
        if path.is_dir():
            path = path / "model.safetensors"
    meta = _meta_path(path)
    if not path.exists() or not meta.exists():
        raise DataError(
            f"model.init_from={init_from!r}: no weights at {path} (with {meta.name} beside them); "
            f"use {', '.join(PRETRAINED_NAMES)}, a run folder, or a model.safetensors file"
        )
    return path


def init_meta(weights: Path) -> dict:
    return json.loads(_meta_path(weights).read_text())


PREPARED_FILES = ("stats.json", "tokenizer.json", "train.npz")


def prepared_folder(folder: Path, cfg: MoleculeDataConfig) -> PreparedData:
    """A folder the prepare step wrote (or ``export_prepared`` copied), used as it is: no RDKit needed."""
    missing = [name for name in PREPARED_FILES if not (folder / name).exists()]
    if missing:
        raise DataError(
            f"data.path {str(folder)!r} is a folder but not one genforge prepared (no {', '.join(missing)}); "
            "give a .smi/.csv file to prepare, or a prepared folder"
        )
    stats = json.loads((folder / "stats.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    if stats.get("representation") != cfg.representation or tokenizer.get("group_indices") != cfg.group_indices:
        raise DataError(
            f"data.path {str(folder)!r} holds {stats.get('representation')} tokens (group_indices={tokenizer.get('group_indices')}); "
            f"set data.representation and data.group_indices to match"
        )
    digest = hashlib.sha256((folder / "stats.json").read_bytes() + (folder / "tokenizer.json").read_bytes())
    return PreparedData(folder, digest.hexdigest()[:16], {**stats, "cache": "prepared folder"})


def export_prepared(src: Path, dest: Path, train_smiles: bool = False) -> Path:
    """Copy prepared data compactly (compressed tokens, 8-bit where the vocabulary fits) to train elsewhere.

    The copy holds what fit and sample need plus the reference set; ``train.smi`` (for novelty)
    only when asked, since it is most of the size. Full MOSES as SELFIES: 14 MB instead of 192 MB.
    """
    dest.mkdir(parents=True, exist_ok=True)
    arrays = np.load(src / "train.npz")
    tokens = arrays["tokens"]
    if int(tokens.max()) < 256:
        tokens = tokens.astype(np.uint8)
    np.savez_compressed(dest / "train.npz", tokens=tokens, lengths=arrays["lengths"])
    names = ["stats.json", "tokenizer.json", "test.smi"] + (["train.smi"] if train_smiles else [])
    for name in names:
        shutil.copyfile(src / name, dest / name)
    return dest


class MoleculeDataConfig(DataConfig):
    source: str = Field("moses", description="a registered data source (`genforge plugins` lists them)")
    path: str | None = Field(
        None,
        description="a .smi/.csv file or URL of SMILES to train on instead of `source`, or a folder genforge prepared (see export_prepared)",
    )
    smiles_column: str | None = Field(None, description="CSV column holding SMILES (default: the one named 'smiles')")
    test_path: str | None = Field(
        None, description="reference SMILES for evaluation (default: the source's test split, or a held-out part of `path`)"
    )
    test_fraction: float = Field(0.05, gt=0, lt=1, description="held out as reference when there is no test file")
    max_molecules: int | None = Field(None, ge=1, description="train on a random subset of this many molecules")
    max_reference: int = Field(10_000, ge=1, description="cap on reference (test) molecules")
    representation: Literal["selfies", "smiles"] = "selfies"
    group_indices: bool = Field(True, description="SELFIES: a branch/ring symbol and its index symbols form one token")
    max_length: int = Field(72, ge=4, description="molecules with more tokens are skipped (counted)")
    workers: int | None = Field(None, ge=1, description="processes for RDKit validation (default: all cores)")
    seed: int = Field(0, ge=0)


class MoleculeModelConfig(TransformerConfig):
    order: Literal["masked", "autoregressive"] = Field(
        "masked",
        description="masked diffusion (any order; infills and conditions) or left to right on the same backbone (causal, "
        "next-token loss; the molecule ends at its first <pad>; sample.steps and sample.strategy do not apply)",
    )
    init_from: str | None = Field(
        None,
        description="start from trained weights: 'moses-pretrained' (shipped), a run folder or a model.safetensors; "
        "the architecture and vocabulary then come from those weights",
    )


class MoleculeTrainConfig(TrainConfig):
    max_steps: int | None = Field(4000, ge=1)
    max_minutes: float | None = Field(3.0, gt=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    weighting: Weighting = Field(
        "elbo", description="masked order's loss: MDLM's bound (cross-entropy weighted by 1/t) or flat (mean over masked tokens)"
    )


class MoleculeSampleConfig(SampleConfig):
    # Defaults chosen by benchmarks/molecule_sampler.py on the shipped checkpoint (see docs/molecules.md).
    steps: int = Field(32, ge=1, description="denoising rounds")
    temperature: float = Field(0.8, gt=0, description="softmax temperature of the denoiser's predictions")
    strategy: Strategy = Field(
        "margin",
        description="which masked tokens to reveal each round: surest by top-2 margin, by sampled-token probability, or MDLM's random reverse process",
    )
    top_p: float = Field(
        0.95,
        gt=0,
        le=1,
        description="nucleus sampling: each token drawn from the smallest set of most probable tokens holding this much probability (1: all)",
    )


class MoleculeDiffusionConfig(GeneratorConfig):
    data: MoleculeDataConfig = Field(default_factory=MoleculeDataConfig)
    model: MoleculeModelConfig = Field(default_factory=MoleculeModelConfig)
    train: MoleculeTrainConfig = Field(default_factory=MoleculeTrainConfig)
    sample: MoleculeSampleConfig = Field(default_factory=MoleculeSampleConfig)

    @model_validator(mode="after")
    def _one_start(self) -> MoleculeDiffusionConfig:
        if self.model.init_from and self.train.init_from:
            raise ValueError(
                "model.init_from and train.init_from both name weights to start from; set one (model.init_from also takes "
                "'moses-pretrained' and a weights file, and the architecture and vocabulary from them)"
            )
        return self


def _reference_name(cfg: MoleculeDataConfig, source: str, held_out_from_train: bool) -> str:
    """How the evaluation reference is named, as `genforge evaluate --reference` names one: SOURCE-test for a data
    source's test split (the MOSES evaluator knows MOSES's own by that name), else where it came from."""
    if cfg.test_path:
        return redact_url(str(cfg.test_path))
    if held_out_from_train:
        return f"{source} (held out)"
    return f"{source}-test"


def _write_smi(path: Path, smiles: list[str]) -> None:
    store.atomic_write_text(path, "".join(s + "\n" for s in smiles))


class MoleculeDiffusion(Generator):
    name: ClassVar[str] = "molecule-diffusion"
    kind: ClassVar[str] = "molecules"
    Config: ClassVar[type[MoleculeDiffusionConfig]] = MoleculeDiffusionConfig
    description: ClassVar[str] = "masked discrete diffusion over SELFIES/SMILES tokens with a transformer denoiser"
    libraries: ClassVar[tuple[str, ...]] = ("rdkit", "selfies", "fcd")
    default_demo: ClassVar[bool] = True  # `genforge demo` alone runs this one
    # the promotion gate (docs/models.md): FCD/Test lower by 2 % or more; validity and Filters not lower
    gate: ClassVar[dict] = {"metrics": ["moses.FCD/Test"], "margin": 0.02, "guards": {"moses.validity": 0.0, "moses.Filters": 0.0}}
    test_spec: ClassVar[dict] = {  # seconds on 2 cores: tests and genforge.core.testing.check_generator
        "data": {"max_molecules": 300, "max_reference": 200, "workers": 1},
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 1},
        "train": {"max_steps": 12, "max_minutes": None, "batch_size": 16, "checkpoint_every": 5, "log_every": 2},
        "sample": {"n": 40, "steps": 8},
        "evaluate": {"rdkit": {"grid": 6, "max_reference": 100}, "moses": {"max_reference": 100}},
    }
    # `genforge demo`: continue training the shipped MOSES checkpoint for a few CPU minutes. Those ~100 steps show the
    # training step (progress, checkpoints, the loss curve); they cannot improve weights trained for 9,958 steps at batch
    # 512, so they must not hurt them: a small learning rate and an EMA that starts at the loaded weights and keeps them
    # (the measurement: benchmarks/molecule_finetune.py, its figures in docs/molecules.md).
    demo_spec: ClassVar[dict] = {
        "model": {"init_from": "moses-pretrained"},
        "train": {"max_minutes": 1.5, "lr": 3e-5, "warmup_steps": 10, "ema_warmup": False},
    }

    # -- prepare --------------------------------------------------------------------
    def _source_files(self, cfg: MoleculeDataConfig, cache_root: Path) -> tuple[Path, Path | None, str]:
        if cfg.path:
            train = fetch(cfg.path, cache_root / "downloads")
            if not train.exists():
                raise DataError(f"data.path {cfg.path!r} does not exist")
            test = fetch(cfg.test_path, cache_root / "downloads") if cfg.test_path else None
            return train, test, redact_url(str(cfg.path))  # no token of a presigned link in data.json or logs
        files = get_dataset(cfg.source).files()
        test = fetch(cfg.test_path, cache_root / "downloads") if cfg.test_path else files.get("test")
        return files["train"], test, cfg.source

    def prepare(self, config: MoleculeDiffusionConfig, run: Run) -> PreparedData:
        cfg = config.data
        if cfg.path and Path(cfg.path).expanduser().is_dir():
            return prepared_folder(Path(cfg.path).expanduser(), cfg)
        train_file, test_file, source = self._source_files(cfg, run.cache_root)
        fixed: Tokenizer | None = None
        max_length = cfg.max_length
        if config.model.init_from:  # the pretrained model's vocabulary and length limit
            meta = init_meta(resolve_init(config.model.init_from))
            fixed = Tokenizer.from_dict(meta["tokenizer"])
            # a left-to-right model's positions hold each molecule and the <pad> that ends it
            max_length = min(max_length, meta["max_len"] - (meta.get("order") == "autoregressive"))
            if fixed.representation != cfg.representation or fixed.group_indices != cfg.group_indices:
                raise DataError(
                    f"model.init_from uses {fixed.representation} tokens (group_indices={fixed.group_indices}); "
                    f"set data.representation and data.group_indices to match"
                )
        key = {
            "vocabulary": hashlib.sha256(json.dumps(fixed.tokens).encode()).hexdigest() if fixed else None,
            "max_length": max_length,  # the limit in force (a checkpoint's may be shorter than data.max_length)
            "version": PREPARE_VERSION,
            "train": store.file_digest(train_file),
            "test": store.file_digest(test_file) if test_file else None,
            "config": cfg.model_dump(exclude={"workers", "source", "path", "test_path", "max_rejected"}),
        }
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        out = run.cache_root / f"molecules-{fingerprint}"

        def write(folder: Path) -> dict:
            return self._prepare_into(folder, cfg, train_file, test_file, source, fixed, max_length)

        stats, cache = store.prepared_once(out, write)  # one process prepares; others running at once wait and reuse it
        return PreparedData(out, fingerprint, {**stats, "source": source, "cache": cache})  # the file this run read

    def _prepare_into(
        self,
        folder: Path,
        cfg: MoleculeDataConfig,
        train_file: Path,
        test_file: Path | None,
        source: str,
        fixed: Tokenizer | None,
        max_length: int,
    ) -> dict:
        """Validate every molecule with RDKit, tokenise, hold out or read the reference: the prepared files into ``folder``."""
        t0 = time.perf_counter()
        rows = list(read_smiles_rows(train_file, cfg.smiles_column))
        raw_train = [smiles for smiles, why in rows if why is None]
        unreadable = Counter(why for _, why in rows if why is not None)  # rows the reader could not read: counted, never parsed
        rng = np.random.default_rng(cfg.seed)
        if cfg.max_molecules and len(raw_train) > cfg.max_molecules:
            # Validate a random subset of the rows rather than the whole file.
            want = int(cfg.max_molecules / (1 - cfg.test_fraction if test_file is None else 1)) + 1
            raw_train = [
                raw_train[i] for i in sorted(rng.choice(len(raw_train), min(len(raw_train), int(want * 1.05) + 50), replace=False))
            ]
        kept, pieces, rejected = validate_all(raw_train, cfg.representation, cfg.group_indices, cfg.workers)
        rejected.update(unreadable)
        kept, pieces = drop_unusable(kept, pieces, rejected, max_length, fixed.index if fixed else None)
        held_out = 0
        if test_file is None:  # hold out a reference set from the user's file
            perm = rng.permutation(len(kept))
            n_test = max(1, int(len(kept) * cfg.test_fraction))
            test_idx, train_idx = sorted(perm[:n_test]), sorted(perm[n_test:])
            test_smiles = [kept[i] for i in test_idx]
            kept, pieces = [kept[i] for i in train_idx], [pieces[i] for i in train_idx]
            test_stats = {"read": n_test, "kept": n_test, "rejected": {}, "held_out_from": "train"}
            held_out = n_test
        else:
            raw_test = list(read_smiles(test_file, cfg.smiles_column))
            if len(raw_test) > cfg.max_reference:  # a seeded random subset, not the file's head
                raw_test = [raw_test[i] for i in sorted(rng.choice(len(raw_test), cfg.max_reference, replace=False))]
            test_smiles, _, test_rejected = validate_all(raw_test, cfg.representation, cfg.group_indices, cfg.workers)
            test_stats = {"read": len(raw_test), "kept": len(test_smiles), "rejected": dict(test_rejected)}
        if cfg.max_molecules and len(kept) > cfg.max_molecules:
            pick = sorted(rng.choice(len(kept), cfg.max_molecules, replace=False))
            kept, pieces = [kept[i] for i in pick], [pieces[i] for i in pick]
        if len(kept) < 2:
            reasons = ", ".join(f"{n} {r}" for r, n in rejected.most_common()) or "the file is empty"
            raise DataError(f"no usable molecules in {source}: {len(rows)} rows read; rejected: {reasons}")

        tokenizer = fixed or Tokenizer.fit(pieces, cfg.representation, cfg.group_indices)
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        tokens = np.full((len(pieces), int(lengths.max())), PAD_ID, dtype=np.int16)
        for i, p in enumerate(pieces):
            tokens[i, : len(p)] = [tokenizer.index[t] for t in p]

        stats = {
            "source": source,
            "reference": _reference_name(cfg, source, held_out_from_train=test_file is None),
            "representation": cfg.representation,
            "train": {
                "read": len(raw_train) + sum(unreadable.values()),
                "kept": len(kept),
                "held_out": held_out,
                "rejected": dict(rejected.most_common()),
            },
            "test": test_stats,
            "vocab_size": tokenizer.vocab_size,
            "max_length": int(lengths.max()),
            "mean_length": float(lengths.mean()),
            "prepare_seconds": round(time.perf_counter() - t0, 2),
        }
        np.savez(folder / "train.npz", tokens=tokens, lengths=lengths)
        _write_smi(folder / "train.smi", kept)
        _write_smi(folder / "test.smi", test_smiles)
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer.to_dict()))
        (folder / "stats.json").write_text(json.dumps(stats, indent=2))  # last: the marker of a complete folder
        return stats

    # -- fit ------------------------------------------------------------------------
    def fit(self, data: PreparedData, config: MoleculeDiffusionConfig, trainer: Trainer) -> Checkpoint:
        arrays = np.load(data.path / "train.npz")
        tokens = torch.from_numpy(arrays["tokens"].astype(np.int64))
        lengths_np = arrays["lengths"]
        tokenizer = Tokenizer.from_dict(json.loads((data.path / "tokenizer.json").read_text()))
        arch = TransformerConfig(**config.model.model_dump(exclude={"init_from", "order"}))
        order = config.model.order
        max_len, init = tokens.shape[1], None
        if config.model.init_from:
            init_path = resolve_init(config.model.init_from)
            init = init_meta(init_path)
            if init["tokenizer"]["tokens"] != tokenizer.tokens:
                raise DataError("model.init_from's vocabulary differs from the prepared data's; prepare again with the same init_from")
            if init.get("order", "masked") != order:
                raise ConfigError(
                    f"model.init_from holds a {init.get('order', 'masked')} model; set model.order={init.get('order', 'masked')}"
                )
            arch, max_len = TransformerConfig(**init["model"]), init["max_len"]
        # Left to right needs room for the <pad> that ends the longest molecule.
        max_len = max_len + 1 if order == "autoregressive" and init is None else max_len
        if tokens.shape[1] + (order == "autoregressive") > max_len:
            raise DataError(
                f"the prepared molecules need {tokens.shape[1]} positions, the model has {max_len}; prepare again with this init_from"
            )
        torch.manual_seed(config.train.seed)  # the initial weights depend on the seed alone
        model = TransformerDenoiser(arch, tokenizer.vocab_size, max_len, causal=order == "autoregressive")
        if init is not None:
            model.load_state_dict({k: v.float() for k, v in load_weights(init_path)[0].items()})
        device = trainer.device
        bs, seed = config.train.batch_size, config.train.seed

        if device.type == "cuda":  # keep the whole token table on the GPU; batches are gathered there
            tokens = tokens.to(device)
        diffusion = dataclasses.replace(DIFFUSION, weighting=config.train.weighting)

        def loss_fn(model: TransformerDenoiser, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            # The batch depends on (seed, step) alone, so a resumed run sees the same batches.
            idx = np.random.default_rng([seed, step]).integers(0, len(lengths_np), bs)
            idx = trainer.shard(idx)  # this process's rows of the global batch (all of it on one device)
            n = int(lengths_np[idx].max())  # trim the batch to its longest molecule
            if order == "autoregressive":  # every molecule followed by the <pad> that ends it
                x = tokens[torch.from_numpy(idx).to(device), :n]
                x = torch.cat([x, torch.full_like(x[:, :1], PAD_ID)], dim=1)
                ends = x != PAD_ID
                ends[:, 1:] |= x[:, :-1] != PAD_ID  # the targets: each token and the first <pad>
                loss, metrics = AUTOREGRESSIVE.loss(model, x, ends)
                return loss, {**metrics, "tokens": ends.sum()}
            x = tokens[torch.from_numpy(idx).to(device), :n]
            pad_mask = x != PAD_ID
            loss, metrics = diffusion.loss(model, x, pad_mask)
            return loss, {**metrics, "tokens": pad_mask.sum()}

        result = trainer.fit(model, loss_fn, count="tokens")
        weights = trainer.run_dir / "model.safetensors"
        if not trainer.is_main:  # data-parallel: rank 0 writes the model
            return Checkpoint(weights, result.step)
        hist = np.bincount(arrays["lengths"]).tolist()
        started_from = (
            None
            if init is None
            else {
                "name": config.model.init_from,
                "path": str(init_path),
                "provenance": init.get("provenance", {}),
                "step": init.get("step"),
            }
        )
        # What the sampler needs (the host's training.json records the training itself).
        meta = {
            "model": arch.model_dump(),
            "order": order,
            "tokenizer": tokenizer.to_dict(),
            "max_len": int(max_len),
            "init_from": started_from,
            "length_histogram": hist,
            "step": result.step,
        }
        save_weights(model, weights, meta)  # model.safetensors and model.json beside it, each written whole
        notes = []
        if started_from is not None:
            prov = started_from["provenance"]
            notes.append(
                f"started from the checkpoint '{started_from['name']}' ({started_from['step']} steps"
                + (f"; {prov.get('hardware')}; {prov.get('budget')}" if prov else "")
                + f"), not from scratch; {started_from['path']}"
            )
        details = {"representation": tokenizer.representation, "vocabulary": tokenizer.vocab_size, "max_len": int(max_len)}
        return Checkpoint(weights, result.step, details=details, notes=notes)

    # -- sample ---------------------------------------------------------------------
    @staticmethod
    def load_model(weights: Path, device: torch.device | str = "cpu") -> tuple[TransformerDenoiser, Tokenizer, dict]:
        meta = init_meta(weights)
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
        causal = meta.get("order", "masked") == "autoregressive"
        model = TransformerDenoiser(TransformerConfig(**meta["model"]), tokenizer.vocab_size, meta["max_len"], causal=causal)
        state, _ = load_weights(weights)
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model.to(device).eval(), tokenizer, meta

    def sample(self, checkpoint: Checkpoint, config: MoleculeDiffusionConfig, run: Run) -> Samples:
        from genforge.core.training import choose_device

        cfg = config.sample
        device = choose_device(config.train.device)
        model, tokenizer, meta = self.load_model(checkpoint.path, device)
        order = meta.get("order", "masked")
        hist = torch.tensor(meta["length_histogram"], dtype=torch.float)
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        cpu_gen = torch.Generator().manual_seed(cfg.seed)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
        done = 0
        # Streamed batch by batch to the kind's file (one line each, an empty line where a sequence did not
        # decode): memory stays flat at any sample.n, and the file appears whole (renamed when complete).
        with Molecules().stream(run.samples_dir) as write, autocast:
            while done < cfg.n:
                b = min(cfg.batch_size, cfg.n - done)
                if order == "autoregressive":  # drawn left to right; a molecule ends at its first <pad>
                    x = AUTOREGRESSIVE.sample(
                        model,
                        torch.full((b, meta["max_len"]), MASK_ID, device=device),
                        MASK_ID,
                        cfg.temperature,
                        top_p=cfg.top_p,
                        generator=gen,
                    )
                    ended = (x == PAD_ID).cumsum(dim=1) > 0
                    x = torch.where(ended, torch.full_like(x, PAD_ID), x)
                else:
                    lengths = torch.multinomial(hist, b, replacement=True, generator=cpu_gen).to(device)
                    x = DIFFUSION.sample(model, lengths, cfg.steps, cfg.temperature, cfg.strategy, generator=gen, top_p=cfg.top_p)
                write([tokenizer.decode(row[row != PAD_ID].tolist()) for row in x.cpu()])
                done += b
                run.report_progress("sample", done, cfg.n)
        path = run.samples_dir / Molecules.filename
        if order == "autoregressive":
            return Samples("molecules", path, done, {"order": order, "temperature": cfg.temperature, "top_p": cfg.top_p})
        return Samples(
            "molecules", path, done, {"strategy": cfg.strategy, "steps": cfg.steps, "temperature": cfg.temperature, "top_p": cfg.top_p}
        )

    def reference(self, data: PreparedData, config: MoleculeDiffusionConfig) -> Reference:
        # Named as `genforge evaluate --reference` names it: SOURCE-test for a data source's test split
        # (the MOSES evaluator knows MOSES's own by that name), else the file it came from.
        # Recorded by prepare (a prepared folder carries the name of the reference it was made with);
        # data prepared before the name was recorded: worked out from the config.
        name = data.stats.get("reference") or _reference_name(
            config.data, data.stats.get("source", ""), held_out_from_train="held_out_from" in (data.stats.get("test") or {})
        )
        return Reference("molecules", test=data.path / "test.smi", train=data.path / "train.smi", name=name)
