"""Training is a function of its configuration and seed: weight hashes and logs of tiny runs.

Trains the tiny run of ``test/test_train.py`` (a ``resnet18`` of width 0.125 on generated
Cityscapes/COCO trees of 64x128 images, batch 2, 2 epochs, ``log_every=1``) in these variants:

* ``reference``: PEBAL fine-tuning with the default (reference-implementation) loss;
* ``paper``: the same with ``loss.variant=paper``;
* ``pretrain``: full-network pretraining from the same base, with validation mIoU after every epoch;
* ``distill``, ``ce_coco``, ``al_ebm``, ``paper_reg_only``: the distillation term, two rows of the
  paper's ablation, and the paper variant without EBM (trunk in train mode): every loss term and
  every way the terms are summed.

For each it prints the SHA-256 of the trained weights (every tensor of ``model.safetensors``,
in name order) and of ``history.jsonl`` with the ``time`` field removed, then the history lines
themselves. ``--save FILE`` writes this as JSON; ``--compare FILE`` compares with a file saved
from another checkout (e.g. before a refactoring) and exits 1 on any difference. Run both with
the same torch build on the same machine (float results depend on both)::

    OMP_NUM_THREADS=1 python benchmarks/train_identity.py --save /tmp/before.json   # old checkout
    OMP_NUM_THREADS=1 python benchmarks/train_identity.py --compare /tmp/before.json

About 25 s on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the test trees' generator

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from tiny_trees import make_cityscapes, make_coco_ood_seg  # noqa: E402

from pebal_core.config import TrainConfig, load_config  # noqa: E402
from pebal_core.models import build_model  # noqa: E402
from pebal_core.models.checkpoint import save_checkpoint  # noqa: E402
from pebal_core.train import HISTORY_FILE, MODEL_FILE, train  # noqa: E402

RUNS: dict[str, tuple[str, ...]] = {
    "reference": (),
    "paper": ("loss.variant=paper",),
    "pretrain": ("mode=pretrain", "data.val_split=val"),
    "distill": ("loss.distill_weight=0.5",),
    "ce_coco": ("loss.abstention=ce", "loss.ebm=false", "loss.regularizer=false", "data.ood=whole"),
    "al_ebm": ("loss.abstention=fixed", "loss.regularizer=false"),
    "paper_reg_only": ("loss.variant=paper", "loss.ebm=false", "reference_bn=true"),
}
"""Run name -> overrides of the tiny configuration."""


def make_trees(root: Path) -> None:
    """The trees and 19-class base of ``test/test_train.py``'s ``trees`` fixture."""
    make_cityscapes(root / "cityscapes", cities={"aachen": 3, "bochum": 3})
    make_cityscapes(root / "cityscapes", split="val", cities={"ulm": 2}, seed=5)
    make_coco_ood_seg(root / "coco", n=3, size=(40, 48))
    torch.manual_seed(0)
    save_checkpoint(build_model("resnet18", num_classes=19, width=0.125), root / "base.safetensors")


def tiny(trees: Path, out: Path, *overrides: str) -> TrainConfig:
    """``test/test_train.py``'s ``tiny`` configuration."""
    fixed = [
        f"model.base={trees / 'base.safetensors'}",
        "model.arch=null",
        f"data.cityscapes={trees / 'cityscapes'}",
        f"data.coco={trees / 'coco'}",
        "data.crop=[64,128]",
        "data.ood_ratio=0.5",
        "data.workers=0",
        "batch_size=2",
        "epochs=2",
        "threads=1",
        "optim.lr=1e-3",
        "log_every=1",
        f"out_dir={out}",
    ]
    return load_config(TrainConfig, None, [*fixed, *overrides])


def fingerprint(out: Path) -> dict:
    """Weight hash, history hash and history lines (without their ``time``) of a finished run."""
    tensors = load_file(str(out / MODEL_FILE))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    history = []
    for line in (out / HISTORY_FILE).read_text().splitlines():
        record = json.loads(line)
        record.pop("time", None)
        history.append(json.dumps(record))
    return {
        "weights_sha256": h.hexdigest(),
        "history_sha256": hashlib.sha256("\n".join(history).encode()).hexdigest(),
        "history": history,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--save", type=Path, help="write the fingerprints as JSON")
    p.add_argument("--compare", type=Path, help="compare with fingerprints saved by --save; exit 1 if any differ")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_trees(root / "trees")
        for name, overrides in RUNS.items():
            out = root / name
            train(tiny(root / "trees", out, *overrides), progress=False)
            results[name] = fingerprint(out)
            r = results[name]
            print(f"{name:14s} weights {r['weights_sha256'][:16]}  history {r['history_sha256'][:16]}")
    for name, r in results.items():
        print(f"--- {name} history (time removed)")
        print("\n".join(r["history"]))
    if args.save:
        args.save.write_text(json.dumps(results, indent=1))
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = [n for n in RUNS if before.get(n) != results[n]]
        for n in RUNS:
            same = "identical" if n not in differ else "DIFFERENT"
            print(f"{n:14s} weights and history {same} to {args.compare}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
