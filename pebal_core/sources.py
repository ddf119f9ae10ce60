"""Image sources: an image file, a folder, a glob, a video file or a camera device, as numbered RGB frames.

One ``SOURCE`` string says where frames come from, as ultralytics' ``source=`` does; ``pebal
predict``, ``pebal_camera`` and ``pebal_bag convert`` take the same strings (:func:`open_source`):

=================================  ============================================================
``SOURCE``                         frames
=================================  ============================================================
``street.png``                     one image file (:data:`IMAGE_SUFFIXES`)
``frames/``                        the image files directly in the folder, in natural order
                                   (``2.png`` before ``10.png``)
``'frames/**/*.jpg'``              the image files a glob pattern matches (``**`` recursive),
                                   in natural order; quote it so the shell leaves it alone
``drive.mp4``                      every frame of a video file OpenCV reads (:data:`VIDEO_SUFFIXES`)
``0``, ``/dev/video0``             a V4L2 camera device, by index or path, until it stops
=================================  ============================================================

Every frame is a :class:`SourceFrame`: ``index`` (0-based, counting on across loops), ``name``
(unique within one pass of the source: a file's path relative to the folder or the glob's fixed
part, without its suffix, ``/`` between folders; a video's ``<stem>_<index:06d>``; a device's
``video<N>_<index:06d>``), ``rgb`` (``uint8 H x W x 3``, RGB order) and ``path`` (the image
file; None for video and device frames). ``loop=True`` starts again at the end (files and videos).

Problems raise :class:`SourceError` with the fix in the message: a path that does not exist, a
folder or glob without image files, an image or video OpenCV cannot read, a device that cannot be
opened. Nothing is read before iteration except what is needed to list the files and open a video
or device.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pebal_core.images import read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
"""Suffixes of the image files a folder or glob contributes (case-insensitive)."""
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
"""Suffixes read as video files (case-insensitive)."""
KINDS = ("image", "folder", "glob", "video", "device")


class SourceError(ValueError):
    """A source that cannot be read; the message names it and says what to do."""


@dataclass(frozen=True)
class SourceFrame:
    """One frame of a source (see the module docstring for ``name``)."""

    index: int
    name: str
    rgb: np.ndarray
    """``uint8 H x W x 3``, RGB."""
    path: Path | None = None
    """The image file the frame was read from (None for video and device frames)."""


def natural_key(text: str) -> list:
    """Sort key putting ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text)]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _device_index(spec: str) -> int | None:
    """``"0"`` -> 0, ``"/dev/video2"`` -> 2; None when ``spec`` names no device."""
    if spec.isdigit():
        return int(spec)
    match = re.fullmatch(r"/dev/video(\d+)", spec)
    return int(match.group(1)) if match else None


class ImageSource:
    """Frames of one ``SOURCE`` string; iterate it (once, or forever with ``loop``) and close it.

    Attributes:
        spec: the ``SOURCE`` string as given.
        kind: one of :data:`KINDS`.
        label: a name for the whole source (file or video stem, folder name, ``video<N>``).
        files: the image files, in order (image, folder, glob; empty otherwise).
        fps: the video's or device's own frame rate when it reports one, else None.
    """

    def __init__(self, spec: str | os.PathLike, loop: bool = False) -> None:
        self.spec = str(spec)
        self.loop = loop
        self.files: list[Path] = []
        self.root: Path | None = None
        self.fps: float | None = None
        self._capture: cv2.VideoCapture | None = None
        self._frames: int | None = None
        path = Path(self.spec).expanduser()
        device = _device_index(self.spec)
        if device is not None and not path.is_file():
            self.kind, self.label = "device", f"video{device}"
            self._open_capture(device)
        elif path.is_dir():
            self.kind, self.label, self.root = "folder", path.resolve().name, path
            self.files = sorted((p for p in path.iterdir() if _is_image(p)), key=lambda p: natural_key(p.name))
            if not self.files:
                videos = [p.name for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES]
                hint = f"; it holds video files ({', '.join(sorted(videos)[:3])}): pass one of them" if videos else ""
                raise SourceError(
                    f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}){hint}; point the source at "
                    "the folder with the frames, or at a glob like 'frames/**/*.png' for subfolders"
                )
        elif glob.has_magic(self.spec):
            self.kind = "glob"
            self.root = _glob_root(self.spec)
            self.label = self.root.resolve().name or "frames"
            matches = [Path(p) for p in glob.glob(os.path.expanduser(self.spec), recursive=True)]
            self.files = sorted((p for p in matches if _is_image(p)), key=lambda p: natural_key(str(p)))
            if not self.files:
                raise SourceError(
                    f"the pattern {self.spec!r} matches no image files ({', '.join(IMAGE_SUFFIXES)}); check it with "
                    f"`ls {self.spec}` (quote it on the command line so the shell does not expand it)"
                )
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            self.kind, self.label = "video", path.stem
            self._open_capture(str(path))
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise SourceError(
                    f"{path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                    f"({', '.join(VIDEO_SUFFIXES)}) file; convert it, or rename it if the suffix is wrong"
                )
            self.kind, self.label, self.root = "image", path.stem, path.parent
            self.files = [path]
        else:
            raise SourceError(
                f"no image, folder, video or camera device {self.spec!r}: give an image or video file, a folder of "
                "images, a glob pattern ('frames/*.png') or a camera index (0) / device (/dev/video0)"
            )

    def _open_capture(self, target: int | str) -> None:
        if isinstance(target, int):
            capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
            if not capture.isOpened():
                capture.release()
                raise SourceError(
                    f"cannot open camera device {target} (/dev/video{target}): it is absent, busy or not a V4L2 "
                    "capture device; list the devices with `v4l2-ctl --list-devices` (or `ls /dev/video*`) and "
                    "check that your user may read them (group video)"
                )
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one queued in the driver's buffers
        else:
            capture = cv2.VideoCapture(target)
            if not capture.isOpened():
                capture.release()
                raise SourceError(
                    f"OpenCV cannot open the video {target} (damaged, or a codec its FFmpeg lacks); re-encode it, "
                    "e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`, or extract its frames into a folder"
                )
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self._frames = count if count > 0 else None
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if fps > 0 else None
        self._capture = capture

    @property
    def length(self) -> int | None:
        """Frames in one pass; None when unknown (a device, a video whose container states no count)."""
        return len(self.files) if self.files else self._frames

    def name_of(self, path: Path) -> str:
        """The frame name of an image file of this source (its path below the root, no suffix)."""
        try:
            rel = path.relative_to(self.root) if self.root is not None else Path(path.name)
        except ValueError:
            rel = Path(path.name)
        return rel.with_suffix("").as_posix()

    def __iter__(self) -> Iterator[SourceFrame]:
        index = 0
        while True:
            produced = 0
            for frame in self._one_pass(index):
                yield frame
                index += 1
                produced += 1
            if not self.loop or self.kind == "device" or produced == 0:
                return
            if self._capture is not None:
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def _one_pass(self, start: int) -> Iterator[SourceFrame]:
        if self.files:
            for i, path in enumerate(self.files):
                try:
                    rgb = read_rgb(path)
                except OSError as e:
                    raise SourceError(f"{e}; remove or replace the file, or leave it out of the source") from e
                yield SourceFrame(start + i, self.name_of(path), rgb, path)
            return
        capture = self._capture
        if capture is None:
            raise SourceError(f"source {self.spec} is closed")
        i = 0
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                if i == 0 and start == 0:
                    what = f"camera device {self.spec}" if self.kind == "device" else f"video {self.spec}"
                    raise SourceError(
                        f"{what} opened but gave no frame; check that it is a capture device or a playable video"
                    )
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
            yield SourceFrame(start + i, f"{self.label}_{start + i:06d}", rgb)
            i += 1

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ImageSource({self.spec!r}, kind={self.kind!r})"


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern's matches are named relative to: its parts before the first wildcard."""
    fixed = []
    for part in Path(os.path.expanduser(pattern)).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def open_source(spec: str | os.PathLike, loop: bool = False) -> ImageSource:
    """The :class:`ImageSource` of a ``SOURCE`` string (see the module docstring)."""
    return ImageSource(spec, loop)
