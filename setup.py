"""One distribution holding both Python packages: ``pebal_core`` (no ROS) and ``pebal_ros``.

Works two ways:

* ``colcon build`` (ament_python): ``setup.cfg`` puts the console scripts in
  ``lib/pebal_ros`` where ``ros2 run`` looks; ``data_files`` install ``package.xml``, the ament
  resource marker, ``launch/`` and ``config/`` under ``share/pebal_ros``;
* ``pip install -e .`` in a virtual environment: the same console scripts land in the
  environment's ``bin/``.
"""

import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "pebal_ros"
HERE = Path(__file__).resolve().parent  # resolved: colcon --symlink-install runs a symlink in build/
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "pebal_core" / "version.py").read_text()).group(1)

setup(
    name=PACKAGE,
    version=VERSION,
    description="PEBAL anomaly segmentation for self-driving cars, as a ROS 2 package",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["pebal_core", "pebal_core.*", "pebal_ros", "pebal_ros.*"]),
    package_data={"pebal_core": ["assets/*.safetensors", "assets/*.json", "assets/*.md", "assets/*.png"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=[
        "setuptools",
        "numpy",
        "torch>=2.1",
        "opencv-python-headless",
        "simplejpeg",
        "pyyaml",
        "safetensors",
        "tqdm",
    ],
    extras_require={
        "eval": ["scikit-learn", "scipy", "matplotlib", "pillow"],
        "data": ["pycocotools"],
        "export": ["onnx", "onnxruntime"],
        "openvino": ["openvino", "nncf"],
        "bag": ["rosbags", "pillow"],
        "tensorrt": ["tensorrt", "pycuda"],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "pebal = pebal_core.cli:main",
            "pebal_node = pebal_ros.node:main",
            "pebal_bag = pebal_ros.bag:main",
            "pebal_camera = pebal_ros.camera:main",
            "pebal_demo = pebal_ros.demo:main",
        ],
    },
)
