#!/usr/bin/env bash
# The GPU rows of the benchmarks, in one short run on a machine with one CUDA GPU, JAX and PyTorch
# (TensorFlow and MovieLens are not needed: its rows are skipped, the data is synthetic).
#
#   OUT=benchmarks/results/gpu bash benchmarks/gpu_rows.sh          # SIZES="tiny" for a smoke run
#
# 1. correctness on the GPU: the conformance suites (jax, torch) against the float64 reference;
# 2. benchmarks/backends.py: the gather path at 1M and 20M ratings (both JAX kernels, torch);
# 3. benchmarks/als_sweep.py: iALS sweeps at ML-20M shape, d 64 and 128, CG and Cholesky.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-benchmarks/results/gpu}
SIZES=${SIZES:-1m 20m}
SHAPE=${SHAPE:-ml-20m}
PY=${PY:-python3}
mkdir -p "$OUT"
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"

echo "== conformance on the default device"
timeout "${CONFORMANCE_S:-170}" "$PY" -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/backends/test_conformance.py tests/train/test_sweeps.py tests/models/test_als_conformance.py \
  tests/backends/test_jax_pair_kernel.py 2>&1 | tail -20 | tee "$OUT/conformance.txt"

echo "== backends: the gather path"
timeout "${BACKENDS_S:-200}" "$PY" benchmarks/backends.py --backends jax torch --parts scale \
  --sizes $SIZES --out "$OUT" 2>&1 | tail -40

echo "== iALS sweeps at $SHAPE shape"
for d in 64 128; do
  timeout "${ALS_S:-70}" "$PY" benchmarks/als_sweep.py --shape "$SHAPE" --dim "$d" --model ials \
    --backends jax torch --solvers cg cholesky --repeat 3 2>&1 | tee "$OUT/ials_d$d.txt"
done
