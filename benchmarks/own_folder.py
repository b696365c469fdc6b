"""An illustrator's own folder, end to end: does ``image-diffusion`` draw the class it is asked for?

    python benchmarks/own_folder.py [--per-class 125] [--set train.max_minutes=15 ...] [--guidance 1 2] [--n 400]
    python benchmarks/own_folder.py --run RUN_ID --folder DIR   # judge an existing run again (DIR holds shapes/)

1. Makes a folder of flat shapes, 64 px, four class sub-folders (circle, square, triangle,
   star), ``--per-class`` each: random fill and background colours, sizes, positions and
   rotations (PIL drawing, seed 0).
2. Trains an independent judge: a small CNN of its own (not the ``image`` evaluator's
   feature network) on 4,000 other shapes drawn the same way (seed 1), at 32 px. Its
   accuracy on the folder's own pictures — which it never saw — is printed; the target
   needs ≥ 0.95.
3. Runs ``genforge run image-diffusion --set data.path=FOLDER --set data.resolution=32``
   with the defaults a folder gets (the plan fits the schedule to ``train.max_minutes``),
   then for each ``--guidance`` draws ``--n`` class-conditional samples (equal shares) with
   ``genforge sample RUN`` — no training — and prints the share the judge finds to be the
   class asked, per class and overall, the run's training record (steps planned and done,
   minutes, stopped by) and a grid of samples beside real pictures (``figures/own_folder_grid.png``
   of each sampling run).
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "triangle", "star")
SIZE = 64


def draw_shape(kind: str, rng: np.random.Generator, size: int = SIZE):
    """One picture: a filled shape of a random colour on a plain background of another."""
    from PIL import Image, ImageDraw

    def colour():
        return tuple(int(v) for v in rng.integers(0, 256, 3))

    bg = colour()
    fg = colour()
    while sum(abs(a - b) for a, b in zip(bg, fg, strict=True)) < 200:  # the shape must stand out
        fg = colour()
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = size * rng.uniform(0.22, 0.36)
    cx, cy = (size / 2 + rng.uniform(-0.12, 0.12) * size for _ in range(2))
    turn = rng.uniform(0, 2 * math.pi)

    def polygon(radii: list[float]) -> list[tuple[float, float]]:
        k = len(radii)
        return [(cx + q * math.cos(turn + 2 * math.pi * i / k), cy + q * math.sin(turn + 2 * math.pi * i / k)) for i, q in enumerate(radii)]

    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "square":
        d.polygon(polygon([r * 1.15] * 4), fill=fg)
    elif kind == "triangle":
        d.polygon(polygon([r * 1.3] * 3), fill=fg)
    else:
        d.polygon(polygon([r * 1.35, r * 0.55] * 5), fill=fg)
    return img


def make_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(kind, rng).save(root / kind / f"{kind}-{i:04d}.png")
    return root


def shapes_array(n_per_class: int, seed: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, res, res, 3) uint8 and (N,) labels, resized as genforge resizes a folder (LANCZOS, square already)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, kind in enumerate(CLASSES):
        for _ in range(n_per_class):
            xs.append(np.asarray(draw_shape(kind, rng).resize((resolution, resolution), Image.LANCZOS)))
            ys.append(label)
    return np.stack(xs), np.asarray(ys)


def folder_array(root: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for label, kind in enumerate(CLASSES):
        for p in sorted((root / kind).glob("*.png")):
            xs.append(np.asarray(Image.open(p).convert("RGB").resize((resolution, resolution), Image.LANCZOS)))
            ys.append(label)
    return np.stack(xs), np.asarray(ys)


class Judge:
    """A small CNN (three conv blocks, global max pool), trained with flips and 90° turns."""

    def __init__(self, resolution: int = 32, seed: int = 0):
        import torch
        from torch import nn

        torch.manual_seed(seed)

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.ReLU())

        self.net = nn.Sequential(
            block(3, 24),
            nn.MaxPool2d(2),
            block(24, 48),
            nn.MaxPool2d(2),
            block(48, 64),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(64, len(CLASSES)),
        )

    @staticmethod
    def _x(images: np.ndarray):
        import torch

        return torch.from_numpy(images).float().permute(0, 3, 1, 2) / 127.5 - 1

    def fit(self, images: np.ndarray, labels: np.ndarray, steps: int = 1500, batch: int = 64) -> None:
        import torch

        x, y = self._x(images), torch.from_numpy(labels)
        opt = torch.optim.AdamW(self.net.parameters(), lr=2e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
        g = torch.Generator().manual_seed(0)
        self.net.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch,), generator=g)
            xb = x[idx]
            xb = torch.rot90(xb, int(torch.randint(0, 4, (1,), generator=g)), dims=(2, 3))
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(-1)
            loss = torch.nn.functional.cross_entropy(self.net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.net.eval()

    def predict(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return np.concatenate([self.net(self._x(images[i : i + 500])).argmax(1).numpy() for i in range(0, len(images), 500)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=125, help="pictures per class in the folder (4 classes)")
    p.add_argument("--folder", help="use (or make) the folder here instead of a temporary one")
    p.add_argument("--run", help="judge this run's samples instead of training one")
    p.add_argument("--set", action="append", default=[], help="override for the run (repeatable)")
    p.add_argument("--judge-steps", type=int, default=1500, help="the judge's training steps (batch 64)")
    p.add_argument("--n", type=int, default=400, help="samples to judge (equal shares of the classes)")
    p.add_argument(
        "--guidance", type=float, nargs="+", default=[1.0, 2.0], help="sample.guidance values to judge, each by genforge sample RUN"
    )
    args = p.parse_args()

    from genforge.core.store import RunStore

    folder = Path(args.folder or tempfile.mkdtemp(prefix="own-folder-")) / "shapes"
    if not folder.exists():
        make_folder(folder, args.per_class)
    print(f"folder {folder}: {args.per_class * len(CLASSES)} pictures, {SIZE} px, classes {', '.join(CLASSES)}", flush=True)

    t0 = time.time()
    judge = Judge()
    train_x, train_y = shapes_array(1000, seed=1, resolution=32)
    judge.fit(train_x, train_y, steps=args.judge_steps)
    real_x, real_y = folder_array(folder, 32)
    real_acc = float((judge.predict(real_x) == real_y).mean())
    print(
        f"judge: trained on 4,000 other shapes in {time.time() - t0:.0f} s; accuracy on the folder's {len(real_y)} real pictures {real_acc:.3f}",
        flush=True,
    )

    if args.run:
        run = RunStore().get(args.run)
    else:
        cmd = [
            sys.executable,
            "-m",
            "genforge.flows.cli",
            "run",
            "image-diffusion",
            "--set",
            f"data.path={folder}",
            "--set",
            "data.resolution=32",
        ]
        for s in args.set:
            cmd += ["--set", s]
        print("$ genforge " + " ".join(cmd[3:]), flush=True)
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"the run failed:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")
        print(f"run took {time.time() - t0:.0f} s", flush=True)
        run = RunStore().get(re.search(r"run folder: (\S+)", out.stdout).group(1))
    training = run.read_json("training.json")
    plan = training.get("plan") or {}
    print(
        f"run {run.id}: {training['step']:,} steps (planned {plan.get('max_steps', '-')} at {plan.get('seconds_per_step', float('nan')):.3f} s/step) "
        f"in {training['train_seconds'] / 60:.1f} min, stopped by {training['stopped_by']}, {training.get('parameters'):,} parameters, "
        f"{training['throughput']['value']:.0f} images/s; notes: {training.get('notes') or 'none'}",
        flush=True,
    )
    rows = []
    for guidance in args.guidance:
        cmd = [
            sys.executable,
            "-m",
            "genforge.flows.cli",
            "sample",
            run.id,
            "--set",
            f"sample.n={args.n}",
            "--set",
            f"sample.guidance={guidance}",
        ]
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"genforge sample failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        sampled = Path(re.search(r"run \S+ in (\S+), sampling from", out.stdout).group(1))
        arrays = np.load(sampled / "samples" / "images.npz")
        images, asked, classes = arrays["images"], arrays["labels"], [str(c) for c in arrays["classes"]]
        order = [classes.index(c) for c in CLASSES]  # the run's class indices (sorted folder names) -> the judge's
        judged = judge.predict(images)
        matched = np.array([order[j] for j in judged]) == asked
        per = {c: float(matched[asked == classes.index(c)].mean()) for c in CLASSES}
        rows.append((guidance, float(matched.mean()), per, time.time() - t0, sampled))
        grid_png = sampled / "figures" / "own_folder_grid.png"
        save_grid(images, asked, classes, real_x, real_y, grid_png)
        print(
            f"guidance {guidance:g}: {matched.mean():.3f} of {len(asked)} samples judged the class asked "
            f"({', '.join(f'{c} {v:.2f}' for c, v in per.items())}); {time.time() - t0:.0f} s; grid {grid_png}",
            flush=True,
        )
    print("\n| guidance | judged as asked | " + " | ".join(CLASSES) + " |")
    print("|---|---|" + "---|" * len(CLASSES))
    for guidance, overall, per, _, _ in rows:
        print(f"| {guidance:g} | {overall:.3f} | " + " | ".join(f"{per[c]:.2f}" for c in CLASSES) + " |")


def save_grid(images, asked, classes, real_x, real_y, path: Path, per_row: int = 8) -> None:
    """Samples (left, one row per class) beside real pictures of the same class (right)."""
    from PIL import Image

    rows = []
    for c in CLASSES:
        fake = images[asked == classes.index(c)][:per_row]
        real = real_x[real_y == CLASSES.index(c)][:per_row]
        gap = np.full((fake.shape[1], 8, 3), 255, np.uint8)
        rows.append(np.concatenate([*fake, gap, *real], axis=1))
    grid = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


if __name__ == "__main__":
    main()
