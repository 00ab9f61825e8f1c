"""``python -m dnn.bench.streaming``: training from data that is not one array on the
device, against in-memory arrays in the same run (issue 21's rows).

Every row trains the same model (default medium, 784-1024-1024-10, Adam) at the same
batch with one ``fit`` call of ``1 + repeats`` epochs, and reports the steady epochs'
samples/s (the median after the first epoch) and its ratio to the in-memory row:

- ``arrays``: the data as in-memory arrays (the reference);
- ``generator``: a generator of the same in-memory batches, with ``steps_per_epoch``;
- ``sequence``: a Keras-style sequence of the same batches (``shuffle`` permutes them);
- ``memmap``: the features as a shuffled float32 ``.npy`` memmap of ``--gb`` GiB,
  written to a temporary file first (the first epoch reads it into the page cache);
- on a GPU also ``host-streamed``: an in-memory host array streamed through the same
  path as a data set larger than device memory (``Rows`` of all its rows), and the
  host-to-device bandwidth it reached against a pinned-memory copy timed alone.

Beside each row, ``anon MiB``: how much the process's anonymous memory (RssAnon, what
a memmap's file pages are not) grew during the ``fit`` call, against the bytes of one
batch. Targets (issue 21): memmap, generator and sequence at >= 0.9x arrays on the CPU,
the memmap's anonymous memory a few batches above the model's. Timings are not
asserted anywhere: the lead runs this on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy

from .models import MODELS
from .train_bench import EpochClock, synthetic_data


def rss_anon_bytes():
    """The process's anonymous resident memory (Linux), or None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class InMemorySequence:
    """Batches of in-memory arrays by index, as a Keras-style sequence."""

    def __init__(self, x, y, batch):
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-self.x.shape[0] // self.batch)

    def __getitem__(self, i):
        return self.x[i * self.batch:(i + 1) * self.batch], \
            self.y[i * self.batch:(i + 1) * self.batch]


def batches_forever(x, y, batch):
    while True:
        for start in range(0, x.shape[0], batch):
            yield x[start:start + batch], y[start:start + batch]


def _model(spec, backend):
    import dnn
    from dnn.layers import Dense

    with dnn.use_backend(backend):
        layers = [Dense(u, spec.hidden) for u in spec.sizes[1:-1]]
        layers.append(Dense(spec.sizes[-1], spec.output))
        model = dnn.Sequential(layers, input_dim=spec.sizes[0], seed=0)
        model.compile(loss=spec.loss, optimizer="adam")
    return model


def timed_fit(spec, backend, data, fit_kwargs, repeats):
    """``{"samples_per_s", "epoch_s", "anon_growth_bytes"}`` of one fit call."""
    model = _model(spec, backend)
    clock = EpochClock(backend)
    before = rss_anon_bytes()
    model.fit(*data, epochs=1 + repeats, verbose=0, callbacks=[clock], **fit_kwargs)
    after = rss_anon_bytes()
    epochs = [b - a for a, b in zip(clock.times, clock.times[1:])]
    return {"epoch_s": epochs, "steady_epoch_s": statistics.median(epochs[1:] or epochs),
            "anon_growth_bytes": None if before is None else after - before}


def write_memmap(path, x_rows, width, seed=0, chunk=1 << 15):
    """A float32 .npy of ``x_rows`` x ``width`` normal values, written in chunks."""
    out = numpy.lib.format.open_memmap(path, mode="w+", dtype=numpy.float32,
                                       shape=(x_rows, width))
    rng = numpy.random.default_rng(seed)
    for start in range(0, x_rows, chunk):
        stop = min(x_rows, start + chunk)
        out[start:stop] = rng.standard_normal((stop - start, width), dtype=numpy.float32)
    out.flush()
    del out
    return numpy.load(path, mmap_mode="r")


def pinned_copy_bandwidth(backend, nbytes=256 << 20, repeats=5):
    """Bytes/s of a host-to-device copy from page-locked memory, timed alone."""
    host = backend.host_empty((nbytes // 4,), "float32")
    host[...] = 1.0
    device = backend.empty((nbytes // 4,), "float32")
    stream = backend.upload_stream()
    seconds = backend.time_device(lambda: backend.upload(host, device, stream), repeats)
    return nbytes / seconds


def rows_for(args, spec, backend):
    """The benchmark's rows, in order (the arrays row first)."""
    from dnn.training import Rows

    batch, steps = args.batch, args.steps
    x, y = synthetic_data(spec, batch * steps)
    rows = [("arrays", (x, y), {"batch_size": batch}),
            ("generator", (batches_forever(x, y, batch),), {"steps_per_epoch": steps}),
            ("sequence", (InMemorySequence(x, y, batch),), {})]
    if backend.name != "numpy":
        rows.append(("host-streamed", (Rows(x, numpy.arange(x.shape[0])), y),
                     {"batch_size": batch}))
    return rows


def run(args):
    import dnn

    spec = MODELS[args.model]
    backend = dnn.get_backend(args.backend) if args.backend != "auto" else dnn.get_backend()
    record = {"model": spec.name, "batch": args.batch, "steps": args.steps,
              "repeats": args.repeats, "backend": backend.describe(),
              "machine": platform.machine(), "python": platform.python_version(),
              "rows": []}
    batch_bytes = args.batch * spec.sizes[0] * 4
    rows = rows_for(args, spec, backend)
    # One-time costs (kernel compilation, BLAS and thread pools) go to no row.
    timed_fit(spec, backend, rows[0][1], rows[0][2], 0)
    for name, data, kwargs in rows:
        result = timed_fit(spec, backend, data, kwargs, args.repeats)
        record["rows"].append({"row": name, **result,
                               "samples_per_s": args.batch * args.steps /
                               result["steady_epoch_s"]})
    record["rows"].append(_memmap_row(args, spec, backend))
    reference = record["rows"][0]["samples_per_s"]
    for row in record["rows"]:
        row["ratio_to_arrays"] = row["samples_per_s"] / reference
        row["batch_bytes"] = batch_bytes
    if backend.name != "numpy":
        record["pinned_h2d_bytes_per_s"] = pinned_copy_bandwidth(backend)
        streamed = next(r for r in record["rows"] if r["row"] == "host-streamed")
        streamed["h2d_bytes_per_s"] = batch_bytes * args.steps / streamed["steady_epoch_s"]
        streamed["of_pinned_bandwidth"] = streamed["h2d_bytes_per_s"] / \
            record["pinned_h2d_bytes_per_s"]
    return record


def _memmap_row(args, spec, backend):
    """The shuffled memmap of ``--gb`` GiB (at least one epoch's steps of rows); an
    epoch is every row of the file, shuffled by blocks (``block_order``)."""
    rows = max(args.batch * args.steps, int(args.gb * 2**30) // (spec.sizes[0] * 4))
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        start = time.perf_counter()
        x = write_memmap(os.path.join(folder, "x.npy"), rows, spec.sizes[0])
        written = time.perf_counter() - start
        _, y = synthetic_data(spec, rows, seed=1)
        result = timed_fit(spec, backend, (x, y), {"batch_size": args.batch}, args.repeats)
        del x
    return {"row": "memmap", **result, "file_bytes": rows * spec.sizes[0] * 4,
            "write_s": written, "samples_per_s": rows / result["steady_epoch_s"]}


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m dnn.bench.streaming",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="medium", choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=100, help="steps per timed epoch")
    p.add_argument("--repeats", type=int, default=3, help="steady epochs timed")
    p.add_argument("--gb", type=float, default=1.2, help="GiB of the memmap row's file")
    p.add_argument("--backend", default="auto")
    p.add_argument("--tmp", default=None, help="folder for the memmap's file")
    p.add_argument("--out", default=None, help="write the record as JSON here")
    return p.parse_args(argv)


def format_rows(record):
    lines = [f"{record['model']} @ {record['batch']}, {record['backend']['backend']}"]
    for row in record["rows"]:
        anon = row["anon_growth_bytes"]
        anon_text = "?" if anon is None else f"{anon / 2**20:,.1f}"
        lines.append(f"{row['row']:>14}: {row['samples_per_s']:>10,.0f} samples/s  "
                     f"{row['ratio_to_arrays']:.2f}x arrays  anon +{anon_text} MiB "
                     f"(a batch is {row['batch_bytes'] / 2**20:.2f} MiB)")
    if "pinned_h2d_bytes_per_s" in record:
        lines.append(f"pinned H2D copy alone: {record['pinned_h2d_bytes_per_s'] / 1e9:.1f} GB/s")
    return "\n".join(lines)


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    record = run(args)
    print(format_rows(record))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
