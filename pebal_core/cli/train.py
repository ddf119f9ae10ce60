"""``pebal train``: train a PEBAL model from a YAML configuration."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pebal_core.cli.errors import UserError

_TRAIN_EPILOG = """\
examples:
  pebal train --config config/train_pebal_cityscapes.yaml
  pebal train --config config/train_pebal_cityscapes.yaml optim.lr=1e-6 loss.ebm_weight=0.01 out_dir=runs/lf
  pebal train --config config/train_pebal_cityscapes.yaml --ablation al_ebm out_dir=runs/al_ebm
  pebal train --config config/train_pretrain_cityscapes.yaml          # full network, 19 classes
  pebal train --config config/realdata_roadmix_espnet.yaml --print-config   # a file with _base_, resolved
  torchrun --standalone --nproc_per_node 4 -m pebal_core.cli train --config config/train_pebal_cityscapes.yaml

Files in out_dir: last.pt (resumable state; rerun the same command to continue after a kill),
history.jsonl (losses), model.safetensors (the result, with the configuration in its metadata).
"""


def add_train(p: argparse.ArgumentParser) -> None:
    from pebal_core.config import ABLATION_ROWS

    p.description = (
        "Train from a YAML configuration (defaults: the paper's hyperparameters; see README "
        "'Training' for every key). mode=pebal fine-tunes only the final block of a Cityscapes-trained "
        "base with the PEBAL loss on AnomalyMix data (Cityscapes + COCO outliers); mode=pretrain trains "
        "the whole network with 19-class cross-entropy on Cityscapes-layout data. An interrupted run "
        "continues from out_dir/last.pt when started again with the same configuration."
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--config",
        type=Path,
        help="YAML configuration file (keys not given keep their defaults; `_base_: FILE` or a list of files "
        "inherits them, relative to this file, later ones winning)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override configuration keys, e.g. optim.lr=1e-6 data.crop=[512,512]",
    )
    p.add_argument(
        "--ablation",
        choices=sorted(ABLATION_ROWS),
        help="a row of the paper's ablation (Table 4), applied before the KEY=VALUE overrides",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (history.jsonl is still written)")


def run_train(args: argparse.Namespace) -> int:
    import yaml

    from pebal_core.config import ABLATION_ROWS, TrainConfig, load_config, to_dict

    overrides = [*(ABLATION_ROWS[args.ablation] if args.ablation else ()), *args.overrides]
    cfg = load_config(TrainConfig, args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from pebal_core.train import train

    try:
        result = train(cfg, progress=not args.no_progress)
    except FloatingPointError as e:
        raise UserError(str(e)) from e
    if int(os.environ.get("RANK", "0")) == 0:
        resumed = f", resumed at step {result.resumed_from}" if result.resumed_from is not None else ""
        print(f"trained {result.global_step}/{result.total_steps} steps{resumed}; wrote {result.model_path}")
    return 0


COMMANDS = {
    "train": ("PEBAL fine-tuning of a network's final block, or full-network pretraining", add_train, run_train)
}
"""Sub-command name -> (one-line help, declare its arguments on its parser, run it)."""
