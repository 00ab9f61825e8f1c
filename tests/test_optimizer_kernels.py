"""The fused optimizer updates against ``kernels.reference.apply``: the CUDA kernels built
for the host (through the launchers the CuPy backend calls), and every backend's
``*_update`` methods (numba's one kernel at sizes where the NumPy backend uses it, the
NumPy passes chunk by chunk, CuPy's kernels on a GPU), over several steps with a
changing rate, random and extreme gradients, every option of Keras' apply."""
import numpy
import pytest

from dnn.backends.base import UpdateOptions
from dnn.kernels import cpu, host, launch, reference
from dnn.kernels.launch import Apply, FusedKernels

TOL = {"float32": dict(rtol=2e-4, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-13)}
HYPER = {"sgd": dict(momentum=0.9, nesterov=True), "rmsprop": dict(rho=0.9, epsilon=1e-7,
                                                                   momentum=0.5),
         "adam": dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7),
         "nadam": dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7), "adagrad": dict(epsilon=1e-7),
         "adamax": dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7),
         "lion": dict(beta_1=0.9, beta_2=0.99)}
# Each rule's state at its fullest (RMSprop centered, Adam with AMSGrad).
STATES = {"sgd": ("momentum",), "rmsprop": ("sq_avg", "velocity", "average_gradient"),
          "adam": ("m", "v", "v_hat"), "nadam": ("m", "v", "u_product"),
          "adagrad": ("accumulator",), "adamax": ("m", "u"), "lion": ("momentum",)}
# What Keras' apply adds: accumulation k, clipvalue, clip norm (and per weight?), weight
# decay per segment, EMA (overwrite frequency).
FEATURES = {"plain": dict(), "wd": dict(wd=[0.05]),
            "everything": dict(k=3, clipnorm=1.0, per_weight=True, wd=[0.05, 0.0, 0.05, 0.1],
                               ema=2),
            "joint": dict(clipnorm=2.0, per_weight=False, wd=[0.05]),
            "clipvalue-ema": dict(clipvalue=0.5, ema=0)}


def initial_state(rule, n, dtype):
    state = {name: numpy.zeros(n, dtype) for name in STATES[rule]}
    if rule == "nadam":
        state["u_product"] = numpy.ones(2)
    if rule == "adagrad":
        state["accumulator"] += 0.1
    return state


def gradient(rng, n, dtype):
    g = rng.normal(size=n) * rng.choice([1e-8, 1.0, 30.0], n)
    g[:4] = [0.0, -0.0, 1e-30, -5.0]
    return g.astype(dtype)


class Reference:
    """reference.apply over the steps, in float64."""

    def __init__(self, rule, p, bounds, features):
        self.rule, self.p, self.bounds, self.f = rule, p.astype(numpy.float64), bounds, features
        self.state = {k: v.astype(numpy.float64) for k, v in
                      initial_state(rule, p.size, numpy.float64).items()}
        self.acc = numpy.zeros(p.size) if features.get("k") else None
        self.ema = numpy.zeros(p.size) if "ema" in features else None

    def step(self, g, step, lr):
        f, bounds = self.f, self.bounds
        g = g.astype(numpy.float64)
        scale = None
        if f.get("clipnorm"):
            effective = reference.accumulated_gradient(g, self.acc, f.get("k", 1), step)
            scale = reference.segment_values(reference.clip_scales(
                effective, bounds, f["clipnorm"], f["per_weight"]), bounds)
        wd = f.get("wd")
        wd = 0.0 if wd is None else (wd[0] if len(wd) == 1 else reference.segment_values(
            numpy.array(wd), bounds))
        self.p, self.state, self.acc, self.ema = reference.apply(
            self.rule, self.p, g, self.state, step, lr, accumulator=self.acc,
            accumulation_steps=f.get("k", 1), clipvalue=f.get("clipvalue"), clip_scale=scale,
            weight_decay=wd, ema=self.ema, ema_momentum=0.9,
            ema_overwrite_frequency=f.get("ema") or None, **HYPER[self.rule])


def compare(update, rule, features, n, bounds, dtype, seed=0, steps=7):
    """Run ``update(p, g, state, step, lr, buffers)`` and the reference side by side."""
    rng = numpy.random.default_rng(seed)
    p = rng.normal(size=n).astype(dtype)
    ref = Reference(rule, p, bounds, features)
    state = initial_state(rule, n, dtype)
    for step in range(1, steps + 1):
        lr = 0.1 / step  # a rate that changes at every step
        g = gradient(rng, n, dtype)
        update(p, g.copy(), state, step, lr)
        ref.step(g, step, lr)
    assert numpy.isfinite(p).all()
    numpy.testing.assert_allclose(p, ref.p, **TOL[dtype])
    for name in state:
        if name != "u_product":
            numpy.testing.assert_allclose(state[name], ref.state[name],
                                          **dict(TOL[dtype], atol=TOL[dtype]["atol"] * 1e3))


# --------------------------------------------------------------- host CUDA kernels
@pytest.fixture(scope="module")
def k():
    if host.compiler() is None:
        pytest.skip("no C++ compiler")
    return FusedKernels(host.HostRuntime())


def launch_rule(k, rule, p, g, state, step, skip, lr, apply):
    s, h = state, HYPER[rule]
    if rule == "sgd":
        return k.sgd_apply(p, g, s["momentum"], step, skip, lr, h["momentum"], h["nesterov"],
                           apply)
    if rule == "rmsprop":
        return k.rmsprop_apply(p, g, s["sq_avg"], s["velocity"], s["average_gradient"], step,
                               skip, lr, h["rho"], h["epsilon"], h["momentum"], apply)
    if rule == "adam":
        return k.adam_apply(p, g, s["m"], s["v"], s["v_hat"], step, skip, lr, h["beta_1"],
                            h["beta_2"], h["epsilon"], apply)
    if rule == "nadam":
        return k.nadam_apply(p, g, s["m"], s["v"], s["u_product"], step, skip, lr, h["beta_1"],
                             h["beta_2"], h["epsilon"], apply)
    if rule == "adagrad":
        return k.adagrad_apply(p, g, s["accumulator"], step, skip, lr, h["epsilon"], apply)
    if rule == "adamax":
        return k.adamax_apply(p, g, s["m"], s["u"], step, skip, lr, h["beta_1"], h["beta_2"],
                              h["epsilon"], apply)
    return k.lion_apply(p, g, s["momentum"], step, skip, lr, h["beta_1"], h["beta_2"], apply)


def host_updater(k, rule, features, n, bounds, dtype):
    f = features
    acc = numpy.zeros(n, dtype) if f.get("k") else None
    ema = numpy.zeros(n, dtype) if "ema" in f else None
    per_segment = len(f.get("wd", [])) > 1 or f.get("per_weight")
    groups = numpy.repeat(numpy.arange(len(bounds) - 1), numpy.diff(bounds) //
                          reference.SEGMENT_GROUP).astype(numpy.int32) if per_segment else None
    count = len(bounds) - 1 if per_segment else 1
    chunks = launch.chunk_table(bounds if per_segment else [0, n])
    sums, scale = numpy.zeros(chunks[0].size - 1, dtype), numpy.zeros(count, dtype)
    wd = numpy.array(f["wd"] * (count if len(f["wd"]) == 1 else 1), dtype) \
        if "wd" in f else None
    apply = Apply(acc, f.get("k", 1), f.get("clipvalue", 0.0),
                  scale if f.get("clipnorm") else None, groups, wd, ema, 0.9, f.get("ema", 0))

    def update(p, g, state, step, lr):
        step = numpy.array([step], numpy.int64)
        if f.get("clipnorm"):
            k.clip_scales(g, acc, f.get("k", 1), step, chunks, sums, f["clipnorm"],
                          not f["per_weight"], scale)
        launch_rule(k, rule, p, g, state, step, numpy.zeros(1, numpy.int32),
                    numpy.array([lr], dtype), apply)

    return update


BOUNDS = [0, 32, 48, 96, 112]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("features", sorted(FEATURES))
@pytest.mark.parametrize("rule", sorted(reference.RULES))
def test_apply_kernels_against_the_reference(k, rule, features, dtype):
    compare(host_updater(k, rule, FEATURES[features], 112, BOUNDS, dtype), rule,
            FEATURES[features], 112, BOUNDS, dtype)


@pytest.mark.parametrize("offset", [0, 1])
def test_apply_kernels_stream_unaligned_buffers_one_element_at_a_time(k, offset):
    """Buffers off the 16-byte grid take the one-element path: the same arithmetic."""
    n = 112
    rng = numpy.random.default_rng(5)
    bufs = [numpy.zeros(n + 4)[offset:offset + n] for _ in range(6)]
    p, g, m, v, vhat, ema = bufs
    p[:], g[:] = rng.normal(size=n), gradient(rng, n, "float64")
    want = reference.apply("adam", p.copy(), g.copy(), {"m": m.copy(), "v": v.copy(),
                                                       "v_hat": vhat.copy()}, 1, 0.01,
                           ema=ema.copy(), ema_momentum=0.9, **HYPER["adam"])
    k.adam_apply(p, g, m, v, vhat, numpy.ones(1, numpy.int64), None, numpy.array([0.01]), 0.9,
                 0.999, 1e-7, Apply(ema=ema, ema_momentum=0.9))
    numpy.testing.assert_allclose(p, want[0], **TOL["float64"])
    numpy.testing.assert_allclose(ema, want[3], **TOL["float64"])


def test_a_set_skip_flag_freezes_every_apply_kernel(k):
    n, f = 112, FEATURES["everything"]
    for rule in reference.RULES:
        update = host_updater(k, rule, f, n, BOUNDS, "float64")
        rng = numpy.random.default_rng(1)
        p, state = rng.normal(size=n), initial_state(rule, n, "float64")
        update(p, gradient(rng, n, "float64"), state, 3, 0.1)
        before = p.copy(), {name: s.copy() for name, s in state.items()}
        launch_rule(k, rule, p, gradient(rng, n, "float64"), state,
                    numpy.array([6], numpy.int64), numpy.ones(1, numpy.int32),
                    numpy.array([0.1]), Apply())
        numpy.testing.assert_array_equal(p, before[0])
        for name, s in state.items():
            numpy.testing.assert_array_equal(s, before[1][name], err_msg=f"{rule} {name}")


@pytest.mark.parametrize("sizes", [[16], [16, 4096, 16], [70000, 32, 256 * 4096 + 48]])
def test_the_clip_norm_reduction_chunks_every_segment(k, sizes):
    """Per-weight and joint norms of segments large and small, against NumPy's."""
    bounds = numpy.concatenate([[0], numpy.cumsum(sizes)])
    g = numpy.random.default_rng(2).normal(size=bounds[-1])
    chunks = launch.chunk_table(bounds)
    assert chunks[0].size - 1 <= launch.MAX_CHUNKS + len(sizes)
    sums, scale = numpy.zeros(chunks[0].size - 1), numpy.zeros(len(sizes))
    step = numpy.ones(1, numpy.int64)
    for per_weight in (True, False):
        k.clip_scales(g, None, 1, step, chunks, sums, 3.0, not per_weight, scale)
        numpy.testing.assert_allclose(scale, reference.clip_scales(g, bounds, 3.0, per_weight),
                                      rtol=1e-12)


# -------------------------------------------------------------------- backends
def backend_updater(backend, rule, features, n, bounds, dtype):
    """The backend's ``*_update`` method with ``UpdateOptions`` (None for "plain")."""
    be, f = backend, features
    dev = {}
    step_buffer = be.zeros((1,), "int64")
    options = None
    if features and features != {"wd": f.get("wd")}:
        per_segment = len(f.get("wd", [])) > 1 or f.get("per_weight")
        segments = be.weight_segments(bounds if per_segment else [0, n], dtype) \
            if per_segment or f.get("clipnorm") else None
        options = UpdateOptions(
            step=step_buffer, accumulator=be.zeros((n,), dtype) if f.get("k") else None,
            accumulation_steps=f.get("k", 1), clipvalue=f.get("clipvalue"),
            clip_scales=be.zeros((segments.count,), dtype) if f.get("clipnorm") else None,
            segments=segments,
            weight_decay=be.asarray(numpy.array(f["wd"], dtype)) if len(f.get("wd", [])) > 1
            else None, ema=be.zeros((n,), dtype) if "ema" in f else None, ema_momentum=0.9,
            ema_overwrite_frequency=f.get("ema", 0))
    wd = f["wd"][0] if len(f.get("wd", [])) == 1 else 0.0
    h = HYPER[rule]

    def update(p, g, state, step, lr):
        if not dev:
            dev.update(p=be.asarray(p), state={k: be.asarray(v) for k, v in state.items()})
        be.fill(step_buffer, step)
        pd, s, gd, rate = dev["p"], dev["state"], be.asarray(g), be.asarray(numpy.array([lr],
                                                                                       dtype))
        if options is not None and options.clip_scales is not None:
            be.clip_scales(gd, f["clipnorm"], f["per_weight"], options)
        kw = dict(weight_decay=wd, options=options)
        if rule == "sgd":
            be.sgd_update(pd, gd, s["momentum"], rate, **h, **kw)
        elif rule == "rmsprop":
            be.rmsprop_update(pd, gd, s["sq_avg"], rate, velocity=s["velocity"],
                              average_gradient=s["average_gradient"], **h, **kw)
        elif rule == "adam":
            be.adam_update(pd, gd, s["m"], s["v"], step_buffer, rate, v_hat=s["v_hat"], **h,
                           **kw)
        elif rule == "nadam":
            be.nadam_update(pd, gd, s["m"], s["v"], s["u_product"], step_buffer, rate, **h,
                            **kw)
        elif rule == "adagrad":
            be.adagrad_update(pd, gd, s["accumulator"], rate, **h, **kw)
        elif rule == "adamax":
            be.adamax_update(pd, gd, s["m"], s["u"], step_buffer, rate, **h, **kw)
        else:
            be.lion_update(pd, gd, s["momentum"], rate, **h, **kw)
        p[:] = be.to_numpy(pd)
        for name, buf in s.items():
            state[name][...] = be.to_numpy(buf)

    return update


BIG = cpu.MIN_SIZE + 48  # numba's kernels on the "numpy" backend
BIG_BOUNDS = [0, 16, 4096, cpu.MIN_SIZE, BIG]


@pytest.mark.parametrize("features", sorted(FEATURES))
@pytest.mark.parametrize("rule", sorted(reference.RULES))
def test_every_backend_update_against_the_reference(backend, rule, features):
    compare(backend_updater(backend, rule, FEATURES[features], 112, BOUNDS, "float64"), rule,
            FEATURES[features], 112, BOUNDS, "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("features", ["wd", "everything"])
@pytest.mark.parametrize("rule", sorted(reference.RULES))
def test_large_buffers_take_the_fused_path_and_agree(backend, rule, features, dtype):
    compare(backend_updater(backend, rule, FEATURES[features], BIG, BIG_BOUNDS, dtype), rule,
            FEATURES[features], BIG, BIG_BOUNDS, dtype, steps=4)


@pytest.mark.parametrize("rule", ["rmsprop", "nadam"])
def test_buffers_split_across_threads_agree(backend, rule):
    """Past the NumPy backend's threading size, each thread's share of the chunks starts
    anywhere, not on a segment's group."""
    n = (1 << 19) + 4 * 16
    bounds = [0, 48, 1 << 18, (1 << 18) + 4096, n]
    compare(backend_updater(backend, rule, FEATURES["everything"], n, bounds, "float64"),
            rule, FEATURES["everything"], n, bounds, "float64", steps=3)
