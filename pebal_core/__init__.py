"""pebal_core: PEBAL anomaly segmentation (Tian et al., ECCV 2022) in pure Python + PyTorch.

Nothing in this package imports ROS; the ROS 2 node in ``pebal_ros`` is a thin shell over it.
``from pebal_core import Predictor`` gives the one inference path (:class:`pebal_core.runtime.Predictor`;
``Predictor.from_checkpoint("default")`` loads the shipped default model).

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it
(libgomp reads it once, when torch loads, so it must happen before ``import torch``; every
console script imports this package first). Waiting OpenMP threads then sleep instead of
spinning: on a machine whose cores other processes also use (the car's computer; a node, a
player and a recorder side by side), spinning threads made a torch forward pass in a process's
main thread 20 to 150 times slower here (resnet18 at 256x512 on 2 shared cores: 2.5 s instead
of 0.12 s). Set the variable yourself to override.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pebal_core.version import __version__  # noqa: E402

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str) -> object:
    """``from pebal_core import Predictor``: loaded on first use, so that ``import pebal_core`` (which every
    submodule import runs first) stays light and never loads torch."""
    if name == "Predictor":
        from pebal_core.runtime import Predictor

        return Predictor
    raise AttributeError(f"module 'pebal_core' has no attribute {name!r}")
