"""A small regression trained by the engine: ``python ddp_toy.py OUT`` or under ``torchrun``.

Used by tests/test_distributed.py to compare N processes with one on the same global batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from genforge.core import TrainConfig, Trainer

GLOBAL_BATCH = 32


def main(out: Path) -> None:
    if "LOCAL_RANK" in __import__("os").environ:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(512, 8, generator=gen)
    y = (x[:, :1] * 2 - x[:, 1:2]).sin() + 0.1 * torch.randn(512, 1, generator=gen)
    config = TrainConfig(
        max_steps=20,
        batch_size=GLOBAL_BATCH,
        lr=3e-2,
        warmup_steps=3,
        checkpoint_every=10,
        log_every=5,
        ema=0.9,
        grad_clip=0.5,
        device="cpu",
    )
    trainer = Trainer(config, out)

    def loss_fn(net, step):
        idx = torch.randint(0, len(x), (GLOBAL_BATCH,), generator=torch.Generator().manual_seed(step))
        idx = trainer.shard(idx)
        return F.mse_loss(net(x[idx]), y[idx]), {}

    result = trainer.fit(model, loss_fn)
    if trainer.is_main:
        torch.save({"state": model.state_dict(), "init": init, "step": result.step, "world": trainer.world_size}, out / "final.pt")
    if dist.is_initialized():
        dist.barrier()  # no rank tears gloo down while another still talks to it
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
