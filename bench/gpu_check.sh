#!/usr/bin/env bash
# The GPU run, in stages, each with its own time budget, into one folder for
# bench/results/ (see "What only a GPU can check" in bench/README.md):
#
#   bash bench/gpu_check.sh OUTDIR [quick|full] [STAGES]
#
# STAGES is a comma-separated list, run in this order (default: all of them):
#   gpu     pytest -m "gpu and not mpi", the float64 parity tests aside     (240 s)
#   parity  the float64 NumPy-against-CuPy parity tests                     (120 s)
#   mpi     pytest -m "gpu and mpi" tests/test_distributed.py               (120 s)
#   bench   python -m dnn.bench --backends cupy against PyTorch   (240 s; quick 120 s)
#   rest    every other test not marked slow (CI runs them on the CPU)       (300 s)
# The NVRTC check and the environment come first (a few seconds). The gpu tests run
# first and alone: the CPU-only tests take longer than 300 s on a loaded machine and
# must not eat their time. The device tool allows 10 minutes a command: run
# "gpu,parity,mpi" and "bench" (and "rest" if time is left) as separate commands.
#
# Run from the repository root on the GPU machine (the device tool: OUTDIR=$OUT). It
# needs python3 with numpy, cupy, pytest, hypothesis and torch; missing optional
# packages (numba, matplotlib, scikit-learn, ml_dtypes, mpi4py) only skip their tests.
#
# The copied tree is installed as a wheel from what the machine already has (it reaches
# no package index), and everything then runs from another directory, so that the
# checkout's dnn/ cannot shadow the installed package and its kernels:
#   pip install --no-deps --no-build-isolation . && cd /tmp && python3 -m pytest REPO/tests
set -u
root=$(pwd)
out=$(realpath -m "${1:?usage: bash bench/gpu_check.sh OUTDIR [quick|full] [STAGES]}")
mode=${2:-full}
stages=",${3:-gpu,parity,mpi,bench,rest},"
parity="$root/tests/test_gpu.py::test_new_layers_losses_metrics_and_schedules_agree_across_backends"
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
      cupy.cuda.runtime.driverGetVersion(), "devices", cupy.cuda.runtime.getDeviceCount())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda)
except ImportError:
    print("torch absent")
PY
    python3 -m dnn info
    echo "mpiexec: $(command -v mpiexec || echo absent: the gpu+mpi tests skip)"
} > "$out/env.txt" 2>&1

python3 -m dnn.kernels --check > "$out/kernels.txt" 2>&1
echo "kernels: $(tail -1 "$out/kernels.txt")"

# stage NAME SECONDS COMMAND...: run when NAME is selected; its output goes to NAME.txt.
stage() {
    local name=$1 budget=$2
    shift 2
    [[ $stages == *",$name,"* ]] || return 0
    local start=$SECONDS
    timeout "$budget" "$@" > "$out/$name.txt" 2>&1
    local status=$?
    local note=""
    [ $status -eq 124 ] && note=" (stopped at its ${budget} s budget)"
    echo "$name: exit $status in $((SECONDS - start)) s$note: $(tail -1 "$out/$name.txt")"
}

# -rs lists why each skipped test skipped; the gpu cases must not be among them.
pytest=(python3 -m pytest -q -rs -p no:cacheprovider)
stage gpu 240 "${pytest[@]}" "$root/tests" -m "gpu and not mpi" --deselect "$parity"
stage parity 120 "${pytest[@]}" "$parity"
stage mpi 120 "${pytest[@]}" "$root/tests/test_distributed.py" -m "gpu and mpi"
if [ "$mode" = quick ]; then
    bench_budget=120
    args=(--models medium --batches 256 --repeats 5)
else
    bench_budget=240
    args=(--models small,medium,wide --batches 256,4096 --precisions float32,tf32,bf16
          --repeats 5)
fi
stage bench "$bench_budget" python3 -m dnn.bench --backends cupy "${args[@]}" \
    --out "$out/bench.json"
stage rest 300 "${pytest[@]}" "$root/tests" -m "not gpu and not slow"
