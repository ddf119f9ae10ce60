"""Step time of PEBAL fine-tuning versus full-network training of the same model and batch.

Target (issue 3): a fine-tuning step must not pay for gradients through the trunk; its time is
at most half of a full-network training step (ratio <= 0.5) on the real-time model
(``resnet18``, width 0.5) at batch 4 x 256x512, here on this machine's CPU.

Both steps use the trainer's own pieces (:mod:`pebal_core.train`) with the same PEBAL loss,
the same AnomalyMix-like labels (trainIds with a pasted 254 region) and Adam; they differ only
in what is trained: ``final`` with the trunk in eval mode under ``torch.no_grad()`` versus every
parameter in train mode. Steps are interleaved so that a busy machine slows both alike.

    python benchmarks/bench_finetune.py [--size 256 512] [--batch 4] [--steps 10] [--width 0.5] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pebal_core.config import LossConfig
from pebal_core.losses import PebalLoss
from pebal_core.models import build_model
from pebal_core.train import finetune_logits, freeze_for_finetuning, set_train_modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = args.size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, h, w, generator=g)
    labels = torch.randint(0, 19, (args.batch, h, w), generator=g)
    labels[: args.batch // 2, h // 3 : h // 2, w // 3 : w // 2] = 254
    labels[:, -8:] = 255
    loss_fn = PebalLoss(LossConfig())

    torch.manual_seed(0)
    finetuned = build_model("resnet18", width=args.width)
    ft_opt = torch.optim.Adam(freeze_for_finetuning(finetuned), lr=1e-5)
    torch.manual_seed(0)
    full = build_model("resnet18", width=args.width)
    full_opt = torch.optim.Adam(full.parameters(), lr=1e-5)

    def finetune_step() -> None:
        set_train_modes(finetuned, "pebal", reference_bn=False)
        total, _ = loss_fn(finetune_logits(finetuned, finetuned.final, images), labels)
        ft_opt.zero_grad(set_to_none=True)
        total.backward()
        ft_opt.step()

    def full_step() -> None:
        full.train()
        total, _ = loss_fn(full(images), labels)
        full_opt.zero_grad(set_to_none=True)
        total.backward()
        full_opt.step()

    times: dict[str, list[float]] = {"finetune": [], "full": []}
    for i in range(args.steps + 2):
        for name, fn in (("finetune", finetune_step), ("full", full_step)):
            t0 = time.perf_counter()
            fn()
            if i >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)
    ft, fu = float(np.median(times["finetune"])), float(np.median(times["full"]))
    trainable = sum(p.numel() for p in finetuned.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in finetuned.parameters())
    setup = f"resnet18 width {args.width}, batch {args.batch} x {h}x{w}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {setup}")
    print(f"trainable parameters: PEBAL {trainable:,} of {total_params:,}")
    print(f"full-network step  {fu * 1e3:9.1f} ms (median of {args.steps})")
    print(f"PEBAL fine-tuning  {ft * 1e3:9.1f} ms")
    print(f"ratio fine-tune / full = {ft / fu:.3f}   target <= 0.5: {'PASS' if ft / fu <= 0.5 else 'FAIL'}")


if __name__ == "__main__":
    main()
