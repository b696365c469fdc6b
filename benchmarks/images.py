"""Image diffusion: quality against sampler steps for one trained model, and training/sampling throughput.

    python benchmarks/images.py [--run RUN_ID] [--set train.max_steps=2000 ...] [--n 1000]
                                [--samplers heun,euler,stochastic] [--steps 5,10,20,50,100]
    python benchmarks/images.py --throughput [--config plugins/creative/configs/cifar10-32.yaml]
                                [--batch 128,512] [--seconds 30] [--sample-batch 1024]

Quality (default): trains ``image-diffusion`` at its default settings (the digits, CPU; or
uses ``--run``), then for each sampler and step count draws ``--n`` images (every class in
equal shares) and scores them with the ``image`` evaluator against the held-out digits.
The ``real`` row is the floor: as many real training images scored the same way.

Throughput (``--throughput``): the configuration's U-Net on random data at its resolution,
training images/s (bf16 autocast, channels-last, fused AdamW and ``torch.compile`` where
the config asks for it, on CUDA) and sampling network evaluations per second. No data
set is needed, so it runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = [
    ("fd", "FD", "{:.3f}"),
    ("kid", "KID", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("confidence", "confidence", "{:.3f}"),
    ("class_max_share", "top class", "{:.3f}"),
    ("classes_covered", "classes", "{:.0f}"),
    ("label_agreement", "as asked", "{:.3f}"),
    ("nn_ratio", "NN ratio", "{:.2f}"),
]


def quality(args: argparse.Namespace) -> None:
    import torch

    from genforge.core import Samples
    from genforge.core.kinds import Images
    from genforge.core.runner import Steps, create_run, run_all
    from genforge.core.store import RunStore
    from genforge.plugins.creative.images.edm import EDM, SAMPLERS, evaluations, guided, stochastic
    from genforge.plugins.creative.images.evaluator import ImageEvaluator
    from genforge.plugins.creative.images.generator import ImageDiffusion, to_uint8

    if args.run:
        run = RunStore().get(args.run)
    else:
        run = create_run("image-diffusion", overrides=args.set)
        t0 = time.time()
        run_all(run)
        print(f"trained and evaluated run {run.id} in {time.time() - t0:.0f} s")
    training = run.read_json("training.json")
    print(
        f"training: {training['step']} steps in {training['train_seconds']:.0f} s, {training['parameters']:,} parameters, "
        f"{training['throughput']['value']:.0f} {training['throughput']['unit']} (last logging window), stopped by {training['stopped_by']}"
    )
    steps_ = Steps(run)
    reference = steps_.generator.reference(steps_.prepared(), steps_.config)
    net, meta = ImageDiffusion.load_model(steps_.checkpoint().path)
    classes, edm = meta["classes"], EDM(**meta["edm"])
    evaluator, ev_config = ImageEvaluator(), ImageEvaluator.Config(grid=0, pairs=0)
    shape = (meta["image_channels"], meta["resolution"], meta["resolution"])
    rows = []
    out_root = Path(tempfile.mkdtemp(prefix="images-bench-"))
    torch.set_num_threads(args.threads or torch.get_num_threads())

    floors = None  # every row's metrics carry the floor: as many real training images as samples, scored the same way
    for sampler in args.samplers.split(","):
        for steps in map(int, args.steps.split(",")):
            gen = torch.Generator().manual_seed(0)
            labels = torch.arange(args.n) % len(classes) if classes else None
            t0 = time.time()
            chunks = []
            with torch.inference_mode():
                for start in range(0, args.n, 500):
                    lab = labels[start : start + 500] if labels is not None else None
                    b = len(lab) if lab is not None else min(500, args.n - start)
                    noise = torch.randn((b, *shape), generator=gen)
                    denoise = guided(edm, net, lab, args.guidance, len(classes))
                    sig = edm.sigmas(steps)
                    x = (
                        stochastic(denoise, noise, sig, generator=gen)
                        if sampler == "stochastic"
                        else SAMPLERS[sampler](denoise, noise, sig)
                    )
                    chunks.append(to_uint8(x))
            seconds = time.time() - t0
            folder = out_root / f"{sampler}-{steps}"
            arrays = {"images": np.concatenate(chunks)}
            if classes:
                arrays |= {"labels": labels.numpy(), "classes": np.asarray(classes)}
            path = Images().write(arrays, folder)
            ev = evaluator.evaluate(Samples("images", path, args.n), reference, folder / "eval", ev_config)
            nfe = evaluations(sampler, steps) * (2 if classes and args.guidance not in (0.0, 1.0) else 1)
            rows.append((sampler, steps, nfe, f"{args.n / seconds:.0f}", {m.name: m.value for m in ev.metrics}))
            floors = floors or {m.name: m.floor for m in ev.metrics}
            print(f"  {sampler} {steps} steps: {seconds:.1f} s, FD {rows[-1][4]['fd']:.3f}", flush=True)

    rows.insert(0, (f"real ({args.n} training images)", "", "", "", floors))
    print(
        f"\n{args.n} samples per row, guidance {args.guidance}; features: {'classifier' if 'confidence' in floors else 'random (the data has no labels)'}\n"
    )
    header = ["sampler", "steps", "evals/image", "images/s"] + [h for _, h, _ in COLUMNS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for sampler, steps, nfe, rate, values in rows:
        cells = [fmt.format(values[k]) if values.get(k) is not None and np.isfinite(values[k]) else "–" for k, _, fmt in COLUMNS]
        print("| " + " | ".join(map(str, [sampler, steps, nfe, rate] + cells)) + " |")


def throughput(args: argparse.Namespace) -> None:
    import torch
    import yaml

    from genforge.core.plugin_manager import get_generator
    from genforge.core.training import make_optimizer
    from genforge.plugins.creative.images.edm import EDM, heun
    from genforge.plugins.creative.images.unet import UNet

    spec = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    config = get_generator("image-diffusion").Config.model_validate(spec)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res, channels = config.data.resolution, 1 if config.data.origin == "digits" and config.data.color != "rgb" else 3
    n_classes = 10
    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{res}x{res}x{channels}, compile={config.train.compile and device.type == 'cuda'}"
    )
    edm = EDM()
    for batch in map(int, args.batch.split(",")):
        torch.manual_seed(0)
        net = UNet(config.model, channels, res, n_classes).to(device)
        params = sum(p.numel() for p in net.parameters())
        cl = device.type == "cuda"
        if cl:
            net = net.to(memory_format=torch.channels_last)
        opt = make_optimizer([net], config.train, device)
        model = torch.compile(net) if config.train.compile and device.type == "cuda" else net
        x = torch.randn(batch, channels, res, res, device=device)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, n_classes + 1, (batch,), device=device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

        def step():
            with autocast:
                loss, _ = edm.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):  # warm-up (and compile)
            step()
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0, done = time.time(), 0
        while time.time() - t0 < args.seconds:
            step()
            done += 1
        sync()
        rate = done * batch / (time.time() - t0)
        print(f"train  batch {batch:5d}: {rate:9.0f} images/s  ({params / 1e6:.1f} M parameters, {done} steps)", flush=True)
    net.eval()
    b = args.sample_batch
    with torch.inference_mode(), autocast:
        noise = torch.randn(b, channels, res, res, device=device)
        labels = torch.randint(0, n_classes, (b,), device=device)
        denoise = lambda xx, s: edm.denoise(model, xx, s, labels)  # noqa: E731
        heun(denoise, noise, edm.sigmas(2))  # warm-up
        sync()
        t0 = time.time()
        heun(denoise, noise, edm.sigmas(18))
        sync()
        seconds = time.time() - t0
    print(
        f"sample batch {b:5d}: {35 * b / seconds:9.0f} image-evaluations/s; 50,000 images by Heun-18 (35 evaluations) would take {50_000 * 35 / (35 * b / seconds) / 60:.1f} min"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="score an existing image-diffusion run instead of training one")
    p.add_argument("--set", action="append", default=[], help="override for the trained run (repeatable)")
    p.add_argument("--n", type=int, default=1000, help="samples per row")
    p.add_argument("--samplers", default="heun,euler,stochastic")
    p.add_argument("--steps", default="5,10,20,50,100")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--throughput", action="store_true", help="measure training and sampling throughput instead")
    p.add_argument("--config", help="--throughput: a run config (YAML) whose model and data sizes to time")
    p.add_argument("--batch", default="128", help="--throughput: training batch sizes, comma-separated")
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=20.0, help="--throughput: seconds per measurement")
    args = p.parse_args()
    if not args.throughput:
        os.environ.setdefault("GENFORGE_HOME", tempfile.mkdtemp(prefix="images-bench-home-"))
    (throughput if args.throughput else quality)(args)


if __name__ == "__main__":
    main()
