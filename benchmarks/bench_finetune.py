"""Step time of PEBAL fine-tuning versus full-network training of the same model and batch.

Target: a fine-tuning step must not pay for gradients through the trunk; its time is
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
from pebal_core.train import keep_freed_memory
from pebal_core.training_modes import TRAINING_MODES, finetune_logits, freeze_for_finetuning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--arch", default="resnet18", help="architecture (default: the real-time resnet18)")
    parser.add_argument("--width", type=float, default=0.5, help="resnet18 width (ignored for other architectures)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the trainer does on the CPU
    h, w = args.size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, h, w, generator=g)
    labels = torch.randint(0, 19, (args.batch, h, w), generator=g)
    labels[: args.batch // 2, h // 3 : h // 2, w // 3 : w // 2] = 254
    labels[:, -8:] = 255
    loss_fn = PebalLoss(LossConfig())

    kwargs = {"width": args.width} if args.arch == "resnet18" else {}
    torch.manual_seed(0)
    finetuned = build_model(args.arch, **kwargs)
    ft_opt = torch.optim.Adam(freeze_for_finetuning(finetuned), lr=1e-5)
    torch.manual_seed(0)
    full = build_model(args.arch, **kwargs)
    full_opt = torch.optim.Adam(full.parameters(), lr=1e-5)

    def finetune_step() -> None:
        TRAINING_MODES["pebal"].set_train_modes(finetuned, reference_bn=False, frozen_bn=False)
        logits, _ = finetune_logits(finetuned, finetuned.final, images)
        total, _ = loss_fn(logits, labels)
        ft_opt.zero_grad(set_to_none=True)
        total.backward()
        ft_opt.step()

    def full_step() -> None:
        full.train()
        total, _ = loss_fn(full(images), labels)
        full_opt.zero_grad(set_to_none=True)
        total.backward()
        full_opt.step()

    def trunk_forward() -> None:  # what a fine-tuning step runs without gradients
        with torch.no_grad():
            finetuned.eval().features(images)

    def forward() -> None:
        with torch.no_grad():
            finetuned.eval()(images)

    steps = {"finetune": finetune_step, "full": full_step, "trunk": trunk_forward, "forward": forward}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps + 2):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if i >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)
    ft, fu, trunk, fwd = (float(np.median(times[k])) for k in ("finetune", "full", "trunk", "forward"))
    head_share = max(0.0, 1.0 - trunk / fwd)
    trainable = sum(p.numel() for p in finetuned.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in finetuned.parameters())
    setup = f"{args.arch}{f' width {args.width}' if kwargs else ''}, batch {args.batch} x {h}x{w}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {setup}")
    print(f"trainable parameters: PEBAL {trainable:,} of {total_params:,}")
    print(f"full-network step  {fu * 1e3:9.1f} ms (median of {args.steps})")
    print(f"PEBAL fine-tuning  {ft * 1e3:9.1f} ms")
    print(f"ratio fine-tune / full = {ft / fu:.3f}   target <= 0.5: {'PASS' if ft / fu <= 0.5 else 'FAIL'}")
    # A fine-tuning step still runs the trunk forward once and `final` forward + backward (~3 forwards);
    # a full step runs everything three times. With f = final's share of the forward pass, no
    # trainer can do better than (1 - f + 3 f) / 3 for this architecture.
    print(
        f"`final` (+ upsampling) is {head_share:.0%} of a forward pass (trunk {trunk * 1e3:.1f} of "
        f"{fwd * 1e3:.1f} ms); lower bound of the ratio for this architecture ~ {(1 + 2 * head_share) / 3:.2f}"
    )


if __name__ == "__main__":
    main()
