"""dnn bench (python -m dnn.bench): training throughput of dnn against PyTorch, with
the limit printed beside every figure.

Each row trains one model with one model.fit call (Adam, shuffled batches, the data
uploaded once) and reports the steady epochs' samples/s and step time, the first
epoch's time (checks, upload, compilation, capture) on its own, the GEMM FLOP rate
achieved, and the step's floor as a fraction of its time. The floor is the step's own
GEMMs plus its optimizer update, captured as one graph and timed on the device's
clock between the epochs it is compared with, the least of those samples: a step does
all of that and more, so "of floor" stays under 100%. Where PyTorch is installed it
trains the same model, optimizer and batch in the same run, data on the device, and
the row shows dnn/PyTorch. Kernel rows compare each fused op with its unfused
composition in GB/s beside the measured copy bandwidth. The record is written as JSON
where --out says, and nowhere without it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy

from dnn import backends

from .accuracy import accuracy_at
from .kernel_bench import kernel_rows
from .limits import StepFloor, copy_bandwidth
from .models import MODELS
from .train_bench import dnn_throughput, steps_for, torch_status, torch_throughput

PRECISIONS = {"numpy": ["float32", "float64"], "cupy": ["float32", "tf32", "bf16"]}
# --quick: the rows the CPU targets are stated for, float32 only (with the accuracy and
# kernel rows unless --no-accuracy, --no-kernels): 202 s on the shared 2-core CPU under
# other jobs' load (bench/README.md).
QUICK = {"batches": {"tiny": [32], "medium": [64, 256]}, "repeats": 3,
         "precisions": ["float32"]}
FULL_BATCHES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
# The CPU skips rows whose step would take seconds (the wide model at large batches).
CPU_MAX_STEP_FLOPS = 100e9


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="dnn bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny at batch 32, medium at batch 64 and 256, float32 (a few minutes "
                   "on a 2-core CPU; --no-kernels --no-accuracy for the rows alone)")
    p.add_argument("--models", help=f"comma list from {', '.join(MODELS)}")
    p.add_argument("--batches", help="comma list of batch sizes (default 32..4096)")
    p.add_argument("--backends", help="comma list (default: every available backend)")
    p.add_argument("--precisions", help="comma list (default: float32, and float64 on numpy)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed repeats; the median is kept (default 5)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-kernels", action="store_true", help="skip the kernel micro-benchmarks")
    p.add_argument("--no-accuracy", action="store_true",
                   help="skip training a real task at each precision")
    p.add_argument("--torch-modes", default=None,
                   help="PyTorch modes on a GPU: eager,graph,compile (CPU: eager)")
    p.add_argument("--out", help="write the record to this .json file (none without it)")
    p.add_argument("--plot", help="also write a PNG of samples/s against batch size")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel instead: medium at 1 and 2 ranks under mpiexec (one "
                   "thread each), the allreduce against the copy bandwidth, and a model of "
                   "8-512 ranks (see bench/distributed.py; uses --batch-per-rank, --out)")
    p.add_argument("--batch-per-rank", type=int, default=256,
                   help="--distributed: rows per rank per step (default 256)")
    return p.parse_args(argv)


def _csv(text, cast=str):
    return [cast(v.strip()) for v in text.split(",") if v.strip()]


def environment(backend_names):
    import dnn
    from dnn.utils.environment import thread_settings
    from dnn.utils.info import blas_info

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
           "dnn": dnn.__version__, "numpy": numpy.__version__, "blas": blas_info(),
           "thread_env": thread_settings(),
           "backends": {}}
    try:
        import numba

        env["numba"] = numba.__version__
        env["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        env["numba"] = None
    torch, _ = torch_status()
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["torch_cuda"] = torch.version.cuda
    for name in backend_names:
        env["backends"][name] = backends.get_backend(name).describe()
    return env


def _has_ml_dtypes():
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return False
    return True


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _torch_device(backend_name):
    return "cuda" if backend_name == "cupy" else "cpu"


def precision_backend(name, precision):
    """(backend instance, model dtype) for a precision mode: "float32", "float64",
    "tf32" (float32 model, TF32 tensor-core GEMMs, CuPy only) or "bf16" (the
    mixed_bfloat16 policy: float32 weights, bfloat16 compute)."""
    if precision == "bf16":
        return backends.get_backend(name), "mixed_bfloat16"
    if precision == "tf32":
        if name != "cupy":
            raise SystemExit("bench: precision 'tf32' needs the cupy backend")
        from dnn.backends.cupy_backend import CupyBackend

        return CupyBackend(backends.get_backend(name).device_id, tf32=True), "float32"
    return backends.get_backend(name), precision


def _torch_precision(torch, precision):
    """Set PyTorch's TF32 switch to match the row; returns the dtype name to train in
    ("bf16" trains float32 parameters under bfloat16 autocast, as dnn's mixed policy)."""
    if torch is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    return {"tf32": "float32", "bf16": "autocast_bfloat16"}.get(precision, precision)


def _check_outputs(args):
    """Fail now, not after the benchmark, on an output that could not be written."""
    from dnn.utils.files import check_output_path

    try:
        if args.out:
            check_output_path(args.out, "--out", (".json",))
        if args.plot:
            from dnn.plot import check_figure_path

            check_figure_path(args.plot, "--plot")
    except (ValueError, ImportError) as exc:
        raise SystemExit(f"bench: {exc}") from None


def run(args):
    available = backends.available_backends()
    names = _csv(args.backends) if args.backends else available
    for name in names:
        if name not in available:
            raise SystemExit(f"bench: backend {name!r} is not usable here: "
                             f"{backends.backend_status().get(name)}")
    models = _csv(args.models) if args.models else (
        list(QUICK["batches"]) if args.quick else list(MODELS))
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"bench: --models: expected names from {', '.join(MODELS)}; got {m!r}")
    batches_for = (lambda m: _csv(args.batches, int)) if args.batches else (
        (lambda m: QUICK["batches"].get(m, [64, 256])) if args.quick else (lambda m: FULL_BATCHES))
    repeats = QUICK["repeats"] if args.quick else args.repeats
    env = environment(names)
    torch, why_no_torch = (None, "disabled by --no-torch") if args.no_torch else torch_status()
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
        env["torch_threads"] = torch.get_num_threads()
    record = {"environment": env, "rows": [], "kernels": [], "limits": {}, "skipped": [],
              "command": "dnn bench " + " ".join(sys.argv[1:] if args.argv is None
                                                       else args.argv)}
    print(f"dnn bench - {env['cpu']} ({env['cpu_count']} CPUs), numpy {env['numpy']}, "
          f"BLAS {env['blas'].get('name')}, torch {env.get('torch', 'absent')}")
    for name in names:
        be = backends.get_backend(name)
        bw = copy_bandwidth(be)
        record["limits"][name] = {"copy_GBps": bw / 1e9, "device": be.describe()}
        print(f"\n[{name}] {be.describe().get('name', be.device)} - copy bandwidth "
              f"{bw / 1e9:.1f} GB/s")
        precisions = _csv(args.precisions) if args.precisions else (
            QUICK["precisions"] if args.quick else PRECISIONS[name])
        modes = ["eager"]
        if name == "cupy" and torch is not None:
            modes = _csv(args.torch_modes) if args.torch_modes else ["eager", "graph", "compile"]
        header = (f"{'model':<7}{'batch':>6} {'prec':<8}{'samples/s':>12}{'step ms':>9}"
                  f"{'1st ep s':>9}{'GEMM GF/s':>10}{'floor ms':>9}{'of floor':>9}")
        if be.supports_graphs:
            header += f"{'dnn eager':>12}"
        header += "".join(f"{'torch ' + m:>14}{'x':>7}" for m in modes) if torch else ""
        print(header)
        for prec in precisions:
            row_backend, dtype = precision_backend(name, prec)
            for model_name in models:
                spec = MODELS[model_name]
                for batch in batches_for(model_name):
                    _one_row(record, row_backend, name, spec, batch, prec, dtype, repeats,
                             torch, modes)
        if not args.no_accuracy:
            print(f"\n{'precision (' + name + ')':<24}{'task':<9}{'test accuracy':>14}"
                  f"{'test loss':>11}")
            accuracy_precisions = list(precisions)
            if "bf16" not in accuracy_precisions and _has_ml_dtypes():
                accuracy_precisions.append("bf16")  # its accuracy effect shows on any device
            for prec in accuracy_precisions:
                row_backend, dtype = precision_backend(name, prec)
                acc = accuracy_at(row_backend, dtype)
                acc.update(backend=name, precision=prec)
                record.setdefault("accuracy", []).append(acc)
                print(f"{prec:<24}{acc['task']:<9}{acc['test_accuracy']:>14.4f}"
                      f"{acc['test_loss']:>11.4f}")
        if not args.no_kernels:
            krows = kernel_rows(be, repeats=repeats, n_params=MODELS["medium"].params())
            print(f"\n{'kernel (' + name + ')':<32}{'fused GB/s':>11}{'unfused GB/s':>13}"
                  f"{'speedup':>9}{'of copy bw':>11}")
            for k in krows:
                k["backend"] = name
                k["copy_fraction"] = k["fused_GBps"] * 1e9 / bw
                print(f"{k['op']:<32}{k['fused_GBps']:>11.1f}{k['unfused_GBps']:>13.1f}"
                      f"{k['speedup']:>8.2f}x{k['copy_fraction']:>10.0%}")
            record["kernels"] += krows
    if why_no_torch:
        record["torch"] = why_no_torch
        print(f"\n(no PyTorch comparison: {why_no_torch})")
    if args.out:
        from dnn.utils.files import atomic_write

        text = json.dumps(record, indent=1).encode("utf-8")
        atomic_write(args.out, lambda f: f.write(text), "--out")
        print(f"\nwrote {args.out}")
    if args.plot:
        plot_record(record, args.plot)
        print(f"wrote {args.plot}")
    return record


def _one_row(record, be, name, spec, batch, prec, dtype, repeats, torch, modes):
    flops = spec.gemm_flops(batch)
    if name == "numpy" and flops > CPU_MAX_STEP_FLOPS:
        record["skipped"].append({"model": spec.name, "batch": batch, "backend": name,
                                  "reason": f"{flops / 1e9:.0f} GFLOP per step on a CPU"})
        return
    steps = steps_for(spec, batch, target_flops=(1e9 if name == "numpy" else 2e10))
    floor = StepFloor(be, spec, batch, dtype)  # sampled between the epochs timed
    res = dnn_throughput(spec, batch, be, dtype, steps, repeats, between_epochs=floor.sample)
    floor_s, gemm_s = floor.floor_s, floor.gemm_s
    row = {"model": spec.name, "batch": batch, "backend": name, "precision": prec,
           "steps": steps, **res, "gemm_flops": flops,
           "gemm_flops_with_input_grad": spec.gemm_flops_with_input_grad(batch),
           "floor_s": floor_s, "gemm_only_s": gemm_s,
           "floor_samples_s": floor.samples["floor"],
           "gemm_only_samples_s": floor.samples["gemm"],
           "gemm_peak_GFps": flops / gemm_s / 1e9,
           "achieved_GFps": flops / res["step_s"] / 1e9,
           "fraction_of_floor": floor_s / res["step_s"],
           "fraction_of_gemm_peak": gemm_s / res["step_s"]}
    line = (f"{spec.name:<7}{batch:>6} {prec:<8}{res['samples_per_s']:>12,.0f}"
            f"{res['step_s'] * 1e3:>9.3f}{res['first_epoch_s']:>9.2f}"
            f"{row['achieved_GFps']:>10.1f}{floor_s * 1e3:>9.3f}"
            f"{row['fraction_of_floor']:>9.0%}")
    if be.supports_graphs:  # the same model with every step run eagerly
        eager = dnn_throughput(spec, batch, be, dtype, steps, repeats, cuda_graph=False)
        row["dnn_eager"] = eager
        line += f"{eager['samples_per_s']:>12,.0f}"
    if torch is not None:
        row["torch"] = {}
        torch_dtype = _torch_precision(torch, prec)
        for mode in modes:
            try:
                t = torch_throughput(spec, batch, _torch_device(name), torch_dtype, steps,
                                     repeats, mode=mode)
                t["ratio"] = res["samples_per_s"] / t["samples_per_s"]
                line += f"{t['samples_per_s']:>14,.0f}{t['ratio']:>6.2f}x"
            except Exception as exc:  # a mode that does not work here is reported, not fatal
                t = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                line += f"{'n/a':>14}{'':>7}"
            row["torch"][mode] = t
    print(line, flush=True)
    record["rows"].append(row)


def plot_record(record, path):
    """samples/s against batch size, one panel per model, dnn beside PyTorch eager."""
    from dnn.plot import figure, save_figure

    models = sorted({r["model"] for r in record["rows"]})
    fig = figure(4.5 * len(models), 3.6)
    axes = fig.subplots(1, len(models), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in record["rows"] if r["model"] == model]
        for key in sorted({(r["backend"], r["precision"]) for r in rows}):
            sel = sorted((r for r in rows if (r["backend"], r["precision"]) == key),
                         key=lambda r: r["batch"])
            batches = [r["batch"] for r in sel]
            ax.plot(batches, [r["samples_per_s"] for r in sel], "o-",
                    label=f"dnn {key[0]} {key[1]}")
            if all("torch" in r and "samples_per_s" in r["torch"].get("eager", {}) for r in sel):
                ax.plot(batches, [r["torch"]["eager"]["samples_per_s"] for r in sel], "s--",
                        label=f"torch {key[1]}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("training samples/s")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    args.argv = argv
    _check_outputs(args)
    if args.distributed:
        from .distributed import run as run_distributed

        args.batch, args.steps = args.batch_per_rank, 10
        run_distributed(args)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
