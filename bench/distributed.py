"""``dnn bench --distributed``: data-parallel training on this machine, and a model of it
on clusters.

1. The medium model at ``--batch`` rows per rank, trained by one ``fit`` call under
   ``mpiexec -n 1`` and ``-n 2``, one BLAS thread per rank (so 2 ranks use 2 cores):
   samples/s, the speed-up and the scaling efficiency (speed-up / ranks).
2. The allreduce of the medium model's gradients (float32) between the 2 ranks, timed
   alone: its bandwidth beside this machine's memory copy bandwidth. The step time at
   2 ranks minus the step time at 1 rank is the communication the step exposes; the
   rest of the allreduce time was hidden behind the backward pass.
3. Scaling at 8, 64 and 512 ranks over 25, 100 and 400 Gb/s links, for the medium and
   wide models: a ring allreduce moves 2(N-1)/N x the gradient bytes over each link,
   against the step time measured at 1 rank here. Two bounds: no overlap (step +
   allreduce) and perfect overlap (the longer of the two).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy

from dnn.utils.environment import THREAD_VARIABLES

from .models import MODELS
from .train_bench import EpochClock, synthetic_data

RANKS = (8, 64, 512)
LINKS_GBIT = (25, 100, 400)
# Every thread pool one thread: the rank's share of the 2 cores is the measurement's.
SINGLE_THREAD = {**{name: "1" for name in THREAD_VARIABLES}, "DNN_BACKEND": "numpy"}


# ------------------------------------------------------------------ one rank's part
def worker(argv):
    """Run under mpiexec: train ``--model`` data-parallel and time the allreduce of its
    gradients; rank 0 prints one JSON line."""
    p = argparse.ArgumentParser(prog="python -m dnn.bench.distributed")
    p.add_argument("--model", default="medium")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bucket-mb", type=float, default=4.0)
    args = p.parse_args(argv)
    import dnn
    from dnn.layers import Dense

    spec = MODELS[args.model]
    strategy = dnn.distributed.DataParallel(bucket_mb=args.bucket_mb)
    world = strategy.world_size
    backend = dnn.get_backend()
    with dnn.use_backend(backend):
        layers = [Dense(u, spec.hidden) for u in spec.sizes[1:-1]]
        layers.append(Dense(spec.sizes[-1], spec.output))
        model = dnn.Sequential(layers, input_dim=spec.sizes[0], seed=0)
        model.compile(loss=spec.loss, optimizer="adam", distribute=strategy)
        x, y = synthetic_data(spec, args.batch * world * args.steps)
        clock = EpochClock(backend)
        model.fit(x, y, epochs=1 + args.repeats, batch_size=args.batch, verbose=0,
                  callbacks=[clock])
    epochs = [b - a for a, b in zip(clock.times, clock.times[1:])]
    seconds = statistics.median(epochs[1:])
    result = {"model": spec.name, "world": world, "batch_per_rank": args.batch,
              "step_s": seconds / args.steps,
              "samples_per_s": args.batch * world * args.steps / seconds,
              "first_epoch_s": epochs[0], "communicator": model.replica.collectives.name,
              "grad_bytes": int(model.flat_grads.nbytes)}
    if world > 1:
        grads = backend.zeros(model.flat_grads.shape, "float32")
        replica = model.replica
        times = []
        for _ in range(2 + 10):
            replica.barrier()
            start = time.perf_counter()
            replica.collectives.allreduce(grads)
            backend.synchronize()  # NCCL only enqueues: time the sum itself
            times.append(time.perf_counter() - start)
        result["allreduce_s"] = statistics.median(times[2:])
    if strategy.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------ the orchestrator
def _launch(mpiexec, world, model, batch, steps, repeats):
    env = {**os.environ, **SINGLE_THREAD}
    env.pop("PYTHONPATH", None)
    cmd = [mpiexec, "-n", str(world), sys.executable, "-m", "dnn.bench.distributed",
           "--model", model, "--batch", str(batch), "--steps", str(steps),
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"bench --distributed: {' '.join(cmd)} failed (exit "
                           f"{out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _single_thread_copy_bandwidth():
    """Bytes/s of a 256 MiB copy with one thread, as each rank has."""
    code = ("import numpy, time\n"
            # ones, not zeros: untouched zero pages would be read from one shared page
            "a = numpy.ones(64 << 20, numpy.float32); b = numpy.ones_like(a)\n"
            "t = []\n"
            "for _ in range(7):\n"
            "    s = time.perf_counter(); numpy.copyto(b, a); t.append(time.perf_counter() - s)\n"
            "print(2 * a.nbytes / sorted(t)[3])\n")
    env = {**os.environ, **SINGLE_THREAD}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return float(out.stdout.strip())


def scaling_model(step_s, grad_bytes, ranks=RANKS, links_gbit=LINKS_GBIT):
    """Rows of the cluster model: a ring allreduce sends and receives 2(N-1)/N of the
    gradient bytes over each rank's link; efficiency is the 1-rank step over the step
    with communication, without overlap and with perfect overlap."""
    rows = []
    for n in ranks:
        for gbit in links_gbit:
            comm = 2 * (n - 1) / n * grad_bytes / (gbit * 1e9 / 8)
            rows.append({"ranks": n, "link_gbit": gbit, "allreduce_s": comm,
                         "efficiency_no_overlap": step_s / (step_s + comm),
                         "efficiency_overlap": step_s / max(step_s, comm)})
    return rows


def run(args):
    """Measure, print and write the JSON record. ``args``: batch, steps, repeats, out."""
    from dnn.distributed import find_mpiexec

    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise SystemExit("bench --distributed: mpiexec not found: pip install mpi4py mpich "
                         "(or pip install '.[mpi]' in the dnn checkout)")
    batch, steps, repeats = args.batch, args.steps, args.repeats
    print(f"dnn bench --distributed: medium at {batch} rows per rank, one BLAS thread per "
          f"rank, {steps} steps x {repeats} steady epochs (median)", flush=True)
    one = _launch(mpiexec, 1, "medium", batch, steps, repeats)
    two = _launch(mpiexec, 2, "medium", batch, steps, repeats)
    copy_bw = _single_thread_copy_bandwidth()
    speedup = two["samples_per_s"] / one["samples_per_s"]
    print(f"\n{'ranks':>5} {'samples/s':>11} {'step ms':>8} {'speed-up':>9} {'efficiency':>11}")
    for r in (one, two):
        s = r["samples_per_s"] / one["samples_per_s"]
        print(f"{r['world']:>5} {r['samples_per_s']:>11,.0f} {r['step_s'] * 1e3:>8.2f} "
              f"{s:>8.2f}x {s / r['world']:>10.0%}")
    grad = two["grad_bytes"]
    allreduce = two["allreduce_s"]
    bus_bw = 2 * (2 - 1) / 2 * grad / allreduce  # a ring's bytes per rank: 2(N-1)/N
    exposed = two["step_s"] - one["step_s"]
    print(f"\nallreduce of the gradients ({grad / 2**20:.1f} MiB float32, {two['communicator']}"
          f", 2 ranks): {allreduce * 1e3:.2f} ms = {grad / allreduce / 1e9:.2f} GB/s of "
          f"gradient ({bus_bw / 1e9:.2f} GB/s per rank as a ring counts it); one-thread "
          f"memory copy bandwidth {copy_bw / 1e9:.2f} GB/s (read + write)")
    hidden = max(allreduce - exposed, 0.0)
    print(f"step at 2 ranks - step at 1 rank = {exposed * 1e3:.2f} ms exposed; the allreduce "
          f"alone takes {allreduce * 1e3:.2f} ms, so {hidden * 1e3:.2f} ms "
          f"({hidden / allreduce:.0%}) of it is hidden behind the backward pass")
    if exposed > allreduce:
        print(f"  (the {(exposed - allreduce) * 1e3:.2f} ms beyond the allreduce is the two ranks "
              f"sharing the memory bus and caches: each rank's compute slows down)")
    wide = _launch(mpiexec, 1, "wide", batch, max(2, steps // 5), 1)
    models = {"medium": one, "wide": wide}
    table = {}
    for name, measured in models.items():
        table[name] = scaling_model(measured["step_s"], measured["grad_bytes"])
        print(f"\nmodel of scaling, {name}: step {measured['step_s'] * 1e3:.1f} ms at 1 rank "
              f"(measured here, one thread), gradients {measured['grad_bytes'] / 2**20:.1f} "
              f"MiB; efficiency without overlap / with perfect overlap")
        print(f"{'ranks':>6} " + " ".join(f"{g:>7} Gb/s      " for g in LINKS_GBIT))
        for n in RANKS:
            cells = [r for r in table[name] if r["ranks"] == n]
            print(f"{n:>6} " + " ".join(f"{c['efficiency_no_overlap']:>8.0%} / "
                                        f"{c['efficiency_overlap']:>5.0%}" for c in cells))
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "python": platform.python_version(), "numpy": numpy.__version__,
              "ranks": [one, two], "speedup_2_ranks": speedup,
              "efficiency_2_ranks": speedup / 2, "allreduce_s": allreduce,
              "copy_bandwidth_Bps": copy_bw, "exposed_comm_s": exposed,
              "wide_1_rank": wide, "scaling_model": table}
    if args.out:  # only where asked
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
        print(f"\nwrote {args.out}")
    return record


if __name__ == "__main__":
    worker(sys.argv[1:])
