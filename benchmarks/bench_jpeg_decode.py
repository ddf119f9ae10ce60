"""JPEG decoding of the node's CompressedImage input: strict libjpeg-turbo against OpenCV.

The numpy converter decodes JPEG with ``pebal_ros.conversions.decode_jpeg`` (simplejpeg, strict:
a picture cut short is refused) instead of ``cv2.imdecode`` (which fills it with grey); the
cv_bridge converter checks the data at 1/8 scale first (``check_only``) and then decodes with
OpenCV. This script times the three on the same 2048 x 1024 camera-like JPEG, interleaved, and
prints the ratios to ``cv2.imdecode``.

    python benchmarks/bench_jpeg_decode.py [--repeats 50] [--quality 90]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from pebal_ros.conversions import decode_jpeg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8), (9, 9), 0)  # textured
    ok, enc = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
    buf = np.frombuffer(enc.tobytes(), np.uint8)
    ways = {
        "cv2.imdecode (before)": lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB),
        "decode_jpeg strict (numpy converter)": lambda: decode_jpeg(buf, "jpeg"),
        "check_only + cv2.imdecode (cv_bridge converter)": lambda: (
            decode_jpeg(buf, "jpeg", check_only=True),
            cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB),
        ),
    }
    np.testing.assert_array_equal(ways["cv2.imdecode (before)"](), ways["decode_jpeg strict (numpy converter)"]())
    times = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():  # interleaved: the same machine load for all three
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = np.median(times["cv2.imdecode (before)"])
    print(f"2048 x 1024 JPEG, quality {args.quality}, {buf.size / 1e6:.2f} MB, {args.repeats} repeats (median)")
    for name, t in times.items():
        print(f"  {name:50s} {np.median(t) * 1e3:7.2f} ms   ratio {np.median(t) / base:.2f}")
    print("outputs identical: yes (checked)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
