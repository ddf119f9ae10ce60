"""Operating points: when a frame raises an alarm, as one value stored with the model.

An :class:`OperatingPoint` is a score threshold **together with the alarm settings it was chosen
with**: the region alarms are raised in, the smallest obstacle (pixels, counted at a stated image
size) and the persistence filter run on sequences. A threshold means something only with its
settings: the real default model's point was chosen with obstacles of at least 320 pixels at
2048x1024, and the same threshold with 20-pixel obstacles raises several times as many false
alarms.

``pebal threshold`` (:mod:`pebal_core.operating_point_selection`) chooses points on validation data
by a policy and stores them in the model's metadata; :func:`resolve_operating_point` is the one
place that turns a model's metadata and a user's policy and overrides into the point a consumer
runs (the ROS node, ``pebal predict``, the bag scorer, the demo, the benchmarks). An override of
any part of a stored point is named in :attr:`ResolvedPoint.overridden`, so that consumers can say
that the point no longer applies as it was chosen.

A policy is a string:

``tpr95``
    The paper's point: the highest threshold that flags at least 95 % of the anomalous pixels
    (all non-void pixels, no region).
``fpr:<x>``
    A pixel false-alarm budget inside the region: the lowest threshold at which at most a fraction
    ``x`` of the inlier pixels in the region (:mod:`pebal_core.alarms.region`, from the model's own
    prediction) score at or above it.
``fa:<x>``
    An obstacle false-alarm budget: the lowest threshold (on a grid of candidates, scanned from
    high to low and stopped at the first one over budget) at which the single frames produce at
    most ``x`` false-alarm obstacles per frame on average. A false-alarm obstacle is an 8-connected
    component of ``score >= threshold`` inside the region with at least ``min_pixels`` pixels
    and no pixel on a ground-truth anomaly (void pixels are not alarms).
``obstacles:<x>``
    The most labelled obstacles found within a false-alarm budget: of the same grid of candidate
    thresholds, the one whose single frames detect the most labelled obstacles while raising at
    most ``x`` false-alarm obstacles per frame on average (ties: the highest threshold). Obstacles
    are counted as ``pebal eval`` counts them (:mod:`pebal_core.alarms.frame_counts`): a labelled
    obstacle is an 8-connected component of anomaly pixels, detected when a reported obstacle of
    the alarm chain (region, ego mask, smallest obstacle) overlaps it; a reported obstacle on no
    anomaly pixel is a false alarm, also when it lies on void pixels only (a bonnet the labels
    mark void is a false alarm to a driver).

:data:`DEFAULT_POLICY` (``fa:0.1``, at most one false obstacle in ten frames) is what ``pebal
threshold`` stores as a model's default unless told otherwise; each shipped model's default is in
its metadata (``docs/alarms.md``, ``docs/real_model.md``).

Metadata (:data:`METADATA_KEY`; :class:`StoredPoints`)::

    {"default": "<policy>",
     "points": {"<policy>": {<OperatingPoint fields>, <what it measured: tpr, fpr, ..., rule>}},
     "source": {<the data the points were chosen on>}}

A model without that entry but with a bare ``score_threshold`` reads as one point with that
threshold and the default settings; a document that keeps the selection's settings once in its
``source`` gives them to every point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace

from pebal_core.alarms.obstacles import DEFAULT_MIN_PIXELS
from pebal_core.alarms.persistence import PersistenceConfig
from pebal_core.alarms.region import DEFAULT_MIN_FRACTION, REGIONS
from pebal_core.onnx_contract import OPERATING_POINT_KEYS

DEFAULT_POLICY = "fa:0.1"
DEFAULT_POLICIES = ("tpr95", "fpr:0.01", "fpr:0.001", "fa:0.3", DEFAULT_POLICY, "fa:0.05")
"""Policies ``pebal threshold`` computes when none are named (the default one always is)."""
POLICIES_HELP = (
    "tpr95 | fpr:<fraction of inlier region pixels> | fa:<false-alarm obstacles per frame> | "
    "obstacles:<false-alarm obstacles per frame>"
)
"""The policy syntax, for help texts."""
METADATA_KEY = OPERATING_POINT_KEYS[0]
"""Model metadata entry holding the operating points (:class:`StoredPoints`)."""
LEGACY_KEYS = (OPERATING_POINT_KEYS[1], "score_threshold_source")
"""Metadata entries of files whose threshold was stored without its settings (read, never written)."""
DEFAULT_ENERGY_THRESHOLD = -9.0
"""Threshold of a model that stores no operating point: the midpoint of the energy margins PEBAL
trains towards (inlier energies below ``m_in = -12``, anomalous energies above ``m_out = -6``)."""
NO_PERSISTENCE = PersistenceConfig(k=1, n=1, k_off=1)
"""The persistence filter off: every frame on its own (single still images)."""


def parse_policy(text: str) -> tuple[str, float]:
    """``(kind, value)`` of a policy string: ``("tpr", 0.95)``, ``("fpr", x)``, ``("fa", x)`` or
    ``("obstacles", x)``."""
    text = str(text).strip()
    if text == "tpr95":
        return "tpr", 0.95
    kind, _, value = text.partition(":")
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if kind == "fpr" and 0 <= x < 1:
        return "fpr", x
    if kind in ("fa", "obstacles") and 0 <= x and math.isfinite(x):
        return kind, x
    raise ValueError(f"unknown alarm policy {text!r}; use {POLICIES_HELP} (e.g. fpr:0.001, fa:0.05, obstacles:0.5)")


@dataclass(frozen=True)
class OperatingPoint:
    """A score threshold and the alarm settings it was chosen with (see the module docstring).

    Every field but ``threshold`` has a default, and :meth:`to_dict` / :meth:`from_dict` follow the
    fields, so a new setting is one line here (old metadata reads with its default).

    Attributes:
        threshold: energy; a pixel is anomalous where ``score >= threshold``.
        policy: how the threshold was chosen (:func:`parse_policy`), ``""`` when by none.
        region: ``drivable`` or ``all`` (:data:`pebal_core.alarms.region.REGIONS`).
        include_sidewalk: the drivable area includes sidewalk.
        region_min_fraction: road fragments below this fraction of the image are ignored.
        min_pixels: smallest obstacle (8-connected pixels) at ``image_size``.
        image_size: ``(height, width)`` of the images ``min_pixels`` was counted on; other sizes
            scale it with the image area (:meth:`min_pixels_at`). ``None``: the same count at any size.
        persistence: the temporal filter run on image sequences (stills run without it).
        ego_mask: the ego-vehicle mask the point was chosen with and runs with
            (:func:`pebal_core.alarms.ego_mask.load_ego_mask`: a shipped mask's name, polygons, or
            a PNG file); ``""`` = none (``"none"`` reads as ``""``). A name or polygons travel with
            the model; a file path holds on the machine that has the file.
    """

    threshold: float
    policy: str = ""
    region: str = "drivable"
    include_sidewalk: bool = False
    region_min_fraction: float = DEFAULT_MIN_FRACTION
    min_pixels: int = DEFAULT_MIN_PIXELS
    image_size: tuple[int, int] | None = None
    persistence: PersistenceConfig = field(default_factory=PersistenceConfig)
    ego_mask: str = ""

    def __post_init__(self) -> None:
        spec = str(self.ego_mask or "").strip()
        object.__setattr__(self, "ego_mask", "" if spec.lower() == "none" else spec)
        if not math.isfinite(self.threshold):
            raise ValueError(f"an operating point's threshold must be a finite energy, got {self.threshold}")
        if self.region not in REGIONS:
            raise ValueError(f"alarm region must be one of {', '.join(REGIONS)}, got {self.region!r}")
        if self.min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {self.min_pixels}")
        if self.image_size is not None:
            size = tuple(int(v) for v in self.image_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"image_size must be (height, width) in pixels, got {self.image_size}")
            object.__setattr__(self, "image_size", size)

    def min_pixels_at(self, shape: tuple[int, int]) -> int:
        """The smallest obstacle (pixels) in an image of ``shape`` ``(height, width)``: ``min_pixels``
        scaled by the area ratio to ``image_size`` (rounded, at least 1)."""
        if self.image_size is None or tuple(shape[:2]) == self.image_size:
            return self.min_pixels
        h, w = self.image_size
        return max(1, round(self.min_pixels * shape[0] * shape[1] / (h * w)))

    def describe(self) -> str:
        """One line: threshold, policy and settings."""
        size = "" if self.image_size is None else f" at {self.image_size[0]}x{self.image_size[1]}"
        region = "drivable" + (" + sidewalk" if self.include_sidewalk else "")
        region = "every pixel" if self.region == "all" else region
        p = self.persistence
        return (
            f"threshold {self.threshold:.4g}" + (f" ({self.policy})" if self.policy else "")
            + f", region {region}, obstacles >= {self.min_pixels} px{size}, persistence {p.k} of {p.n}"
            + f", ego mask {self.ego_mask or 'none'}"
        )  # fmt: skip

    def to_dict(self) -> dict:
        """The fields as JSON values."""
        d = asdict(self)
        d["image_size"] = None if self.image_size is None else list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> OperatingPoint:
        """The point of :meth:`to_dict` (keys that are no field, e.g. measured rates, are ignored)."""
        return _from_dict(cls, data)


def _from_dict(cls, data: Mapping):
    """``cls(**data)`` for a dataclass, fields that are dataclasses built from their dicts."""
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kwargs[f.name] = _from_dict(type(default), value) if is_dataclass(default) else value
    return cls(**kwargs)


@dataclass(frozen=True)
class StoredPoints:
    """The operating points a model stores (the metadata entry :data:`METADATA_KEY`).

    Attributes:
        points: ``{policy: point}``.
        default: the policy a consumer runs unless told otherwise.
        measured: ``{policy: {...}}`` what each point did on the data it was chosen on (``tpr``,
            ``fpr``, ``fpr_region``, ``false_alarms_per_frame``, ``rule``, ...).
        source: the data the points were chosen on (dataset, images, input size, checkpoint hash).
    """

    points: dict[str, OperatingPoint]
    default: str
    measured: dict[str, dict] = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default not in self.points:
            have = ", ".join(self.points) or "none"
            raise ValueError(f"default policy {self.default!r} is not among the points ({have})")

    def to_metadata(self) -> dict:
        """``{METADATA_KEY: document}`` (see the module docstring)."""
        points = {name: {**self.measured.get(name, {}), **p.to_dict()} for name, p in self.points.items()}
        return {METADATA_KEY: {"default": self.default, "points": points, "source": dict(self.source)}}

    @classmethod
    def from_metadata(cls, metadata: Mapping) -> StoredPoints | None:
        """The points in a model's metadata (a backend's ``Predictor.metadata`` or a checkpoint's),
        None when it stores none."""
        doc = metadata.get(METADATA_KEY)
        if doc:
            source = doc.get("source") or {}
            # documents that keep the selection's alarm settings in "source" only
            shared = {k: source[k] for k in ("region", "include_sidewalk", "min_pixels") if k in source}
            entries = doc["points"].items()
            try:  # types and ranges were checked when the file was read (pebal_core.model_metadata)
                points = {name: OperatingPoint.from_dict({**shared, **entry}) for name, entry in entries}
                keys = {f.name for f in fields(OperatingPoint)}
                measured = {name: {k: v for k, v in entry.items() if k not in keys} for name, entry in entries}
                return cls(points, doc["default"], measured, dict(source))
            except (ValueError, TypeError) as e:
                raise ValueError(
                    f"the model's metadata key {METADATA_KEY!r} holds an invalid operating point: {e}"
                ) from e
        legacy = metadata.get(LEGACY_KEYS[0])
        if legacy is None:
            return None
        name = LEGACY_KEYS[0]  # a bare threshold: the point of that name, with the default settings
        return cls({name: OperatingPoint(float(legacy))}, name, {}, dict(metadata.get(LEGACY_KEYS[1]) or {}))


@dataclass(frozen=True)
class ResolvedPoint:
    """The point a consumer runs, and where it came from.

    Attributes:
        point: the operating point to run.
        stored: the model's point it started from (None: the model stores none).
        overridden: the fields the user's overrides changed (empty: the point as stored).
    """

    point: OperatingPoint
    stored: OperatingPoint | None
    overridden: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """``model`` (its stored point), ``model, overridden`` or ``default`` (it stores none)."""
        if self.stored is None:
            return "default"
        return "model, overridden" if self.overridden else "model"

    def warning(self) -> str | None:
        """What a user must know about this point (an override, or no stored point), else None."""
        if self.stored is None:
            return (
                f"the model stores no operating point: alarming at {self.point.describe()}; choose one on validation "
                "data with `pebal threshold --write`"
            )
        if self.overridden:
            name = f"operating point {self.stored.policy!r}" if self.stored.policy else "stored operating point"
            return (
                f"{', '.join(self.overridden)} overridden: the model's {name} ({self.stored.describe()}) no longer "
                f"applies as it was chosen; running {self.point.describe()}"
            )
        return None


def resolve_operating_point(
    metadata: Mapping, policy: str = "", overrides: Mapping[str, object] | None = None
) -> ResolvedPoint:
    """The operating point to run for a model: its stored point of ``policy`` (``""`` = its
    default), else a point at :data:`DEFAULT_ENERGY_THRESHOLD` with the default settings, with the
    user's ``overrides`` applied.

    Args:
        metadata: the model's metadata (``Predictor.metadata``, or a checkpoint's).
        policy: a stored policy's name; ``""`` for the model's default.
        overrides: ``{field: value}`` of :class:`OperatingPoint`; ``None`` and ``""`` values are not set;
            ``persistence`` takes a dict of the :class:`~pebal_core.alarms.persistence.PersistenceConfig`
            fields to change.

    Raises:
        ValueError: ``policy`` names a point the model does not store (the message lists those it
            does), or an override is no field or out of range.
    """
    stored = StoredPoints.from_metadata(metadata)
    base = None
    if policy:
        if stored is None or policy not in stored.points:
            have = ", ".join(stored.points) if stored else "none"
            raise ValueError(
                f"the model stores no operating point {policy!r} (it has: {have}); compute it with "
                f"`pebal threshold --policy {policy}`, or leave the policy empty for the model's default"
            )
        base = stored.points[policy]
    elif stored is not None:
        base = stored.points[stored.default]
    point = base or OperatingPoint(DEFAULT_ENERGY_THRESHOLD)
    names = [f.name for f in fields(OperatingPoint)]
    changes = {}
    for name, value in (overrides or {}).items():
        if value is None or value == {} or value == "":  # not set ("none" asks for no ego mask)
            continue
        if name not in names:
            raise ValueError(f"{name!r} is no part of an operating point")
        if name == "persistence" and isinstance(value, Mapping):
            value = replace(point.persistence, **value)
        changes[name] = value
    given = tuple(sorted(changes, key=names.index))
    if changes.get("min_pixels", point.min_pixels) != point.min_pixels:
        changes.setdefault("image_size", None)  # a user's count is in the pixels of the images they feed
    result = replace(point, **changes)
    overridden = tuple(name for name in given if base is not None and getattr(result, name) != getattr(base, name))
    return ResolvedPoint(result, base, overridden)
