"""``pebal mask estimate``: the ego-vehicle mask of a camera from its frames."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_mask(p: argparse.ArgumentParser) -> None:
    from pebal_core.alarms.ego_estimate import MIN_FRAMES, EstimateSettings

    p.description = "Ego-vehicle masks (docs/alarms.md). `pebal mask estimate --help` for the one sub-command."
    masks = p.add_subparsers(dest="mask_command", required=True, metavar="SUBCOMMAND")
    e = masks.add_parser(
        "estimate",
        help="estimate the mask from frames of different scenes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Find the pixels that show the own car (bonnet and star, a windscreen frame, a rectification border) "
            "in frames of one camera: the part of the image that persistent edges (at the same place in every "
            "frame) cut off from the changing scene and that touches the image border. Writes the mask as a PNG "
            "(255 = own vehicle, at the frames' size) and a picture to check it (the median of the frames and a "
            "few frames, the mask hatched).\n\n"
            f"Give at least {MIN_FRAMES} frames of different places (tens are better; they are read in name "
            "order, at most --max-frames spread evenly over them): frames of one place make the whole scene "
            "look persistent. For a recording, `pebal_bag mask BAG --topic TOPIC` samples the frames from the "
            "bag and runs the same estimate.\n\n"
            "Use the mask with pebal_node (-p alarms.ego_mask:=ego_mask.png), pebal predict / pebal eval / "
            "pebal threshold (--ego-mask ego_mask.png).\n\n"
            "example:\n"
            "  pebal mask estimate recordings/front_camera/ --out ego_mask.png"
        ),
    )
    e.add_argument("inputs", nargs="+", type=Path, help="image files or folders (searched recursively for images)")
    e.add_argument("-o", "--out", type=Path, default=Path("ego_mask.png"), help="mask PNG to write (ego_mask.png)")
    e.add_argument("--picture", type=Path, help="picture to write (default: <out>_picture.jpg beside the mask)")
    e.add_argument("--max-frames", type=int, default=200, help="use at most this many frames, evenly spread (200)")
    e.add_argument(
        "--work-side",
        type=int,
        default=EstimateSettings.work_side,
        help=f"long side (pixels) the frames are analysed at ({EstimateSettings.work_side})",
    )
    e.add_argument("--force", action="store_true", help="overwrite an existing mask file")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")


def image_files(inputs: list[Path]) -> list[Path]:
    """The image files named or found (recursively) in the folders named, in name order per input."""
    from pebal_core.sources import IMAGE_SUFFIXES

    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder")
    return files


def evenly_spread(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spread over them (first and last included)."""
    from pebal_core.alarms.ego_estimate import spread_indices

    return [items[i] for i in spread_indices(len(items), count)]


def run_mask(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pebal_core.alarms.ego_estimate import EstimateSettings
    from pebal_core.ego_mask_files import estimate_and_save
    from pebal_core.images import read_rgb

    files = evenly_spread(image_files(args.inputs), args.max_frames)
    frames = (read_rgb(f) for f in tqdm(files, desc="pebal mask estimate", unit="img", disable=args.no_progress))
    names = [f.name for f in files]
    settings = EstimateSettings(work_side=args.work_side)
    print(estimate_and_save(frames, names, args.out, args.picture, settings, args.force))
    return 0


COMMANDS = {
    "mask": ("the ego-vehicle mask of a camera (pixels of the own car that never alarm)", add_mask, run_mask)
}
"""Sub-command name -> (one-line help, declare its arguments on its parser, run it)."""
