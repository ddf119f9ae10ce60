"""Image datasets in two real layouts, or any image source -> ROS 2 bags of camera images (and CameraInfo).

Layouts (``ConvertOptions.layout``; ``auto`` recognises them by their folders, and takes anything
else that :func:`pebal_core.sources.open_source` opens as a ``source``):

``lostandfound``
    A LostAndFound tree (``leftImg8bit/<split>/<seq>/<seq>_<seqnum>_<frame>_leftImg8bit.png`` with
    ``gtCoarse/``, ``camera/`` and ``timestamp/`` beside it;
    :func:`pebal_core.data.lostandfound.list_frames`): video sequences with camera files.
``validation``
    The anomaly-segmentation ``Validation_Dataset`` bundle (``<SET>/images/<N>.<ext>`` with
    ``<SET>/labels_masks/<N>.png``; :class:`pebal_core.data.validation_dataset.ValidationDataset`):
    single real frames (RoadAnomaly, RoadAnomaly21, RoadObsticle21, FS_LostFound_full, ...). Each
    set plays the part of a sequence (``sequences`` selects sets), frames are named
    ``<SET>_<N>``, every image of a set is converted (also those without anomaly pixels), and as
    the bundle has no camera or timestamp files the frames get no CameraInfo and rate stamps.
``source``
    Any image source of :mod:`pebal_core.sources`: an image file, a folder of images, a glob, a
    video file (every frame). It is one sequence named after the source (``out/<label>``, or one
    bag with ``per_sequence=False``); frames keep the source's names, get rate stamps and no
    labels (``pebal_bag score`` counts them as unlabelled). Their CameraInfo comes from
    ``camera_info`` (a ROS calibration YAML, :class:`pebal_core.camera_calibration.CameraCalibration`),
    else from the stated default of :meth:`~pebal_core.camera_calibration.CameraCalibration.default`.

Each selected frame becomes, at bag time = header stamp:

* ``sensor_msgs/CameraInfo`` on ``info_topic`` from the frame's Cityscapes camera JSON: ``K =
  [fx 0 u0; 0 fy v0; 0 0 1]``, ``P = [K | 0]`` (the left camera of the rectified stereo pair),
  ``R = I``, ``plumb_bob`` with zero distortion (the images are rectified); frames without a
  camera file get the ``camera_info`` calibration when one is given (source frames: else the
  stated default), otherwise no CameraInfo (counted in the result);
* the image on ``image_topic``: ``sensor_msgs/Image`` (``rgb8`` or ``bgr8``, the decoded pixels
  unchanged) or, with ``image_format`` ``png``/``jpeg``, ``sensor_msgs/CompressedImage`` on
  ``<image_topic>/compressed`` (the image_transport convention; ``png`` stores the original file
  bytes of a PNG file and encodes other frames losslessly, ``jpeg`` re-encodes).

Header stamps come from the ``timestamp/`` files (integer ns) when every selected frame has one
(``timestamps="auto"``), otherwise from ``start_time + i / rate`` over all selected frames in
order, so stamps are unique across every bag of one conversion. A partial set of timestamp
files, duplicate stamps, unreadable images or camera files are errors naming the file.

Each bag carries the frame index in ``metadata.yaml`` ``custom_data`` (key
:data:`INDEX_KEY`): dataset layout and root, split, topics and ``[stamp_ns, sequence, frame name]``
per frame; :func:`labelled_frames` finds each frame's image and evaluation label (0 inlier,
1 anomaly, 255 void) through it, for :mod:`pebal_ros.bag_score`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pebal_core.camera_calibration import CalibrationError, CameraCalibration
from pebal_core.data.base import DatasetError
from pebal_core.data.lostandfound import Frame, eval_lut, list_frames
from pebal_core.data.validation_dataset import ValidationDataset, validation_sets
from pebal_core.images import read_label, read_rgb
from pebal_core.sources import IMAGE_SUFFIXES, open_source
from pebal_ros.bag_storage import BagError, BagWriter, bag_writer, make_qos, split_ns, typestore
from pebal_ros.conversions import ImageConverter, compressed_size

INDEX_KEY = "pebal.frame_index"
"""``custom_data`` key of the frame index (a JSON string)."""
IMAGE_FORMATS = ("raw", "png", "jpeg")
RAW_ENCODINGS = ("rgb8", "bgr8")
TIMESTAMP_MODES = ("auto", "files", "rate")
LAYOUTS = ("auto", "lostandfound", "validation", "source")
DEFAULT_START_TIME = 1_000_000_000.0
"""Seconds since the epoch of the first synthetic stamp (fixed, so converting twice gives equal bags)."""


@dataclass
class ConvertOptions:
    """What :func:`convert` writes (the ``pebal_bag convert`` options)."""

    split: str = "test"
    """LostAndFound split (the validation layout has none)."""
    sequences: tuple[str, ...] | None = None
    """Sequences (validation layout: sets) to convert (None = all of the split / bundle)."""
    limit: int | None = None
    """At most this many frames (the first ones in sequence/frame order)."""
    per_sequence: bool = True
    """One bag per sequence (``<out>/<sequence>``), else one bag at ``<out>``."""
    storage: str = "mcap"
    image_format: str = "raw"
    encoding: str = "rgb8"
    jpeg_quality: int = 95
    image_topic: str = "/camera/image_raw"
    info_topic: str = "/camera/camera_info"
    frame_id: str = "camera_optical_frame"
    timestamps: str = "auto"
    rate: float = 10.0
    """Frames per second of the synthetic stamps (timestamps ``rate`` or ``auto`` without files)."""
    start_time: float = DEFAULT_START_TIME
    layout: str = "auto"
    """``lostandfound``, ``validation``, ``source`` or ``auto`` (see the module docstring)."""
    camera_info: str | None = None
    """ROS camera calibration YAML for the CameraInfo of frames without a camera file (None: only
    source frames get CameraInfo, from the stated default)."""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("layout", self.layout, LAYOUTS),
            ("image_format", self.image_format, IMAGE_FORMATS),
            ("encoding", self.encoding, RAW_ENCODINGS),
            ("timestamps", self.timestamps, TIMESTAMP_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of frames per second, got {self.rate}")
        if not (self.start_time >= 0 and math.isfinite(self.start_time)):
            raise ValueError(f"start_time must be >= 0 seconds, got {self.start_time}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 frame, got {self.limit}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        for name in ("image_topic", "info_topic"):
            topic = getattr(self, name)
            if not topic.startswith("/") or topic.endswith("/") or "//" in topic:
                raise ValueError(f"{name} must be an absolute topic name like /camera/image_raw, got {topic!r}")

    @property
    def image_msgtype(self) -> str:
        return "sensor_msgs/msg/Image" if self.image_format == "raw" else "sensor_msgs/msg/CompressedImage"

    @property
    def image_topic_written(self) -> str:
        """The topic images land on (``/compressed`` appended for compressed formats)."""
        return self.image_topic if self.image_format == "raw" else f"{self.image_topic}/compressed"


@dataclass
class ConvertedBag:
    """One bag written by :func:`convert`."""

    path: Path
    frames: int
    sequences: list[str]
    stamps_from: str
    """``timestamp files`` or ``rate <hz> Hz``."""
    without_camera: list[str] = field(default_factory=list)
    """Names of frames that had no camera JSON (no CameraInfo written)."""


@dataclass(frozen=True)
class ValidationFrame:
    """One image of a ``Validation_Dataset`` set, with the interface of a LostAndFound :class:`Frame`
    that conversion uses (no camera or timestamp file)."""

    sequence: str
    """The set (``FS_LostFound_full``, ``RoadObsticle21``, ...)."""
    number: str
    """``<N>`` of ``images/<N>.<ext>``."""
    image: Path
    label: Path
    camera_file = None
    timestamp_file = None

    @property
    def name(self) -> str:
        return f"{self.sequence}_{self.number}"

    def camera(self) -> None:
        return None

    def timestamp_ns(self) -> None:
        return None


@dataclass(frozen=True)
class SourceImage:
    """One frame of an image source (:mod:`pebal_core.sources`) with the interface of a LostAndFound
    :class:`Frame` that conversion uses (no camera, timestamp or label file)."""

    sequence: str
    """The source's label (file, folder or video name)."""
    name: str
    image: Path | None
    """The image file (None for video frames)."""
    rgb: np.ndarray = field(repr=False, compare=False)
    camera_file = None
    timestamp_file = None

    def camera(self) -> None:
        return None

    def timestamp_ns(self) -> None:
        return None


@dataclass(frozen=True)
class LabelledFrame:
    """A converted frame found again in its dataset: image file and evaluation label (0/1/255)."""

    name: str
    sequence: str
    image: Path
    labelled: bool
    """Whether the frame has a label file (LostAndFound frames may lack one)."""
    _read: object = field(repr=False, compare=False)

    def label(self) -> np.ndarray:
        """``uint8 H x W``: 0 inlier, 1 anomaly, 255 void (only when ``labelled``)."""
        return self._read()


def detect_layout(root: str | os.PathLike) -> str:
    """``lostandfound``, ``validation`` or ``source`` (see the module docstring), from what ``root`` is;
    an error naming all three when it is none of them."""
    path = Path(root)
    if (path / "leftImg8bit").is_dir():
        return "lostandfound"
    if not path.is_dir() or any(_is_image_file(p) for p in path.iterdir()):
        return "source"  # a file, a glob, or a folder of images: open_source says what is wrong with it
    if validation_sets(path):
        return "validation"
    raise DatasetError(
        f"{root} is in no layout pebal_bag convert knows: expected an image source (an image or video file, a folder "
        "of images, a glob like 'frames/*.png'), a LostAndFound tree (<root>/leftImg8bit/<split>/<seq>/...) or a "
        "Validation_Dataset bundle (<root>/<SET>/images/<N>.<ext> with <SET>/labels_masks/<N>.png)"
    )


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _source_frames(spec: str | os.PathLike, options: ConvertOptions) -> Iterator[SourceImage]:
    """The frames of an image source, at most ``options.limit`` of them."""
    with open_source(spec) as source:
        for frame in source:
            if options.limit is not None and frame.index >= options.limit:
                return
            yield SourceImage(source.label, frame.name, frame.path, frame.rgb)


def _validation_frames(root: Path, sets: tuple[str, ...] | None) -> list[ValidationFrame]:
    frames = []
    for name in sets or validation_sets(root):
        data = ValidationDataset(root, name, skip_without_anomaly=False)
        frames += [ValidationFrame(name, s.image.stem, s.image, s.label) for s in data.samples]
    return frames


# ---------------------------------------------------------------------------------------- pieces
def camera_info_fields(camera: dict, height: int, width: int, source: object = "camera JSON") -> dict:
    """CameraInfo fields (``k``, ``p``, ``r``, ``d``, ``distortion_model``, size) from a Cityscapes camera JSON
    (:meth:`pebal_core.camera_calibration.CameraCalibration.from_intrinsics`: the images are rectified)."""
    try:
        intr = camera["intrinsic"]
        fx, fy, u0, v0 = (float(intr[k]) for k in ("fx", "fy", "u0", "v0"))
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{source}: 'intrinsic' needs numeric fx, fy, u0, v0 ({e})") from e
    try:
        return CameraCalibration.from_intrinsics(fx, fy, u0, v0, width, height, source=str(source)).fields()
    except CalibrationError as e:
        raise DatasetError(f"{source}: intrinsics fx={fx}, fy={fy}, u0={u0}, v0={v0} are not a valid camera") from e


def frame_stamps(frames: list[Frame | ValidationFrame], options: ConvertOptions) -> tuple[list[int], str]:
    """Header stamps (ns) of ``frames`` and where they came from (see the module docstring)."""
    with_files = [f for f in frames if f.timestamp_file is not None]
    mode = options.timestamps
    if mode == "auto":
        if with_files and len(with_files) < len(frames):
            lacking = next(f for f in frames if f.timestamp_file is None)
            raise DatasetError(
                f"only {len(with_files)} of {len(frames)} frames have a timestamp file (e.g. {lacking.name} has "
                "none); complete the timestamp/ folder or pass --timestamps rate to stamp every frame at --rate"
            )
        mode = "files" if with_files else "rate"
    if mode == "rate":
        start = round(options.start_time * 1e9)
        return [start + round(i * 1e9 / options.rate) for i in range(len(frames))], f"rate {options.rate:g} Hz"
    stamps = []
    for f in frames:
        if f.timestamp_file is None:
            raise DatasetError(f"frame {f.name} has no timestamp file; use --timestamps rate or auto")
        stamps.append(f.timestamp_ns())
    seen: dict[int, str] = {}
    for f, s in zip(frames, stamps, strict=True):
        if s in seen:
            raise DatasetError(
                f"frames {seen[s]} and {f.name} have the same timestamp {s} ns; stamps must identify frames "
                "(pass --timestamps rate)"
            )
        seen[s] = f.name
    return stamps, "timestamp files"


def select_frames(root: str | os.PathLike, options: ConvertOptions) -> list[Frame | ValidationFrame]:
    """The frames :func:`convert` writes: the chosen sequences of the split (validation layout: the
    chosen sets, in set order then numeric order), cut to ``limit``."""
    layout = detect_layout(root) if options.layout == "auto" else options.layout
    if layout == "source":
        raise DatasetError(f"{root} is an image source, not a dataset with labels (LostAndFound, Validation_Dataset)")
    if layout == "validation":
        frames = _validation_frames(Path(root), options.sequences)
        return frames[: options.limit] if options.limit else frames
    if options.sequences:
        frames = [f for seq in options.sequences for f in list_frames(root, options.split, seq)]
    else:
        frames = list_frames(root, options.split)
    if not frames:
        raise DatasetError(
            f"no frames under {Path(root) / 'leftImg8bit' / options.split}: expected "
            "<seq>/<seq>_<seqnum:06d>_<frame:06d>_leftImg8bit.png files"
        )
    return frames[: options.limit] if options.limit else frames


class _FrameWriter:
    """Turns one frame into its CameraInfo and image messages (typestore objects)."""

    def __init__(self, options: ConvertOptions) -> None:
        self.o = options
        self.types = typestore().types
        self.converter = ImageConverter()
        self.calibration = CameraCalibration.from_yaml(options.camera_info) if options.camera_info else None

    def header(self, ns: int) -> object:
        sec, nanosec = split_ns(ns)
        t = self.types
        return t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=self.o.frame_id
        )

    def image(self, frame: Frame | ValidationFrame | SourceImage, ns: int) -> tuple[object, int, int]:
        """The image message and the image's ``(height, width)``."""
        t = self.types
        decoded = isinstance(frame, SourceImage)
        png_file = frame.image is not None and frame.image.suffix.lower() == ".png"
        if self.o.image_format == "png" and (png_file or not decoded):  # the file's own bytes
            data = np.fromfile(frame.image, dtype=np.uint8)
            size = compressed_size(data)
            if size is None or data[:8].tobytes() != b"\x89PNG\r\n\x1a\n":
                raise DatasetError(f"image {frame.image} is not a readable PNG file")
            msg = t["sensor_msgs/msg/CompressedImage"](
                header=self.header(ns), format="rgb8; png compressed bgr8", data=data
            )
            return msg, size[0], size[1]
        try:
            rgb = frame.rgb if decoded else read_rgb(frame.image)
        except OSError as e:
            raise DatasetError(str(e)) from e
        h, w = rgb.shape[:2]
        if self.o.image_format in ("jpeg", "png"):
            built = self.converter.to_compressed(rgb, self.o.image_format, quality=self.o.jpeg_quality)
            data = np.frombuffer(built.data, dtype=np.uint8)
            return t["sensor_msgs/msg/CompressedImage"](header=self.header(ns), format=built.format, data=data), h, w
        pixels = rgb if self.o.encoding == "rgb8" else np.ascontiguousarray(rgb[..., ::-1])
        built = self.converter.to_image(pixels, self.o.encoding)
        msg = t["sensor_msgs/msg/Image"](
            header=self.header(ns),
            height=built.height,
            width=built.width,
            encoding=built.encoding,
            is_bigendian=built.is_bigendian,
            step=built.step,
            data=np.frombuffer(built.data, dtype=np.uint8),
        )
        return msg, h, w

    def camera_info(
        self, frame: Frame | ValidationFrame | SourceImage, ns: int, height: int, width: int
    ) -> object | None:
        camera = frame.camera()
        if camera is not None:
            fields = camera_info_fields(camera, height, width, frame.camera_file)
        elif self.calibration is not None:
            fields = self.calibration.fields()
        elif isinstance(frame, SourceImage):
            fields = CameraCalibration.default(width, height).fields()
        else:
            return None
        t = self.types
        roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return t["sensor_msgs/msg/CameraInfo"](header=self.header(ns), binning_x=0, binning_y=0, roi=roi, **fields)


def _write_bag(
    path: Path,
    items: Iterable[tuple[Frame | ValidationFrame | SourceImage, int]],
    index: dict,
    options: ConvertOptions,
    progress: tqdm | None,
) -> tuple[list[tuple[int, str, str]], list[str]]:
    """Write ``(frame, stamp)`` items and the frame index (``index`` plus the frames); returns the
    ``(stamp, sequence, name)`` entries written and the names of frames without CameraInfo."""
    fw = _FrameWriter(options)
    without_camera: list[str] = []
    written: list[tuple[int, str, str]] = []
    qos = [make_qos(reliable=True, depth=10)]
    with bag_writer(path, options.storage) as bag:
        bag: BagWriter
        bag.add_topic(options.info_topic, "sensor_msgs/msg/CameraInfo", qos)
        bag.add_topic(options.image_topic_written, options.image_msgtype, qos)
        for frame, ns in items:
            image, h, w = fw.image(frame, ns)
            info = fw.camera_info(frame, ns, h, w)
            if info is None:
                without_camera.append(frame.name)
            else:
                bag.write(options.info_topic, ns, info)
            bag.write(options.image_topic_written, ns, image)
            written.append((ns, frame.sequence, frame.name))
            if progress is not None:
                progress.update(1)
        if not written:
            raise DatasetError(f"no frames to write into {path}")
        index = {
            **index,
            "split": options.split,
            "image_topic": options.image_topic_written,
            "info_topic": options.info_topic,
            "frames": [list(entry) for entry in written],
        }
        bag.set_custom_data(INDEX_KEY, json.dumps(index, separators=(",", ":")))
    return written, without_camera


def _rate_stamps(options: ConvertOptions) -> Iterator[int]:
    """``start_time + i / rate`` in ns, for i = 0, 1, ..."""
    start, i = round(options.start_time * 1e9), 0
    while True:
        yield start + round(i * 1e9 / options.rate)
        i += 1


def convert(
    root: str | os.PathLike, out: str | os.PathLike, options: ConvertOptions | None = None, progress: bool = True
) -> list[ConvertedBag]:
    """Write the bag(s) of a dataset tree or an image source; see the module docstring. Returns one
    entry per bag."""
    options = options or ConvertOptions()
    root, out = Path(root), Path(out)
    layout = detect_layout(root) if options.layout == "auto" else options.layout
    if layout == "source":
        return [_convert_source(str(root), out, options, progress)]
    frames = select_frames(root, options)
    stamps, source = frame_stamps(frames, options)
    if options.per_sequence:
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.sequence, []).append(i)
        jobs = [(out / seq, idx) for seq, idx in groups.items()]
        clash = [str(p) for p, _ in jobs if p.exists()]
        if clash:
            raise BagError(f"{', '.join(clash)} exist already; remove them or choose another output folder")
        out.mkdir(parents=True, exist_ok=True)
    else:
        jobs = [(out, list(range(len(frames))))]
        out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    index = {"layout": layout, "root": str(root.resolve())}
    with tqdm(total=len(frames), desc="convert", unit="frame", disable=not progress) as bar:
        for path, idx in jobs:
            items = [(frames[i], stamps[i]) for i in idx]
            _, missing_cam = _write_bag(path, items, index, options, bar)
            sequences = sorted({f.sequence for f, _ in items})
            results.append(ConvertedBag(path, len(items), sequences, source, missing_cam))
    return results


def _convert_source(spec: str, out: Path, options: ConvertOptions, progress: bool) -> ConvertedBag:
    """One bag of an image source's frames (``out/<label>``, or ``out`` itself without ``per_sequence``)."""
    if options.timestamps == "files":
        raise DatasetError(f"{spec} is an image source without timestamp files; use --timestamps rate (or auto)")
    with open_source(spec) as source:  # opened here first: a bad source fails before anything is written
        label, total = source.label, source.length
    path = out / label if options.per_sequence else out
    if path.exists():
        raise BagError(f"{path} exists already; remove it or choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    if options.limit is not None:
        total = min(total, options.limit) if total is not None else options.limit
    index = {"layout": "source", "root": spec}
    with tqdm(total=total, desc="convert", unit="frame", disable=not progress) as bar:
        items = zip(_source_frames(spec, options), _rate_stamps(options), strict=False)
        written, missing_cam = _write_bag(path, items, index, options, bar)
    return ConvertedBag(path, len(written), [label], f"rate {options.rate:g} Hz", missing_cam)


def read_index(info: dict, bag: object = "bag") -> dict:
    """The frame index of a converted bag's metadata (``BagReader.info``); an error when absent."""
    text = (info.get("custom_data") or {}).get(INDEX_KEY)
    if text is None:
        raise BagError(
            f"{bag} carries no frame index ({INDEX_KEY} in metadata.yaml custom_data): only bags written by "
            "`pebal_bag convert` can be matched to ground truth"
        )
    try:
        index = json.loads(text)
        index["frames"] = [(int(ns), str(seq), str(name)) for ns, seq, name in index["frames"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BagError(f"{bag}: the frame index in metadata.yaml is damaged ({e}); re-convert the dataset") from e
    index.setdefault("layout", "lostandfound")  # bags converted before the validation layout existed
    if index["layout"] not in LAYOUTS[1:]:
        raise BagError(f"{bag}: the frame index names an unknown dataset layout {index['layout']!r}")
    return index


def labelled_frames(
    entries: dict[int, tuple[str, str, str, str, str]], data_root: Path | None = None, non_hazards: str = "void"
) -> dict[int, LabelledFrame]:
    """Stamp -> :class:`LabelledFrame` for index entries ``stamp -> (layout, root, split, sequence, name)``.

    The dataset root comes from the index unless ``data_root`` is given. LostAndFound labels are
    mapped with the test protocol (free space 0, hazards 1, the rest void; ``non_hazards`` as in
    :func:`pebal_core.data.lostandfound.eval_lut`); Validation_Dataset labels with the bundle's
    own convention (RoadAnomaly's 2 -> 1); frames of an image source are unlabelled.
    """
    listed: dict[tuple[str, str, str], dict[str, LabelledFrame]] = {}
    lut_ids, lut_train = eval_lut(non_hazards), eval_lut(non_hazards, train_ids=True)
    out = {}
    for ns, (layout, root, split, sequence, name) in entries.items():
        if layout == "source":  # an image source has no labels: its frames count as unlabelled
            out[ns] = LabelledFrame(name, sequence, Path(root), False, lambda: None)
            continue
        root = str(data_root) if data_root is not None else root
        key = (layout, root, split if layout == "lostandfound" else sequence)
        if key not in listed:
            if not Path(root).is_dir():
                raise DatasetError(
                    f"dataset root {root} (from the converted bag) does not exist; pass --data with its location"
                )
            found: dict[str, LabelledFrame] = {}
            if layout == "validation":
                data = ValidationDataset(root, sequence, skip_without_anomaly=False)
                for i, s in enumerate(data.samples):
                    found[f"{sequence}_{s.image.stem}"] = LabelledFrame(
                        f"{sequence}_{s.image.stem}", sequence, s.image, True, lambda d=data, i=i: d.read_label(i)
                    )
            else:
                for f in list_frames(root, split):
                    file = f.label_ids or f.label_train_ids
                    lut = lut_ids if f.label_ids is not None else lut_train
                    found[f.name] = LabelledFrame(
                        f.name, f.sequence, f.image, file is not None, lambda p=file, t=lut: t[read_label(p)]
                    )
            listed[key] = found
        frame = listed[key].get(name)
        if frame is None:
            where = f"({split})" if layout == "lostandfound" else f"(set {sequence})"
            raise DatasetError(f"frame {name} of the converted bag is not in {root} {where}; pass the right --data")
        out[ns] = frame
    return out
