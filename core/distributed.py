"""Data-parallel training: one run's train step in N processes under torchrun.

``Steps.train`` launches ``python -m torch.distributed.run --standalone --nproc-per-node N
-m genforge.core.distributed RUN_DIR`` when ``train.devices > 1``. Each process joins the
process group (NCCL on GPUs, gloo on CPUs), takes the GPU named by ``LOCAL_RANK``, and runs
the same train step; the engine (``genforge.core.training``) does the rest.
On a cluster, launch this module under your own ``torchrun`` (multi-node flags) instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import torch
import torch.distributed as dist


def in_process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def launch(run_dir: Path, nproc: int, out: IO[bytes]) -> subprocess.Popen:
    """Start torchrun for ``run_dir``'s train step; its output goes to ``out``."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "genforge.core.distributed",
        str(run_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    # Its own process group, so that stop() reaches torchrun's workers too.
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop a launched torchrun and its workers: SIGTERM to the group, SIGKILL after ``grace_s``."""
    import signal

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: torchrun --nproc-per-node N -m genforge.core.distributed RUN_DIR", file=sys.stderr)
        return 2
    from .runner import Steps

    steps = Steps(argv[0])
    use_cuda = torch.cuda.is_available() and steps.config.train.device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        steps.train()
        dist.barrier()  # no rank tears the process group down while another still uses it
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
