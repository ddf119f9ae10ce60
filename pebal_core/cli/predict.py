"""``pebal predict``: run a model on image sources and write labels, scores and overlays per frame."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

OUTPUTS_HELP = (
    "<name>_labels.png (trainIds 0..18), <name>_color.png (Cityscapes palette), <name>_score.npy (float32 PEBAL "
    "score, higher = more anomalous), <name>_score.png (heat map) and <name>_overlay.png: the alarms pebal_node "
    "raises on the same frame, at the model's stored operating point (its threshold, region and smallest "
    "obstacle; the persistence filter only for the frames of a video, images are stills): region outlined, "
    "alarm pixels tinted, obstacles boxed"
)
VIDEO_KINDS = ("video", "folder", "glob")
"""Sources whose overlays also go into one video."""



def add_predict(p: argparse.ArgumentParser) -> None:
    from pebal_core.alarms.ego_mask import SPEC_HELP as EGO_HELP

    p.description = (
        "Run a model on image sources and write, per frame: " + OUTPUTS_HELP + ". A SOURCE is an image "
        "file, a folder of images (natural order), a glob ('frames/**/*.png', quoted) or a video file; a frame's "
        "<name> is its file's path below the folder or the glob's fixed part without the suffix, or "
        "<video>_<index:06d>. Two frames with one name (e.g. a.png given from two folders) get <name>_2, ... "
        "so that no frame's outputs replace another's. A video, folder or glob also gets <label>_overlay.mp4, "
        "every overlay in order (at the video's frame rate, else --fps). A frame whose every score is NaN or "
        "infinite (a broken model) gets no files and makes the command fail (exit status 2)."
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image or video file, folder of images, or glob")
    p.add_argument(
        "--model",
        default="default",
        help="checkpoint (torch), .onnx file (onnxruntime, tensorrt), OpenVINO .xml (openvino) or .engine plan "
        "(tensorrt), or a shipped "
        "model's name: 'default' (the real-camera model, the default) or 'synthetic' (see `pebal models`)",
    )
    p.add_argument(
        "--arch",
        help="architecture of a checkpoint without metadata (a bare state_dict, e.g. --arch espnet_p2q8 for the "
        "real Cityscapes ESPNet); see `pebal models`",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime", "openvino", "tensorrt"),
        help="inference backend (default auto: the fastest CPU backend installed, timed on this machine for this "
        "model at its first use and cached in $XDG_CACHE_HOME/pebal; never tensorrt)",
    )
    p.add_argument(
        "--precision",
        help="openvino: fp32 (default) or bf16 (CPUs with bf16 arithmetic); tensorrt: fp16 (default), fp32 or int8",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu or cuda[:N] (torch, onnxruntime), tensorrt[:N] (onnxruntime's TensorRT provider); "
        "default cpu, cuda for --backend tensorrt",
    )
    p.add_argument(
        "--engine-auto-build",
        action="store_true",
        help="tensorrt backend: build a missing engine and rebuild one from another TensorRT version or GPU",
    )
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="run the network at this size")
    p.add_argument(
        "--policy", default="", help="operating point stored in the model to alarm at (default: the model's default)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="energy threshold for the alarms, overriding the operating point's (which then no longer applies as "
        "it was chosen)",
    )
    p.add_argument(
        "--ego-mask",
        metavar="MASK",
        help=f"ego-vehicle mask of the camera, overriding the point's: {EGO_HELP}; 'none' = no mask",
    )
    p.add_argument("--no-smoothing", action="store_true", help="skip the 7x7 Gaussian smoothing of the score")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of a folder's or glob's overlay video (10)")
    p.add_argument("--no-video", action="store_true", help="no overlay videos")
    p.add_argument("-o", "--out", type=Path, default=Path("predictions"), help="output directory (./predictions)")


class OutputNames:
    """Unique output names: a frame's own name, or ``<name>_2``, ``<name>_3``, ... when an earlier frame
    of this run had it (so that no frame's outputs replace another's)."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}
        """Name -> what it was given to (for the note printed on a clash)."""

    def claim(self, name: str, what: str) -> tuple[str, str | None]:
        """``(unique name, a note when it differs from name)``."""
        unique, k = name, 1
        while unique in self.used:
            k += 1
            unique = f"{name}_{k}"
        self.used[unique] = what
        note = None if unique == name else f"{what} is written as {unique}_*: {self.used[name]} has the name {name}"
        return unique, note


class OverlayVideo:
    """An MP4 (``mp4v``) of overlays written to ``<path>.partial.mp4`` and moved to ``path`` when closed;
    frames are scaled to the first frame's size."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.writer = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, rgb) -> None:
        import cv2

        h, w = rgb.shape[:2]
        if self.writer is None:
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise OSError(f"OpenCV cannot write the video {self.partial} (mp4v); pass --no-video")
        if (w, h) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.release()
        os.replace(self.partial, self.path)
        return self.path


def run_predict(args: argparse.Namespace) -> int:
    import logging

    import numpy as np
    from tqdm import tqdm

    from pebal_core.alarms.ego_mask import cached_ego_mask, mask_for_frame
    from pebal_core.alarms.frame import FrameContext
    from pebal_core.alarms.operating_point import resolve_operating_point
    from pebal_core.alarms.pipeline import AlarmPipeline
    from pebal_core.cli.errors import UserError
    from pebal_core.images import write_label, write_rgb
    from pebal_core.labels import colorize
    from pebal_core.model_store import resolve_model
    from pebal_core.runtime import Predictor
    from pebal_core.scoring import nonfinite_pixels
    from pebal_core.sources import open_source
    from pebal_core.visualize import alarm_overlay, heatmap

    sources = [open_source(spec) for spec in args.sources]  # every source checked before the model loads
    if args.backend == "auto":  # say what the first, slow use of a model on this machine is doing
        logging.basicConfig(format="%(message)s")
        logging.getLogger("pebal_core.backends.auto").setLevel(logging.INFO)
    options: dict[str, object] = {"engine_auto_build": True} if args.engine_auto_build else {}
    if args.precision:
        options["precision"] = args.precision
    predictor = Predictor.from_checkpoint(
        resolve_model(args.model),
        backend=args.backend,
        device=args.device or ("cuda" if args.backend == "tensorrt" else "cpu"),
        input_size=tuple(args.input_size) if args.input_size else None,
        smoothing=not args.no_smoothing,
        arch=args.arch,
        **options,
    )
    print(f"backend: {predictor.backend.describe()}")
    overrides = {"threshold": args.threshold, "ego_mask": args.ego_mask}
    resolved = resolve_operating_point(predictor.metadata, args.policy, overrides)
    mask = cached_ego_mask(resolved.point.ego_mask)
    print(f"operating point: {resolved.warning() or resolved.point.describe()}")
    args.out.mkdir(parents=True, exist_ok=True)
    names, videos = OutputNames(), OutputNames()
    lengths = [s.length for s in sources]
    total = sum(lengths) if None not in lengths else None
    written, blind = 0, []
    with tqdm(total=total, unit="frame", desc="predict") as bar:
        for source in sources:
            video = None
            if not args.no_video and source.kind in VIDEO_KINDS:
                label, note = videos.claim(source.label, source.spec)
                video = OverlayVideo(args.out / f"{label}_overlay.mp4", source.fps or args.fps)
                if note:
                    bar.write(f"note: {note}")
            chain = AlarmPipeline(sequence=source.kind == "video")  # a video is a sequence, images are stills
            unfit_said = False
            try:
                for frame in source:
                    what = str(frame.path) if frame.path is not None else f"{source.spec} frame {frame.index}"
                    labels, score = predictor.predict(frame.rgb)
                    bar.update(1)
                    bad = nonfinite_pixels(score)
                    if bad == score.size:
                        bar.write(f"{what}: every score is NaN or infinite: no files written")
                        blind.append(what)
                        continue
                    if args.ego_mask and mask is not None:  # a mask asked for must fit (EgoMaskError otherwise)
                        ego = mask.at(score.shape)
                    else:  # the point's own mask: frames of another camera run without it, as on the node
                        ego, unfit = mask_for_frame(mask, score.shape)
                        if unfit and not unfit_said:
                            bar.write(f"note: {source.spec}: {unfit}")
                            unfit_said = True
                    name, note = names.claim(frame.name, what)
                    if note:
                        bar.write(f"note: {note}")
                    stamp = frame.index / (source.fps or args.fps) if chain.sequence else None
                    context = FrameContext(labels, score, resolved.point, frame.rgb, stamp=stamp, ego_mask=ego)
                    alarms = chain.process(context)
                    stem = args.out / name
                    stem.parent.mkdir(parents=True, exist_ok=True)
                    write_label(f"{stem}_labels.png", labels)
                    write_rgb(f"{stem}_color.png", colorize(labels))
                    np.save(f"{stem}_score.npy", score)
                    write_rgb(f"{stem}_score.png", heatmap(score))
                    picture = alarm_overlay(context, alarms)
                    write_rgb(f"{stem}_overlay.png", picture)
                    if video is not None:
                        video.add(picture)
                    found = f"{len(alarms.obstacles)} obstacle(s)"
                    finite = score[np.isfinite(score)] if bad else score
                    nan = f"; {bad} of {score.size} pixels NaN or infinite" if bad else ""
                    bar.write(f"{what}: score range [{finite.min():.3f}, {finite.max():.3f}]{nan}, {found} -> {stem}_*")
                    written += 1
            finally:
                source.close()
                path = video.close() if video is not None else None
            if path is not None:
                bar.write(f"{source.spec}: {video.frames} overlays -> {path}")
    print(f"{written} frames -> {args.out}/<name>_{{labels,color,score,overlay}}.*")
    if blind:
        raise UserError(
            f"{len(blind)} of {written + len(blind)} frames got no finite anomaly score ({', '.join(blind[:3])}"
            f"{', ...' if len(blind) > 3 else ''}): the model gives NaN/inf everywhere (check its normalisation "
            f"and weights, and the backend {args.backend})"
        )
    return 0


COMMANDS = {
    "predict": ("labels, anomaly score and alarms for images, folders, globs and videos", add_predict, run_predict)
}
"""Sub-command name -> (one-line help, declare its arguments on its parser, run it)."""
