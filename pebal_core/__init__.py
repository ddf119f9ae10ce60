"""pebal_core: PEBAL anomaly segmentation (Tian et al., ECCV 2022) in pure Python + PyTorch.

Nothing in this package imports ROS; the ROS 2 node in ``pebal_ros`` is a thin shell over it.
"""

from pebal_core.version import __version__

__all__ = ["__version__"]
