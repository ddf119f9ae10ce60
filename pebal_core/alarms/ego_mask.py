"""The ego-vehicle mask: the image pixels that show the recording car itself.

A camera mounted behind the windscreen sees part of its own car in every frame: the bonnet and
its star, a windscreen frame, the black or smeared border rectification leaves. Those pixels are
never an obstacle on the road, but their appearance (reflections of the sky and the scene on a
curved, polished surface) is nothing the network saw as road, so their anomaly score is high. The
ego mask takes them out of the alarm chain: its pixels never alarm, are left out of the drivable
region (:mod:`~pebal_core.alarms.region`) and of obstacles, and are drawn hatched in the overlay.

A mask is given (``spec`` of :func:`load_ego_mask`, the node's ``alarms.ego_mask`` parameter,
``--ego-mask`` of the command-line tools) as one of

* a **PNG file** (one channel, or colour: converted to grey), non-zero = own vehicle, at the
  camera's resolution or any size of the same aspect ratio; ``pebal mask estimate`` writes one;
* the **name of a shipped mask** (:data:`SHIPPED`, files in ``pebal_core/assets/``);
* **polygons** in pixel coordinates of a stated reference size, the form a parameters file holds:
  ``"2048x1024: 0,1023 2047,1023 2047,930 0,960; 1180,930 1290,930 1235,860"`` (``W x H``, a
  colon, then polygons separated by ``;``, each three or more ``u,v`` corners; ``u`` column,
  ``v`` row, pixel centres at integers).

A mask follows the image size like everything else: :meth:`EgoMask.at` resizes it to a frame's
``H x W`` (area-averaged when shrinking, bilinear when enlarging, then pixels at least half
covered), so a mask made at 2048x1024 applies to a 1024x512 frame of the same camera. A frame
whose aspect ratio differs from the mask's by more than :data:`ASPECT_TOLERANCE` is refused: it
comes from another camera or a cropped stream, and a stretched mask would hide the wrong pixels.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from pebal_core.fileio import atomic_write

SHIPPED: dict[str, tuple[str, str]] = {
    "cityscapes": (
        "ego_mask_cityscapes.png",
        "the Cityscapes recording car (bonnet, star and rectification border, 2048x1024) as the Fishyscapes "
        "Static labels mark it: void in all 30 of them, connected to the bottom row (docs/alarms.md)",
    ),
    "lostandfound": (
        "ego_mask_lostandfound.png",
        "the LostAndFound recording car (bonnet and star, 2048x1024), estimated by `pebal mask estimate` from "
        "LostAndFound frames without their labels (docs/alarms.md)",
    ),
}
"""Shipped masks by name: ``{name: (file in pebal_core/assets, what it is)}``."""
ASPECT_TOLERANCE = 0.01
"""Largest relative difference between a frame's and a mask's width/height ratio."""
MAX_FRACTION = 0.5
"""A mask covering more than this fraction of the image is refused (an inverted mask, most likely)."""
SPEC_HELP = (
    "a PNG (non-zero = own vehicle; `pebal mask estimate` writes one), a shipped mask's name "
    f"({', '.join(SHIPPED)}) or polygons 'WxH: u,v u,v u,v; ...' in pixels of a WxH frame"
)
"""The accepted forms of a mask specification, for help texts."""
_POLYGONS = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*:(.*)$", re.DOTALL)
_EXAMPLE = "2048x1024: 0,1023 2047,1023 2047,930 0,960"


class EgoMaskError(ValueError):
    """A mask that cannot be used; the message names the problem and the fix."""


@dataclass(frozen=True)
class EgoMask:
    """An ego-vehicle mask at its reference size.

    Attributes:
        mask: bool ``H x W``, True on the own vehicle.
        source: where it came from (a file path, ``shipped:<name>`` or ``polygons``), for reports.
    """

    mask: np.ndarray
    source: str
    _sized: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = np.asarray(self.mask)
        if m.ndim != 2 or min(m.shape) < 1:
            raise EgoMaskError(f"ego mask {self.source}: expected an H x W mask, got shape {m.shape}")
        object.__setattr__(self, "mask", m.astype(bool))
        covered = float(self.mask.mean())
        if covered == 0.0:
            raise EgoMaskError(
                f"ego mask {self.source} has no non-zero pixel, so it masks nothing; leave the ego mask unset for "
                "a camera that sees no part of its car, or mark the car's pixels non-zero"
            )
        if covered > MAX_FRACTION:
            raise EgoMaskError(
                f"ego mask {self.source} covers {100 * covered:.0f} % of the image (more than "
                f"{100 * MAX_FRACTION:.0f} %): is it inverted? Non-zero pixels must mark the own vehicle"
            )

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the reference mask (pixels)."""
        return self.mask.shape

    @property
    def fraction(self) -> float:
        """Share of the image the mask covers."""
        return float(self.mask.mean())

    def at(self, shape: tuple[int, ...]) -> np.ndarray:
        """The mask at a frame's ``(H, W)`` (bool, read-only, cached per size); see the module docstring.

        Raises:
            EgoMaskError: the frame's aspect ratio differs from the mask's (another camera).
        """
        h, w = int(shape[0]), int(shape[1])
        sized = self._sized.get((h, w))
        if sized is not None:
            return sized
        mh, mw = self.size
        if abs((w / h) / (mw / mh) - 1.0) > ASPECT_TOLERANCE:
            raise EgoMaskError(
                f"ego mask {self.source} is {mw}x{mh} but the frame is {w}x{h}: another aspect ratio, so "
                "another camera or a cropped image; estimate a mask for this camera (`pebal mask estimate`) or "
                "leave the ego mask unset"
            )
        if (h, w) == (mh, mw):
            sized = self.mask.copy()
        else:
            shrink = h * w < mh * mw
            m = self.mask.astype(np.float32)
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            sized = m >= 0.5
        sized.setflags(write=False)
        if len(self._sized) > 8:  # a node sees one or two sizes; keep the cache small anyway
            self._sized.clear()
        self._sized[(h, w)] = sized
        return sized


def parse_polygons(text: str) -> EgoMask:
    """The mask of polygons written ``"WxH: u,v u,v u,v; ..."`` (module docstring)."""
    match = _POLYGONS.match(text)
    if not match:
        raise EgoMaskError(f"ego mask polygons {text!r}: expected 'WxH: u,v u,v u,v; ...' (e.g. {_EXAMPLE!r})")
    w, h = int(match.group(1)), int(match.group(2))
    if w < 1 or h < 1:
        raise EgoMaskError(f"ego mask polygons: the reference size {w}x{h} must be positive")
    canvas = np.zeros((h, w), np.uint8)
    polygons = [p for p in match.group(3).split(";") if p.strip()]
    if not polygons:
        raise EgoMaskError(f"ego mask polygons {text!r} hold no polygon after '{w}x{h}:' (e.g. {_EXAMPLE!r})")
    for polygon in polygons:
        try:
            corners = [tuple(float(c) for c in point.split(",")) for point in polygon.split()]
        except ValueError:
            corners = []
        if len(corners) < 3 or any(len(c) != 2 for c in corners):
            raise EgoMaskError(
                f"ego mask polygon {polygon.strip()!r}: give three or more corners 'u,v' separated by spaces"
            )
        points = np.round(np.array(corners)).astype(np.int32)
        cv2.fillPoly(canvas, [points], 1)
    return EgoMask(canvas > 0, "polygons")



def shipped_mask_path(name: str) -> Path:
    """The file of the shipped mask ``name`` (:data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise EgoMaskError(f"no shipped ego mask named {name!r}; the shipped masks are {', '.join(SHIPPED)}")
    return Path(str(resources.files("pebal_core.assets").joinpath(SHIPPED[name][0])))


def read_ego_mask(path: str | os.PathLike) -> EgoMask:
    """The mask stored in an image file (non-zero = own vehicle)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EgoMaskError(f"ego mask {path} does not exist; {SPEC_HELP}")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise EgoMaskError(f"cannot read ego mask {path} (not an image OpenCV reads); {SPEC_HELP}")
    return EgoMask(image > 0, str(path))


def load_ego_mask(spec: str | os.PathLike | None) -> EgoMask | None:
    """The mask a specification names (module docstring); None for ``None``, ``""`` or ``"none"`` (no mask)."""
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return None
    text = str(spec).strip()
    if _POLYGONS.match(text):
        return parse_polygons(text)
    if text in SHIPPED:
        mask = read_ego_mask(shipped_mask_path(text))
        return EgoMask(mask.mask, f"shipped:{text}")
    return read_ego_mask(text)


def mask_for_frame(mask: EgoMask | None, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    """``(mask at the frame's size, None)``, or ``(None, why)`` when the mask does not fit a frame
    of ``shape`` (another camera's aspect ratio): a stream's frames then run without the mask and
    the caller says so (the ROS node, the bag scorer that replays it). ``(None, None)`` without a mask."""
    if mask is None:
        return None, None
    try:
        return mask.at(shape), None
    except EgoMaskError as e:
        return None, f"{e}; such frames run without an ego mask"


@lru_cache(maxsize=16)
def cached_ego_mask(spec: str) -> EgoMask | None:
    """:func:`load_ego_mask` of ``spec``, loaded once per process (an operating point's mask is
    read for every frame; a file changed on disk is read again only by a new process)."""
    return load_ego_mask(spec)


def write_ego_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a bool ``H x W`` mask as a single-channel PNG (255 = own vehicle), atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"an ego mask is H x W, got shape {mask.shape}")
    ok, data = cv2.imencode(".png", np.where(mask, 255, 0).astype(np.uint8))
    if not ok:
        raise OSError(f"could not encode the ego mask for {path}")
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return path
