"""Training throughput of dnn and of PyTorch on the same model, optimizer and batch, in
steady state: the data on the device, epochs timed after the first."""
from __future__ import annotations

import statistics
import time

import numpy

from dnn.callbacks import Callback

from .timing import measure


def synthetic_data(spec, n, seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((n, spec.sizes[0])).astype(numpy.float32)
    out = spec.sizes[-1]
    if spec.loss == "binary_crossentropy":
        y = rng.integers(0, 2, (n, out)).astype(numpy.float32)
    elif spec.loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, out, n)
    else:
        y = rng.standard_normal((n, out)).astype(numpy.float32)
    return x, y


def steps_for(spec, batch, target_flops=4e9, lo=50, hi=400):
    """Steps per timed epoch: at least ``lo``, so that per-epoch work (data checks, the
    NaN guard's weight snapshot) is amortised as in real training."""
    per_step = max(spec.gemm_flops(batch), 1)
    if per_step > 5e9:  # seconds-long steps: a few of them already average out
        lo = 5
    return int(min(hi, max(lo, target_flops // per_step)))


class EpochClock(Callback):
    """Reads the clock at the end of every epoch, the device synchronised first, so each
    epoch's time covers its device work. ``times[0]`` is when the clock was made.
    ``between_epochs``, when given, runs after each reading (the floor's samples, see
    ``limits.StepFloor``), and its time is left out of ``times``."""

    def __init__(self, backend, between_epochs=None):
        self.backend = backend
        self.between_epochs = between_epochs
        self.paused = 0.0
        self.times = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs=None):
        self.backend.synchronize()
        now = time.perf_counter()
        self.times.append(now - self.paused)
        if self.between_epochs is not None:
            self.between_epochs()
            self.backend.synchronize()
            self.paused += time.perf_counter() - now


def dnn_throughput(spec, batch, backend, dtype, steps, repeats=3, cuda_graph="auto",
                   between_epochs=None):
    """``{"samples_per_s", "step_s", "first_epoch_s", "epoch_s"}`` of one ``model.fit``
    call over ``1 + repeats`` epochs of ``steps`` steps (Adam, shuffled; the data
    uploaded once, by fit, as users do). The first epoch (checks, upload, kernel
    compilation, graph capture) is reported on its own; the rate is the median of the
    steady epochs after it. ``between_epochs`` runs after each epoch, untimed."""
    import dnn
    from dnn.layers import Dense

    with dnn.use_backend(backend):
        layers = [Dense(u, spec.hidden) for u in spec.sizes[1:-1]]
        layers.append(Dense(spec.sizes[-1], spec.output))
        model = dnn.Sequential(layers, input_dim=spec.sizes[0], seed=0, dtype=dtype)
        model.compile(loss=spec.loss, optimizer="adam")
        x, y = synthetic_data(spec, batch * steps)
        backend.synchronize()
        clock = EpochClock(backend, between_epochs)
        model.fit(x, y, epochs=1 + repeats, batch_size=batch, verbose=0,
                  cuda_graph=cuda_graph, callbacks=[clock])
    epochs = [b - a for a, b in zip(clock.times, clock.times[1:])]
    seconds = statistics.median(epochs[1:])
    return {"samples_per_s": batch * steps / seconds, "step_s": seconds / steps,
            "first_epoch_s": epochs[0], "epoch_s": epochs}


def torch_status():
    """(torch module or None, reason)."""
    try:
        import torch
    except Exception as exc:
        return None, f"PyTorch not installed ({exc})"
    return torch, None


def _torch_model(torch, spec, device, dtype):
    mods = []
    for k, n in spec.layer_shapes[:-1]:
        mods += [torch.nn.Linear(k, n), {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
                                         "sigmoid": torch.nn.Sigmoid}[spec.hidden]()]
    mods.append(torch.nn.Linear(*spec.layer_shapes[-1]))
    net = torch.nn.Sequential(*mods).to(device=device, dtype=dtype)
    loss = {"binary_crossentropy": torch.nn.BCEWithLogitsLoss(),
            "sparse_categorical_crossentropy": torch.nn.CrossEntropyLoss(),
            "mse": torch.nn.MSELoss()}[spec.loss]
    return net, loss


def torch_throughput(spec, batch, device, dtype, steps, repeats=3, mode="eager"):
    """PyTorch's samples/s for the same model, Adam and batch: ``mode`` is "eager",
    "graph" (the step captured with torch.cuda.graphs) or "compile" (torch.compile)."""
    torch, why = torch_status()
    if torch is None:
        raise RuntimeError(why)
    autocast = dtype == "autocast_bfloat16"
    tdtype = {"float32": torch.float32, "float64": torch.float64,
              "autocast_bfloat16": torch.float32}[dtype]
    net, loss_fn = _torch_model(torch, spec, device, tdtype)
    x_host, y_host = synthetic_data(spec, batch * steps)
    x = torch.as_tensor(x_host, device=device, dtype=tdtype)
    y = torch.as_tensor(y_host, device=device)
    if y.is_floating_point():
        y = y.to(tdtype)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3,
                           capturable=(mode == "graph"))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(xb, yb):
        opt.zero_grad(set_to_none=(mode != "graph"))
        # cache_enabled=False: autocast's weight cache must not outlive a graph capture.
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast,
                            cache_enabled=False):
            loss = loss_fn(net(xb).float(), yb)
        loss.backward()
        opt.step()
        return loss

    if mode == "compile":
        step = torch.compile(step)
    if mode == "graph":
        xb = x[:batch].clone()
        yb = y[:batch].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm up on a side stream, as the CUDA graphs docs ask
                step(xb, yb)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(xb, yb)

        def epoch():
            perm = torch.randperm(x.shape[0], device=device)
            for i in range(steps):
                idx = perm[i * batch:(i + 1) * batch]
                torch.index_select(x, 0, idx, out=xb)
                torch.index_select(y, 0, idx, out=yb)
                graph.replay()
    else:
        def epoch():
            perm = torch.randperm(x.shape[0], device=device)
            for i in range(steps):
                idx = perm[i * batch:(i + 1) * batch]
                step(x[idx], y[idx])

    seconds, _ = measure(epoch, sync=sync, warmup=1, repeats=repeats)
    return {"samples_per_s": batch * steps / seconds, "step_s": seconds / steps}
