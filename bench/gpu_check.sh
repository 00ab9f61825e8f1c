#!/usr/bin/env bash
# The GPU run: every test with the cupy backend (TF32 off), the NVRTC check, and the GPU
# benchmarks against PyTorch, with the environment, into one folder for bench/results/.
#
#   bash bench/gpu_check.sh OUTDIR [quick]
#
# Run from the repository root on the GPU machine (the device tool: OUTDIR=$OUT); it
# stays under the tool's 10 minutes a command (pytest 300 s, bench 240 s at most). It
# needs python3 with numpy, cupy, pytest, hypothesis and torch; missing optional
# packages (numba, matplotlib, scikit-learn, ml_dtypes) only skip their tests.
#
# The copied tree is installed as a wheel from what the machine already has (it reaches
# no package index), and everything then runs from another directory, so that the
# checkout's dnn/ cannot shadow the installed package and its kernels:
#   pip install --no-deps --no-build-isolation . && cd /tmp && python3 -m pytest REPO/tests
set -u
root=$(pwd)
out=$(realpath -m "${1:?usage: bash bench/gpu_check.sh OUTDIR [quick]}")
mode=${2:-full}
mkdir -p "$out"
export CUPY_TF32=0 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation . > "$out/install.txt" 2>&1 ||
    { echo "install failed:"; tail -20 "$out/install.txt"; exit 1; }
cd "$(mktemp -d)"

{
    date -u
    nvidia-smi
    python3 - <<'PY'
import platform, numpy, cupy
print("python", platform.python_version(), "numpy", numpy.__version__, "cupy", cupy.__version__)
print("cuda runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver",
      cupy.cuda.runtime.driverGetVersion())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda)
except ImportError:
    print("torch absent")
PY
    python3 -m dnn info
    # The data-parallel GPU tests (tests/test_distributed.py, marked gpu and mpi) need it.
    echo "mpiexec: $(command -v mpiexec || echo absent: the gpu+mpi tests skip)"
} > "$out/env.txt" 2>&1

python3 -m dnn.kernels --check > "$out/kernels.txt" 2>&1
echo "kernels: $(tail -1 "$out/kernels.txt")"

# -rs lists why each skipped test skipped; the gpu cases must not be among them.
timeout 300 python3 -m pytest "$root/tests" -m "gpu or not slow" -q -rs -p no:cacheprovider \
    > "$out/pytest.txt" 2>&1
echo "pytest: $(tail -1 "$out/pytest.txt")"

if [ "$mode" = quick ]; then
    args=(--models medium --batches 256 --repeats 5)
else
    args=(--models small,medium,wide --batches 256,4096 --precisions float32,tf32,bf16
          --repeats 5)
fi
timeout 240 python3 -m dnn.bench --backends cupy "${args[@]}" --out "$out/bench.json" \
    > "$out/bench.txt" 2>&1
echo "bench: exit $? ($(grep -c '^medium\|^wide\|^small\|^tiny' "$out/bench.txt") rows)"
