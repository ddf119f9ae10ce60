"""``pebal_bag``: camera frames -> ROS 2 bags, bag info, replay, recording and scoring.

Subcommands (``pebal_bag COMMAND --help`` for all options):

``convert ROOT OUT``
    An image source (file, folder, glob, video), a LostAndFound tree or a Validation_Dataset
    bundle -> bag(s) of ``sensor_msgs/Image`` (or ``CompressedImage``) and
    ``sensor_msgs/CameraInfo`` (:mod:`pebal_ros.bag_convert`); no ROS graph involved.
``info BAG``
    Storage, files, size, duration, start and end, and per topic its type and message count,
    like ``ros2 bag info``.
``play BAG``
    Publish a bag at the recorded pace with rclpy (:mod:`pebal_ros.bag_play`), with ``--clock``
    also ``/clock`` from the bag's time (for nodes with ``use_sim_time``).
``record -o OUT TOPIC...``
    Write what arrives on topics to a bag (:mod:`pebal_ros.bag_record`).
``export BAG OUT --topic TOPIC``
    The images of one topic as PNG files, e.g. the node's ``anomaly_overlay`` of a recording
    (:mod:`pebal_ros.bag_export`).
``recover PARTIAL [-o OUT]``
    Turn the partial data a killed recorder left into a bag (:mod:`pebal_ros.bag_recover`).
``mask BAG --topic TOPIC``
    The ego-vehicle mask of a recorded camera: frames sampled over the recording, the estimate of
    ``pebal mask estimate`` (:mod:`pebal_ros.bag_mask`).
``score OUTPUT_BAG --input CONVERTED``
    AUROC / AP / FPR95 of a recorded ``anomaly_score`` against the ground truth, per sequence and
    overall, optionally with offline baselines (:mod:`pebal_ros.bag_score`).

Errors a user can fix (missing or corrupt bags, dataset problems, bad options) print one
``pebal_bag: error: ...`` line and exit with status 2 (``PEBAL_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pebal_core.console import run_reporting_errors

ROS_TIME_NOTE = "Stamps and bag times are nanoseconds since the Unix epoch."


def _user_errors(command: str) -> tuple[type[BaseException], ...]:
    """Errors reported as one line. Only ``score`` loads models (and so torch): recording, playing,
    recovering and converting must not import torch (slow start, and a Ctrl-C during its import
    gave tracebacks or SIGABRT), so CheckpointError is imported for ``score`` alone."""
    from pebal_core.data.base import DatasetError
    from pebal_ros.bag_storage import BagError

    errors = (BagError, DatasetError, ValueError, FileNotFoundError, OSError)
    if command == "score":
        from pebal_core.models.checkpoint import CheckpointError

        errors += (CheckpointError,)
    return errors


def _size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) <= 0 or int(w) <= 0:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH like 512x1024, got {text!r}")
    return int(h), int(w)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# ----------------------------------------------------------------------------- convert
def _add_convert(p: argparse.ArgumentParser) -> None:
    from pebal_ros.bag_convert import DEFAULT_START_TIME, IMAGE_FORMATS, RAW_ENCODINGS, TIMESTAMP_MODES
    from pebal_ros.bag_storage import STORAGES

    p.description = (
        "Write camera frames as sensor_msgs/Image (or CompressedImage) + sensor_msgs/CameraInfo into ROS 2 bags. "
        "ROOT is an image source (an image or video file, a folder of images, a glob like 'frames/*.png': one bag "
        "OUT/<name>, or OUT with --single; CameraInfo from --camera-info, else a stated default), a LostAndFound "
        "tree (leftImg8bit/<split>/<seq>/..., camera/, timestamp/: one bag per sequence OUT/<sequence>, or one for "
        "all with --single) or a Validation_Dataset bundle (<SET>/images/, <SET>/labels_masks/: one bag per set). "
        + ROS_TIME_NOTE
    )
    p.add_argument(
        "root",
        help="image source (file, folder, glob, video), LostAndFound folder (holding leftImg8bit/, camera/, ...) or "
        "Validation_Dataset folder (holding <SET>/images/)",
    )
    p.add_argument("out", type=Path, help="output folder of bags, or the bag itself with --single")
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--sequence", action="append", help="convert only this sequence (repeatable)")
    p.add_argument("--frames", type=int, help="at most this many frames (the first in sequence/frame order)")
    p.add_argument("--single", action="store_true", help="one bag for all frames instead of one per sequence")
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="bag storage (default: mcap)")
    p.add_argument(
        "--format",
        choices=IMAGE_FORMATS,
        default="raw",
        help="raw: sensor_msgs/Image; png (original file bytes) / jpeg: sensor_msgs/CompressedImage on "
        "<image-topic>/compressed (default: raw)",
    )
    p.add_argument("--encoding", choices=RAW_ENCODINGS, default="rgb8", help="raw image encoding (default: rgb8)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1..100 (default: 95)")
    p.add_argument("--image-topic", default="/camera/image_raw", help="(default: /camera/image_raw)")
    p.add_argument("--info-topic", default="/camera/camera_info", help="(default: /camera/camera_info)")
    p.add_argument("--frame-id", default="camera_optical_frame", help="header frame_id (default: camera_optical_frame)")
    p.add_argument(
        "--camera-info",
        metavar="YAML",
        help="ROS camera calibration file (camera_calibration's format) for the CameraInfo of frames without a "
        "camera file (default: none; an image source gets fx = fy = image width, principal point at the centre)",
    )
    p.add_argument(
        "--timestamps",
        choices=TIMESTAMP_MODES,
        default="auto",
        help="files: the timestamp/ files; rate: --start-time + i / --rate; auto: files when every frame has one, "
        "else rate (default: auto)",
    )
    p.add_argument("--rate", type=_positive, default=10.0, help="frames per second of rate stamps (default: 10)")
    p.add_argument(
        "--start-time",
        type=float,
        default=DEFAULT_START_TIME,
        help=f"first rate stamp, seconds since the epoch (default: {DEFAULT_START_TIME:.0f})",
    )


def _run_convert(args: argparse.Namespace) -> int:
    from pebal_ros.bag_convert import ConvertOptions, convert

    options = ConvertOptions(
        split=args.split,
        sequences=tuple(args.sequence) if args.sequence else None,
        limit=args.frames,
        per_sequence=not args.single,
        storage=args.storage,
        image_format=args.format,
        encoding=args.encoding,
        jpeg_quality=args.jpeg_quality,
        image_topic=args.image_topic,
        info_topic=args.info_topic,
        frame_id=args.frame_id,
        timestamps=args.timestamps,
        rate=args.rate,
        start_time=args.start_time,
        camera_info=args.camera_info,
    )
    for bag in convert(args.root, args.out, options):
        note = f"; {len(bag.without_camera)} without camera JSON (no CameraInfo)" if bag.without_camera else ""
        print(f"{bag.path}: {bag.frames} frames of {', '.join(bag.sequences)}, stamps from {bag.stamps_from}{note}")
    return 0


# ----------------------------------------------------------------------------- play
def _add_play(p: argparse.ArgumentParser) -> None:
    from pebal_ros.bag_play import DEFAULT_CLOCK_HZ

    p.description = (
        "Publish a bag's messages (raw CDR, header stamps unchanged) at the recorded pace. "
        "ROS arguments may follow --ros-args."
    )
    p.add_argument("bag", type=Path, help="bag folder")
    p.add_argument("--rate", type=_positive, default=1.0, help="speed factor (default: 1)")
    p.add_argument("--start-offset", type=float, default=0.0, help="start this many seconds into the bag")
    p.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    p.add_argument("--topics", nargs="+", help="publish only these topics")
    p.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="publish topic OLD on NEW")
    p.add_argument("--max-gap", type=_positive, help="shorten pauses longer than this many bag seconds")
    p.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long until every played topic has a subscriber (default: 0, don't wait)",
    )
    p.add_argument(
        "--subscribers",
        action="append",
        default=[],
        metavar="TOPIC:N",
        help="with --wait-for-subscribers: wait for N subscribers on TOPIC (repeatable; other topics: 1)",
    )
    p.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before the first message")
    p.add_argument(
        "--clock",
        type=_positive,
        nargs="?",
        const=DEFAULT_CLOCK_HZ,
        metavar="HZ",
        help="also publish /clock (rosgraph_msgs/Clock) from the bag's time, HZ times a second (default "
        f"{DEFAULT_CLOCK_HZ:g}), for nodes run with use_sim_time:=true",
    )


def _subscriber_counts(items: list[str]) -> dict[str, int]:
    """``["/topic:2", ...]`` -> ``{"/topic": 2}``."""
    out = {}
    for item in items:
        topic, sep, count = item.rpartition(":")
        if not sep or not count.isdigit():
            raise ValueError(f"--subscribers takes TOPIC:N like /camera/camera_info:2, got {item!r}")
        out[topic] = int(count)
    return out


def _run_play(args: argparse.Namespace) -> int:
    import rclpy

    from pebal_ros.bag_play import Player, PlayOptions, parse_remaps

    options = PlayOptions(
        rate=args.rate,
        start_offset=args.start_offset,
        loops=0 if args.loop else 1,
        topics=tuple(args.topics) if args.topics else None,
        remap=parse_remaps(args.remap),
        max_gap=args.max_gap,
        wait_for_subscribers=args.wait_for_subscribers,
        subscribers=_subscriber_counts(args.subscribers),
        delay=args.delay,
        clock=args.clock,
    )
    from rclpy.signals import SignalHandlerOptions

    from pebal_ros.dds_profile import apply_profile, profile_note

    print(profile_note(apply_profile()), flush=True)  # before rclpy.init: read when the participant is created

    # Ctrl-C raises KeyboardInterrupt here; rclpy's signal handling (which would shut the context
    # down from another thread while this one closes the player) stays off.
    rclpy.init(args=args.ros_args, signal_handler_options=SignalHandlerOptions.NO)
    player = None
    try:
        player = Player(args.bag, options)
        print(f"playing {args.bag} ({', '.join(player.publishers[t].topic_name for t in player.topics)})", flush=True)
        result = player.play()
    except KeyboardInterrupt:
        print("pebal_bag play: interrupted", file=sys.stderr)
        return 130
    finally:
        if player is not None:
            player.close()
        rclpy.try_shutdown()
    counts = ", ".join(f"{t} {n}" for t, n in result.published.items())
    print(f"published {sum(result.published.values())} messages in {result.wall_s:.2f} s ({counts})")
    return 0


# ----------------------------------------------------------------------------- info
def _add_info(p: argparse.ArgumentParser) -> None:
    p.description = "Show a bag's storage, files, size, time span, and per topic its type and message count."
    p.add_argument("bag", type=Path, help="bag folder")


def _run_info(args: argparse.Namespace) -> int:
    from pebal_ros.bag_storage import bag_info

    print(format_info(bag_info(args.bag)))
    return 0


def _time_text(ns: int) -> str:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%b %d %Y %H:%M:%S")
    return f"{stamp}.{ns % 1_000_000_000:09d} UTC ({ns // 1_000_000_000}.{ns % 1_000_000_000:09d})"


def format_info(info: object) -> str:
    """``ros2 bag info``-style text of a :class:`pebal_ros.bag_storage.BagInfo`."""
    width = max((len(t.topic) for t in info.topics), default=0)
    lines = [
        f"Bag:               {info.path}",
        f"Files:             {', '.join(f.name for f in info.files)}",
        f"Bag size:          {info.size_bytes / 2**20:.1f} MiB",
        f"Storage id:        {info.storage}",
        f"Duration:          {info.duration_ns / 1e9:.9f} s",
        f"Start:             {_time_text(info.start_ns)}",
        f"End:               {_time_text(info.start_ns + info.duration_ns)}",
        f"Messages:          {info.messages}",
        "Topic information: " + ("(none)" if not info.topics else ""),
    ]
    for t in info.topics:
        lines.append(f"    Topic: {t.topic:{width}s} | Type: {t.msgtype} | Count: {t.count}")
    if info.custom_data:
        lines.append(f"Custom data:       {', '.join(info.custom_data)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- export
def _add_export(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write the images (sensor_msgs/Image or CompressedImage) of one topic of a bag as PNG files named after "
        "their header stamps (<sec>.<nanosec>.png), e.g. the node's overlays of a recording."
    )
    p.add_argument("bag", type=Path, help="bag folder")
    p.add_argument("out", type=Path, help="folder for the PNG files (created)")
    p.add_argument("--topic", default="/anomaly_overlay", help="image topic (default: /anomaly_overlay)")


def _run_export(args: argparse.Namespace) -> int:
    from pebal_ros.bag_export import export_images

    written = export_images(args.bag, args.topic, args.out, progress=sys.stderr.isatty())
    print(f"wrote {len(written)} images of {args.topic} to {args.out}")
    return 0


# ----------------------------------------------------------------------------- record
def _add_record(p: argparse.ArgumentParser) -> None:
    from pebal_ros.bag_storage import STORAGES

    p.description = (
        "Subscribe to topics and write the raw messages (bag time = receive time) to a bag, which "
        "appears at OUT when recording ends (Ctrl-C, SIGTERM, --duration or --idle-timeout). A topic is /name "
        "(type discovered from its publishers) or /name:pkg/msg/Type (subscribed at once, reliable)."
    )
    p.add_argument("topics", nargs="+", help="topics to record")
    p.add_argument("-o", "--out", type=Path, required=True, help="bag folder to create")
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="bag storage (default: mcap)")
    p.add_argument("--duration", type=_positive, help="stop after this many seconds")
    p.add_argument("--idle-timeout", type=_positive, help="stop when nothing arrived for this long (after the first)")


def _run_record(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from pebal_ros.bag_record import Recorder, RecordOptions, stop_on_signals

    options = RecordOptions(
        topics=tuple(args.topics), storage=args.storage, duration=args.duration, idle_timeout=args.idle_timeout
    )
    # Ctrl-C / SIGTERM only set `stop`; the bag is closed here, in this order: no callback runs
    # after the loop (this thread is the only one spinning), the node goes, the bag is written,
    # and only then is the context shut down (see pebal_ros.bag_record).
    from pebal_ros.dds_profile import apply_profile

    apply_profile()  # before rclpy.init: read when the participant is created
    with stop_on_signals() as stop:
        rclpy.init(args=args.ros_args, signal_handler_options=SignalHandlerOptions.NO)
        try:
            recorder = Recorder(args.out, options)
            executor = SingleThreadedExecutor()
            try:
                executor.add_node(recorder.node)
                announced = False
                matched: set[str] = set()
                while not stop.is_set() and not recorder.done():
                    executor.spin_once(timeout_sec=0.05)
                    if recorder.ready and not announced:
                        print(f"recording {len(options.topics)} topics to {args.out}", flush=True)
                        announced = True
                    for topic in recorder.matched_topics() - matched:
                        print(f"matched a publisher on {topic}", flush=True)
                        matched.add(topic)
            finally:
                executor.shutdown(timeout_sec=1.0)
                recorder.close()
        finally:
            rclpy.try_shutdown()
    if recorder.pending_topics:
        print(f"never saw a publisher of {', '.join(recorder.pending_topics)}", file=sys.stderr)
    counts = ", ".join(f"{t} {n}" for t, n in recorder.counts.items())
    print(f"wrote {sum(recorder.counts.values())} messages to {args.out} ({counts})")
    return 0


# ----------------------------------------------------------------------------- recover
def _add_recover(p: argparse.ArgumentParser) -> None:
    p.description = (
        "A recorder that was killed leaves its .mcap/.db3 file without metadata.yaml in "
        "<parent>/.<name>.partial/<name>. Write every complete message of it into a new bag (MCAP: every message "
        "whose bytes all reached the disk; SQLite: every committed message). The partial data is only read; "
        "remove it yourself once the recovered bag is checked."
    )
    p.add_argument("partial", type=Path, help="the partial recording folder (or its .mcap/.db3 file)")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        help="bag folder to create (default: <name>_recovered beside the bag the recording was meant for)",
    )


def _run_recover(args: argparse.Namespace) -> int:
    from pebal_ros.bag_recover import recover
    from pebal_ros.bag_storage import recovered_path

    out = args.out or recovered_path(args.partial)
    result = recover(args.partial, out, progress=sys.stderr.isatty())
    for what in result.lost:
        print(f"not recovered: {what}", file=sys.stderr)
    counts = ", ".join(f"{t} {n}" for t, n in result.counts.items())
    print(f"recovered {sum(result.counts.values())} messages into {out} ({counts}); {args.partial} is unchanged")
    return 0


# ----------------------------------------------------------------------------- score
def _add_score(p: argparse.ArgumentParser) -> None:
    from pebal_core.scoring import BASELINES

    p.description = (
        "Match the recorded anomaly_score images to LostAndFound frames by header stamp (through the "
        "frame index of the converted input bags) and compute pixel AUROC, AP and FPR95 per sequence and overall. "
        "Frames without output, outputs without a frame and frames without labels are counted and reported."
    )
    p.add_argument("output_bag", type=Path, help="bag recorded from the node")
    p.add_argument(
        "--input", type=Path, action="append", required=True, help="converted bag, or a folder of them (repeatable)"
    )
    p.add_argument("--data", type=Path, help="LostAndFound root (default: the one stored in the converted bags)")
    p.add_argument("--score-topic", default="/pebal/anomaly_score", help="(default: /pebal/anomaly_score)")
    p.add_argument("--reference-topic", help="input topic for latency (default: the converted bags' CameraInfo topic)")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=BASELINES,
        help="also score this baseline offline on the same frames with --model (repeatable)",
    )
    p.add_argument(
        "--model", help="checkpoint the node ran, or a shipped model's name (default: the shipped default model)"
    )
    p.add_argument("--input-size", type=_size, help="HEIGHTxWIDTH the node ran the network at (default: native)")
    p.add_argument("--non-hazards", choices=("void", "anomaly"), default="void", help="LostAndFound non-hazard objects")
    p.add_argument("--streaming", action="store_true", help="bounded-memory metrics (certified error bound)")
    p.add_argument("--per-sequence", action="store_true", help="also print the per-sequence table")
    p.add_argument("--json", type=Path, help="write the full report here")


def _run_score(args: argparse.Namespace) -> int:
    from pebal_core.fileio import atomic_write_text
    from pebal_core.model_store import resolve_model
    from pebal_ros.bag_score import ScoreOptions, format_table, score_bag
    from pebal_ros.bag_storage import find_bags

    model = resolve_model(args.model) if args.baseline or args.model else None
    inputs = [bag for path in args.input for bag in find_bags(path)]
    options = ScoreOptions(
        score_topic=args.score_topic,
        reference_topic=args.reference_topic,
        baselines=tuple(dict.fromkeys(args.baseline)),
        model=model,
        input_size=args.input_size,
        data_root=args.data,
        non_hazards=args.non_hazards,
        exact=not args.streaming,
    )
    report = score_bag(args.output_bag, inputs, options)
    print(format_table(report, per_sequence=args.per_sequence))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2, allow_nan=True) + "\n")
    return 0


# ----------------------------------------------------------------------------- mask
def _add_mask(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Estimate the ego-vehicle mask (the pixels of the own car, which never alarm) of the camera recorded on "
        "--topic: frames at least --every seconds apart, at most --max-frames spread over the recording, then the "
        "estimate of `pebal mask estimate` (docs/alarms.md). Writes the mask PNG and a picture to check it. Use "
        "the mask with pebal_node -p alarms.ego_mask:=MASK."
    )
    p.add_argument("bag", type=Path, help="the recording (a bag folder)")
    p.add_argument("--topic", required=True, help="camera topic (sensor_msgs/Image or CompressedImage)")
    p.add_argument("-o", "--out", type=Path, default=Path("ego_mask.png"), help="mask PNG to write (ego_mask.png)")
    p.add_argument("--picture", type=Path, help="picture to write (default: <out>_picture.jpg beside the mask)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between the frames used, at least (1.0)")
    p.add_argument("--max-frames", type=int, default=200, help="use at most this many frames (200)")
    p.add_argument("--force", action="store_true", help="overwrite an existing mask file")


def _run_mask(args: argparse.Namespace) -> int:
    from pebal_core.ego_mask_files import estimate_and_save
    from pebal_ros.bag_mask import sample_frames

    frames = sample_frames(args.bag, args.topic, args.every, args.max_frames)
    print(f"{len(frames.times)} frames of {args.topic}, at least {args.every:g} s apart")
    print(estimate_and_save(frames, frames.names, args.out, args.picture, force=args.force))
    return 0


COMMANDS = {
    "convert": ("image source or dataset tree -> ROS 2 bag(s)", _add_convert, _run_convert),
    "info": ("storage, duration, topics, types and message counts of a bag", _add_info, _run_info),
    "play": ("publish a bag with rclpy at the recorded pace (--clock: and /clock)", _add_play, _run_play),
    "record": ("write topics to a bag", _add_record, _run_record),
    "export": ("the images of a topic as PNG files", _add_export, _run_export),
    "recover": ("turn a partial recording (killed recorder) into a bag", _add_recover, _run_recover),
    "score": ("AUROC / AP / FPR95 of a recorded anomaly_score bag", _add_score, _run_score),
    "mask": ("the ego-vehicle mask of a recorded camera", _add_mask, _run_mask),
}
"""Command -> (one-line help, adds its options to its parser, runs it)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``pebal_bag`` parser; only ``command``'s options are added (the others' imports, e.g. torch
    for ``score``, are not needed to record, play, recover or convert)."""
    parser = argparse.ArgumentParser(
        prog="pebal_bag",
        description=__doc__.split("\n\n", 1)[0].split(": ", 1)[1],
        epilog="Run `pebal_bag COMMAND --help` for the options of each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if name == command:
            add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    import rclpy.utilities

    argv = sys.argv if argv is None else [sys.argv[0], *argv]
    user_args = rclpy.utilities.remove_ros_args(argv)[1:]
    command = next((a for a in user_args if not a.startswith("-")), None)
    args = build_parser(command).parse_args(user_args)
    args.ros_args = argv
    return run_reporting_errors("pebal_bag", lambda: COMMANDS[args.command][2](args), _user_errors(args.command))


if __name__ == "__main__":
    sys.exit(main())
