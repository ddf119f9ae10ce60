"""Images people look at: colour heat maps of anomaly scores, tinted overlays, alarm overlays,
the ego-vehicle mask hatched.

All inputs and outputs are numpy arrays; RGB images are ``uint8 H x W x 3``.
"""

from __future__ import annotations

import cv2
import numpy as np

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.pipeline import AlarmFrame

ANOMALY_TINT = (255, 0, 0)
"""RGB colour blended over anomalous pixels in overlays."""
OVERLAY_ALPHA = 0.55
"""Default tint strength of overlays (``pebal predict``; the node's ``overlay_alpha``)."""


def heatmap(score: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map a float score ``H x W`` to an RGB image (OpenCV 'turbo' colour map: blue low, red high).

    ``vmin``/``vmax`` default to the 1st/99th percentiles of the finite scores.
    """
    s = np.asarray(score, dtype=np.float32)
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return np.zeros((*s.shape, 3), dtype=np.uint8)
    lo = float(np.percentile(finite, 1)) if vmin is None else vmin
    hi = float(np.percentile(finite, 99)) if vmax is None else vmax
    norm = np.clip((np.nan_to_num(s, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(
    rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = ANOMALY_TINT, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """The image with pixels where ``mask`` is true blended towards ``color`` by ``alpha``."""
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {mask.shape} differ in size")
    # A blended channel depends only on (value, channel): tabulate the float32 blend for all 256
    # values, apply it with a look-up table and copy it in under the mask (per frame this is
    # several times faster than blending the masked pixels with fancy indexing; same result).
    levels = np.arange(256, dtype=np.float32)[:, None]
    table = (levels * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha).round().astype(np.uint8)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    out = rgb.copy()
    return cv2.copyTo(cv2.LUT(rgb, table.reshape(256, 1, 3)), np.asarray(mask).astype(np.uint8), out)


REGION_COLOR = (0, 200, 255)
"""RGB outline of the alarm region in :func:`alarm_overlay` (cyan: not an alarm colour)."""
CONTOUR_COLOR = (255, 230, 0)
"""RGB outline of each obstacle (yellow)."""
BOX_COLOR = (255, 32, 32)
"""RGB box around each obstacle (red: only alarms are red)."""
EGO_COLOR = (200, 200, 200)
"""RGB hatching and outline of the ego-vehicle mask (light grey: not an alarm colour)."""


def hatch(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = EGO_COLOR, spacing: int = 0) -> np.ndarray:
    """The image with ``mask`` outlined and hatched (diagonal lines every ``spacing`` pixels, 0 =
    the image height / 48, at least 6): pixels left out of the alarms stay visible under the lines."""
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {mask.shape} differ in size")
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    if not mask.any():
        return out
    h = mask.shape[0]
    step = spacing or max(6, h // 48)
    width = max(1, step // 6)
    rows, cols = np.nonzero(mask)
    on_line = ((rows + cols) % step) < width
    out[rows[on_line], cols[on_line]] = color
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, max(1, h // 512), cv2.LINE_AA)
    return out


def caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` with ``text`` in white on a black band in its top left corner (drawn in place)."""
    scale = max(0.4, rgb.shape[1] / 1600)
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(rgb, (0, 0), (w + 8, h + 10), (0, 0, 0), -1)
    cv2.putText(rgb, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return rgb


def ego_mask_picture(
    median: np.ndarray, mask: np.ndarray, frames: list[np.ndarray], names: list[str] | None = None, width: int = 1024
) -> np.ndarray:
    """What ``pebal mask estimate`` found, for a person to check: the per-pixel median of the
    frames (the car sharp, the scene blurred; mask outlined in yellow) and a few of the frames
    (captioned with ``names``), each ``width`` pixels wide with the mask hatched (:func:`hatch`),
    in a grid of two columns (RGB ``uint8``)."""
    names = names if names is not None else [f"frame {i + 1}" for i in range(len(frames))]
    if len(names) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(names)} names")
    tiles = []
    for image, name in zip((median, *frames), ("median of the frames", *names), strict=True):
        h = round(image.shape[0] * width / image.shape[1])
        small = cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)
        sized = cv2.resize(mask.astype(np.uint8), (width, h), interpolation=cv2.INTER_NEAREST) > 0
        tiles.append(caption(hatch(small, sized, EGO_COLOR if image is not median else (255, 230, 0)), name))
    if len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[-1]))
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    return np.concatenate([np.concatenate(tiles[i : i + 2], axis=1) for i in range(0, len(tiles), 2)], axis=0)


def alarm_tint(probability: np.ndarray) -> np.ndarray:
    """RGB tint (uint8 ``N x 3``) of alarm pixels by calibrated probability: orange at 0.5, red at 1."""
    p = np.clip((np.asarray(probability, dtype=np.float32) - 0.5) * 2.0, 0.0, 1.0)
    green = (170.0 * (1.0 - p)).round().astype(np.uint8)
    return np.stack([np.full_like(green, 255), green, np.zeros_like(green)], axis=-1)


def alarm_overlay(frame: FrameContext, alarms: AlarmFrame, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The camera image with what a driver needs: the ego-vehicle mask hatched (grey, when the
    frame has one), the alarm region outlined (cyan), the alarm pixels tinted by their calibrated
    probability (orange at the threshold, red well above it), each obstacle's outline (yellow)
    and box (red) with its distance when known. Pixels outside the alarms keep their colours, so
    nothing is red where there is no alarm.

    Args:
        frame: the frame (its ``rgb`` image, score and probability calibration).
        alarms: the frame's alarms (:meth:`pebal_core.alarms.pipeline.AlarmPipeline.process`).
        alpha: tint strength of alarm pixels.
    """
    if frame.rgb is None:
        raise ValueError("an alarm overlay needs the frame's camera image")
    if alarms.alarms.shape != frame.shape:
        raise ValueError(f"frame {frame.shape} and alarms {alarms.alarms.shape} differ in size")
    out = np.ascontiguousarray(frame.rgb, dtype=np.uint8).copy()
    if frame.ego_mask is not None:
        out = hatch(out, frame.ego_mask)
    if alarms.region is not None:
        contours, _ = cv2.findContours(alarms.region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, REGION_COLOR, 1, cv2.LINE_AA)
    alarm = alarms.alarms
    if alarm.any():
        p = frame.probability(frame.score[alarm])
        blended = out[alarm].astype(np.float32) * (1.0 - alpha) + alarm_tint(p).astype(np.float32) * alpha
        out[alarm] = blended.round().astype(np.uint8)
    thickness = max(1, round(out.shape[0] / 256))
    for ob in alarms.obstacles:
        contours, _ = cv2.findContours(
            (alarms.components == ob.index + 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(out, contours, -1, CONTOUR_COLOR, 1, cv2.LINE_AA)
        u0, v0, u1, v1 = ob.box
        cv2.rectangle(out, (u0 - 2, v0 - 2), (u1 + 2, v1 + 2), BOX_COLOR, thickness)
        if ob.distance is not None:
            text = f"{ob.distance:.0f} m"
            scale = 0.35 * thickness
            (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            y = v0 - 4 if v0 - 4 - h >= 0 else v1 + 4 + h
            cv2.rectangle(out, (u0 - 2, y - h - 2), (u0 - 2 + w + 2, y + 2), (0, 0, 0), -1)
            cv2.putText(out, text, (u0 - 1, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
