"""A procedurally generated urban world in the real dataset layouts (``pebal synth``).

PEBAL needs Cityscapes (inliers), COCO (outlier exposure) and anomaly test sets; none can be
downloaded here, so this package draws its own, deterministically from a seed:

* :mod:`~pebal_core.data.synthetic.config` — :class:`WorldConfig`, what to generate;
* :mod:`~pebal_core.data.synthetic.camera` — the Cityscapes camera model the renderer uses;
* :mod:`~pebal_core.data.synthetic.layout` — street layouts in world coordinates;
* :mod:`~pebal_core.data.synthetic.street_objects` — people, trees, poles, signs, lights, vehicles;
* :mod:`~pebal_core.data.synthetic.families` — the outlier-exposure and test object families,
  disjoint in shape, texture and colour;
* :mod:`~pebal_core.data.synthetic.render` — ray casting, object drawing, camera effects;
* :mod:`~pebal_core.data.synthetic.scenes` — one sample of each dataset from ``(seed, index)``;
* :mod:`~pebal_core.data.synthetic.writers` — the dataset trees and ``world.json``
  (:func:`~pebal_core.data.synthetic.writers.generate_world`).

A contact sheet of a generated world is drawn by :mod:`pebal_core.world_preview`.
"""

from __future__ import annotations

from pebal_core.data.synthetic.config import PARTS, SMALL, WorldConfig

__all__ = ["PARTS", "SMALL", "WorldConfig"]
