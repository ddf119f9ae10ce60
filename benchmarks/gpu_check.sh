#!/usr/bin/env bash
# The GPU check: TensorRT fp16 and int8 engines of the shipped model and of WRN38, the TensorRT tests and
# the TensorRT benchmark, in one run of under 8 minutes on one NVIDIA GPU, ending in one table.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # from the repository root, after `make venv` and
#                                            # `.venv/bin/pip install tensorrt pycuda` (docs/deployment.md)
#
# Steps: (1) CPU: ONNX exports of both models at 512x1024 (runs anywhere); (2) checks that a GPU, its
# driver, TensorRT and pycuda are there, and stops with exit status 1 naming what is missing (it never
# skips silently); (3) the TensorRT tests with PEBAL_REQUIRE_GPU=1, so a test that cannot run fails
# instead of skipping; (4) benchmarks/bench_tensorrt.py: builds the fp16 and int8 plans (int8 calibrated
# on real CamVid train frames when ../shared/realdata is there), times torch CUDA, TensorRT fp16 and
# int8 and prints the table. Every step's output goes to OUT_DIR/*.log as well.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
PY="${PY:-.venv/bin/python}"
CALIB="${CALIB:-../shared/realdata/camvid/train}"
mkdir -p "$OUT"
start=$(date +%s)
fail() { echo "gpu_check: FAIL: $*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - start )) s"; }

echo "== 1. ONNX exports (CPU)"
"$PY" benchmarks/bench_tensorrt.py --out "$OUT" --export-only 2>&1 | tee "$OUT/export.log"

echo "== 2. GPU, driver, TensorRT, pycuda ($(elapsed))"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this machine has no NVIDIA driver (the GPU part needs one)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.log" \
    || fail "nvidia-smi cannot talk to a GPU"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/gpu.log" || fail "TensorRT or pycuda missing or unusable (see above); install them: .venv/bin/pip install tensorrt pycuda"
import pycuda.driver as cuda
import tensorrt
cuda.init()
assert cuda.Device.count() > 0, "pycuda sees no CUDA device"
print(f"TensorRT {tensorrt.__version__}, {cuda.Device.count()} CUDA device(s): {cuda.Device(0).name()}")
EOF

echo "== 3. TensorRT tests ($(elapsed))"
PEBAL_REQUIRE_GPU=1 "$PY" -m pytest -q -m gpu test/test_export_tensorrt.py 2>&1 | tee "$OUT/tests.log" \
    || fail "TensorRT tests failed (see $OUT/tests.log)"
tests=$(tail -n 1 "$OUT/tests.log")

echo "== 4. engines and benchmark ($(elapsed))"
calib=()
[ -d "$CALIB" ] && calib=(--calibration-images "$CALIB")
"$PY" benchmarks/bench_tensorrt.py --out "$OUT" "${calib[@]}" 2>&1 | tee "$OUT/bench.log" \
    || fail "the TensorRT benchmark failed (see $OUT/bench.log)"

echo
echo "== GPU check: $(head -n 1 "$OUT/gpu.log"); tests: $tests; $(elapsed) in all"
sed -n '/^model /,$p' "$OUT/bench.log"
