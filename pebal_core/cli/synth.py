"""``pebal synth``: generate the synthetic street world."""

from __future__ import annotations

import argparse
from pathlib import Path

from pebal_core.cli.errors import UserError


def add_synth(p: argparse.ArgumentParser) -> None:
    from pebal_core.data.synthetic.config import PARTS, WorldConfig

    d = WorldConfig()
    p.description = (
        "Generate, deterministically from --seed, a procedurally drawn urban world in the real dataset "
        "layouts under --out: cityscapes/ (inlier street scenes, gtFine labelIds + labelTrainIds), coco/ "
        "(outlier-exposure objects: train2017 JPEGs, instances_train2017.json with RLE masks, Meta-OoD "
        "ood_seg_train2017 PNGs), fishyscapes/ (LostAndFound and Static validation splits, labels 0/1/255, "
        "anomalies from test-only object families) and lostandfound/ (ego-motion sequences with gtCoarse, "
        "camera and timestamp files), plus world.json describing everything drawn. The same seed and options "
        "give byte-identical files."
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help=f"image size (default {d.height} {d.width})")
    p.add_argument("--small", action="store_true", help="a tiny world for smoke tests (64x128, a few images per part)")
    p.add_argument("--train", type=int, help=f"Cityscapes train images (default {d.train})")
    p.add_argument("--val", type=int, help=f"Cityscapes val images (default {d.val})")
    p.add_argument("--coco", type=int, help=f"COCO outlier-exposure images (default {d.coco})")
    p.add_argument("--fishyscapes", type=int, help=f"Fishyscapes images per split (default {d.fishyscapes})")
    p.add_argument("--sequences", type=int, help=f"LostAndFound sequences (default {d.sequences})")
    p.add_argument("--frames", type=int, help=f"frames per sequence (default {d.frames})")
    p.add_argument("--fps", type=float, help=f"sequence frame rate in Hz (default {d.fps:g})")
    p.add_argument(
        "--parts", nargs="+", choices=PARTS, help="generate only these parts (default: all); others keep their files"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1; output is identical)")
    p.add_argument("--overwrite", action="store_true", help="replace parts that already exist under --out")
    p.add_argument("--preview", type=Path, help="also write a contact sheet PNG of the generated world")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_synth(args: argparse.Namespace) -> int:
    import dataclasses

    from pebal_core.data.synthetic.config import SMALL, WorldConfig
    from pebal_core.data.synthetic.writers import generate_world

    options = dict(SMALL) if args.small else {}
    if args.size:
        options["height"], options["width"] = args.size
    for key in ("train", "val", "coco", "fishyscapes", "sequences", "frames", "fps"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.parts:
        options["parts"] = tuple(args.parts)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    config = WorldConfig(seed=args.seed, **options)
    manifest = generate_world(args.out, config, workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    counts = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k in ("train", "val", "coco", "fishyscapes", "sequences", "frames")
    }
    print(
        f"wrote {', '.join(config.parts)} under {args.out} (seed {config.seed}, {config.height}x{config.width}, "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + ")"
    )
    if args.preview:
        from pebal_core.world_preview import write_contact_sheet

        write_contact_sheet(args.out, args.preview, manifest)
        print(f"wrote {args.preview}")
    return 0


COMMANDS = {
    "synth": ("generate the synthetic world (Cityscapes, COCO, Fishyscapes, LostAndFound trees)", add_synth, run_synth)
}
"""Sub-command name -> (one-line help, declare its arguments on its parser, run it)."""
