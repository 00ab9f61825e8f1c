"""Batch sources and streamed arrays (issue 21): each trains to the same weights as the
same batches from an array in the same order (float64, shuffle off: bitwise, or within
1e-12 on a GPU), validation, evaluate and predict take them, the last batch may be
short, and steps_per_execution, resume, the NaN guard and the progress bar work as
with arrays."""
import io

import numpy
import pytest

import dnn
from dnn import backends
from dnn.layers import Dense, Dropout
from dnn.training import Rows

ROWS, BATCH = 300, 32  # nine full batches and a short one of 12


def data(rows=ROWS, seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(numpy.float64)
    return x, y


def model(steps_per_execution=1, dropout=True, **kw):
    layers = [Dense(16, "tanh")] + ([Dropout(0.25)] if dropout else []) + \
        [Dense(8, "relu"), Dense(1, "sigmoid")]
    m = dnn.Sequential(layers, input_dim=3, seed=7, dtype="float64", **kw)
    m.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"],
              steps_per_execution=steps_per_execution)
    return m


def batches(x, y, size=BATCH, w=None):
    return [(x[i:i + size], y[i:i + size]) + (() if w is None else (w[i:i + size],))
            for i in range(0, x.shape[0], size)]


class Sequence:
    """A Keras-style sequence: __len__, __getitem__ and on_epoch_end."""

    def __init__(self, x, y, size=BATCH):
        self.x, self.y, self.size = x, y, size
        self.ended = 0

    def __len__(self):
        return -(-self.x.shape[0] // self.size)

    def __getitem__(self, i):
        return self.x[i * self.size:(i + 1) * self.size], self.y[i * self.size:(i + 1) * self.size]

    def on_epoch_end(self):
        self.ended += 1


class PyDatasetShape:
    """Keras 3's PyDataset shape: num_batches on the class, workers, max_queue_size."""

    def __init__(self, x, y, workers=3):
        self.inner, self.workers, self.max_queue_size = Sequence(x, y), workers, 4

    @property
    def num_batches(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


def assert_same_training(a, b, history_a, history_b, exact):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        if exact:
            numpy.testing.assert_array_equal(wa, wb)
        else:
            numpy.testing.assert_allclose(wa, wb, rtol=0, atol=1e-12)
    assert history_a.history.keys() == history_b.history.keys()
    for key in history_a.history:
        numpy.testing.assert_allclose(history_a.history[key], history_b.history[key],
                                      rtol=0 if exact else 1e-12)


def reference(use, epochs=2, **fit):
    x, y = data()
    m = model()
    return m, m.fit(x, y, epochs=epochs, batch_size=BATCH, shuffle=False, verbose=0, **fit)


def generator(x, y, passes):
    for _ in range(passes):
        yield from batches(x, y)


SOURCES = {
    "generator-steps": lambda x, y: (generator(x, y, 2), {"steps_per_epoch": 10}),
    "sequence": lambda x, y: (Sequence(x, y), {"shuffle": False}),
    "list-of-batches": lambda x, y: (batches(x, y), {"shuffle": False}),
    "pydataset-pool": lambda x, y: (PyDatasetShape(x, y), {"shuffle": False}),
    "memmap": None,  # made in the test: needs a file
    "rows": lambda x, y: (Rows(x, numpy.arange(x.shape[0])),
                          {"y": y, "shuffle": False, "batch_size": BATCH}),
}


@pytest.mark.parametrize("kind", list(SOURCES))
def test_each_source_trains_as_the_same_batches_from_an_array(use, kind, tmp_path):
    want, want_history = reference(use)
    x, y = data()
    if kind == "memmap":
        numpy.save(tmp_path / "x.npy", x)
        source, fit = numpy.load(tmp_path / "x.npy", mmap_mode="r"), \
            {"y": y, "shuffle": False, "batch_size": BATCH}
    else:
        source, fit = SOURCES[kind](x, y)
    got = model()
    history = got.fit(source, epochs=2, verbose=0, **fit)
    assert_same_training(want, got, want_history, history, exact=use.name != "cupy")
    assert got.train_steps == want.train_steps == 20 and got.epochs_done == 2


def test_a_torch_dataloader_and_tensors_are_taken_through_dlpack(use):
    torch = pytest.importorskip("torch")
    want, want_history = reference(use)
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH, shuffle=False)
    got = model()
    history = got.fit(loader, epochs=2, verbose=0)
    assert_same_training(want, got, want_history, history, exact=use.name != "cupy")
    tensors = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in batches(x, y)]
    again = model()
    again.fit(iter(tensors * 2), epochs=2, steps_per_epoch=10, verbose=0)
    assert_same_training(want, again, want_history, again.history, use.name != "cupy")
    numpy.testing.assert_array_equal(got.predict(loader), got.predict(x))
    assert got.evaluate(loader) == pytest.approx(got.evaluate(x, y), rel=1e-12)


def test_sample_weights_in_batches_and_class_weight_train_as_with_arrays(use):
    x, y = data()
    w = numpy.random.default_rng(3).uniform(0.5, 2, ROWS)
    want = model()
    want.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0, sample_weight=w,
             class_weight={0: 1.0, 1: 3.0})
    got = model()
    got.fit(batches(x, y, w=w), epochs=1, shuffle=False, verbose=0,
            class_weight={0: 1.0, 1: 3.0})
    for a, b in zip(want.get_weights(), got.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_a_shuffled_sequence_reads_its_batches_in_the_documented_order(use):
    """Epoch e reads batches in epoch_order(len, seed, e); steps_per_epoch streams on
    across epochs through passes laid end to end."""
    from dnn.training.epoch_plan import epoch_order

    x, y = data()
    seq = Sequence(x, y)
    got = model()
    got.fit(seq, epochs=3, steps_per_epoch=7, shuffle=True, verbose=0)
    assert seq.ended == 3  # on_epoch_end after every epoch
    order = [i for p in range(3) for i in epoch_order(10, 7, p, True)]
    want = model()
    want.fit(iter([seq[i] for i in order]), epochs=3, steps_per_epoch=7, verbose=0)
    for a, b in zip(want.get_weights(), got.get_weights()):
        numpy.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["sequence", "memmap"])
def test_a_shuffled_source_resumes_exactly(kind, tmp_path):
    x, y = data()
    if kind == "memmap":
        numpy.save(tmp_path / "x.npy", x)
        args = (numpy.load(tmp_path / "x.npy", mmap_mode="r"), y)
        fit = {"batch_size": BATCH}
    else:
        args, fit = (Sequence(x, y),), {"steps_per_epoch": 6}
    straight = model()
    straight.fit(*args, epochs=4, verbose=0, **fit)
    first = model()
    first.fit(*args, epochs=2, verbose=0, **fit)
    first.save(tmp_path / "half.npz")
    resumed = dnn.load_model(tmp_path / "half.npz")
    resumed.fit(*args, epochs=4, initial_epoch=2, verbose=0, **fit)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        numpy.testing.assert_array_equal(a, b)


class SmallDevice(backends.NumpyBackend):
    """A device whose arrays are not host arrays (so batches are copied to device
    slots, as on a GPU), with 1 MiB free: host data sets stream."""

    def is_native(self, x):
        return False

    def free_memory(self):
        return 1 << 20


@pytest.mark.parametrize("k", [1, 3])
def test_captured_steps_and_k_step_chunks_replay_streamed_batches(k):
    """cuda_graph=True: single steps read the fixed batch buffers, K-step chunks gather
    from a fixed chunk slot; on a device backend (host slots copied to device slots)
    and on the host."""
    x, y = data()
    want = model(steps_per_execution=k)
    want.fit(x, y, epochs=2, batch_size=BATCH, shuffle=False, verbose=0, cuda_graph=True)
    for backend in ("numpy", SmallDevice()):
        with dnn.use_backend(backend):
            for source, fit in ((Sequence(x, y), {}), (x, {"y": y, "batch_size": BATCH})):
                got = model(steps_per_execution=k)
                got.fit(source, epochs=2, shuffle=False, verbose=0, cuda_graph=True, **fit)
                for a, b in zip(want.get_weights(), got.get_weights()):
                    numpy.testing.assert_array_equal(a, b)


def test_a_host_data_set_larger_than_the_device_streams_instead_of_being_refused():
    x, y = data(20_000)  # 480 KiB of float64 features: over 0.8 x 1 MiB with the rest
    with dnn.use_backend(SmallDevice()):
        got = model()
        got.fit(x, y, epochs=1, batch_size=256, verbose=0)
        assert type(got._trainer).__name__ == "Trainer"
    want = model()
    want.fit(x, y, epochs=1, batch_size=256, verbose=0)
    for a, b in zip(want.get_weights(), got.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(want.predict(x), got.predict(x))
    assert want.evaluate(x, y) == got.evaluate(x, y)


def test_validation_data_as_a_source_reports_what_arrays_report(use):
    x, y = data()
    xv, yv = data(100, seed=1)
    want = model()
    want_history = want.fit(x, y, epochs=2, batch_size=BATCH, shuffle=False, verbose=0,
                            validation_data=(xv, yv))
    for validation, fit in ((Sequence(xv, yv), {}), (batches(xv, yv), {}),
                            (generator(xv, yv, 2), {"validation_steps": 4})):
        got = model()
        history = got.fit(Sequence(x, y), epochs=2, shuffle=False, verbose=0,
                          validation_data=validation, **fit)
        assert_same_training(want, got, want_history, history, exact=use.name != "cupy")


def test_evaluate_and_predict_take_sources_and_steps(use, tmp_path):
    x, y = data()
    m = model()
    m.fit(x, y, epochs=1, verbose=0)
    numpy.save(tmp_path / "x.npy", x)
    mapped = numpy.load(tmp_path / "x.npy", mmap_mode="r")
    want = m.evaluate(x, y, batch_size=BATCH)
    for source, args in ((Sequence(x, y), ()), (iter(batches(x, y)), ()), (mapped, (y,))):
        got = m.evaluate(source, *args, **({"batch_size": BATCH} if args else {}))
        assert got == pytest.approx(want, rel=1e-12)
    numpy.testing.assert_allclose(m.predict(iter(batches(x, y))), m.predict(x), rtol=1e-12)
    numpy.testing.assert_allclose(m.predict(mapped), m.predict(x), rtol=1e-12)
    numpy.testing.assert_allclose(m.predict(iter([b[0] for b in batches(x, y)])),
                                  m.predict(x), rtol=1e-12)  # bare arrays: x alone
    assert m.predict(Sequence(x, y), steps=2).shape == (64, 1)
    assert m.evaluate(x, y, batch_size=BATCH, steps=2) == pytest.approx(
        m.evaluate(x[:64], y[:64]), rel=1e-12)


def test_a_float64_memmap_is_cast_per_batch_never_copied_whole(tmp_path):
    import tracemalloc

    x, y = data(40_000)
    x = numpy.repeat(x, 8, axis=1)  # 40,000 x 24 float64: 7.3 MiB
    numpy.save(tmp_path / "x.npy", x)
    mapped = numpy.load(tmp_path / "x.npy", mmap_mode="r")
    m = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=24, seed=0)
    m.compile(loss="binary_crossentropy", optimizer="adam")
    m.fit(mapped[:256], y[:256], epochs=1, verbose=0)  # first-use allocations aside
    tracemalloc.start()
    m.fit(mapped, y, epochs=1, batch_size=256, verbose=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 << 20, peak  # a float32 copy would be 3.7 MiB; a batch is 24 KiB


# ------------------------------------------------------------------- errors
def test_a_bad_batch_is_named_with_its_index_and_problem():
    x, y = data()
    bad = batches(x, y)
    bad[2] = (bad[2][0].copy(), bad[2][1])
    bad[2][0][5, 1] = numpy.nan
    with pytest.raises(ValueError, match=r"^batch 2: x: expected finite values; got nan at "
                                         r"index \(5, 1\)"):
        model().fit(bad, verbose=0)
    narrow = batches(x, y)
    narrow[1] = (narrow[1][0][:, :2], narrow[1][1])
    with pytest.raises(ValueError, match=r"^batch 1: x: expected 3 features per sample"):
        model().fit(narrow, verbose=0)
    with pytest.raises(ValueError, match=r"^batch 0: expected a tuple \(x, y\) or \(x, y, "
                                         r"sample_weight\) \(fit and evaluate need targets\)"):
        model().fit(iter([x[:10]]), verbose=0)
    mixed = batches(x, y) + [(x[:4], y[:4], numpy.ones(4))]
    with pytest.raises(ValueError, match=r"^batch 10: expected \(x, y\) batches, as the "
                                         r"first batch was; got \(x, y, sample_weight\)"):
        model().fit(mixed, verbose=0)
    labels = batches(x, y * 3)
    with pytest.raises(ValueError, match=r"^batch 0: y: loss 'binary_crossentropy' expects "
                                         r"targets in \[0, 1\]; got 3"):
        model().fit(labels, verbose=0)


def test_a_bad_value_in_a_memmap_names_its_row(tmp_path):
    x, y = data()
    x[123, 2] = numpy.inf
    numpy.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"x: expected finite values; got inf at index "
                                         r"\(123, 2\)"):
        model().fit(numpy.load(tmp_path / "x.npy", mmap_mode="r"), y, verbose=0)


@pytest.mark.parametrize("fit,pattern", [
    ({"y": numpy.zeros(3)}, r"y: expected None when x is a batch source"),
    ({"batch_size": 64}, r"batch_size: expected None when x is a batch source \(its "
                         r"batches set their size\); got 64"),
    ({"validation_split": 0.2}, r"validation_split: expected 0 when x is a batch source"),
    ({"sample_weight": numpy.ones(3)}, r"sample_weight: expected None when x is a batch "
                                       r"source \(yield \(x, y, sample_weight\) batches\)"),
])
def test_what_does_not_apply_to_a_batch_source_is_refused_by_name(fit, pattern):
    x, y = data()
    with pytest.raises(ValueError, match=pattern):
        model().fit(batches(x, y), verbose=0, **fit)


def test_steps_per_epoch_with_arrays_and_an_endless_sequence_without_it_are_refused():
    x, y = data()
    with pytest.raises(ValueError, match=r"steps_per_epoch: expected None for array data"):
        model().fit(x, y, steps_per_epoch=3, verbose=0)

    class Endless:
        num_batches = None

        def __getitem__(self, i):
            return x[:8], y[:8]

    with pytest.raises(ValueError, match=r"steps_per_epoch: expected the number of batches "
                                         r"per epoch for an endless sequence"):
        model().fit(Endless(), verbose=0)
    m = model()
    m.fit(Endless(), steps_per_epoch=3, epochs=2, verbose=0)
    assert m.train_steps == 6


def test_a_torch_dataset_passed_for_its_dataloader_gets_a_hint():
    torch = pytest.importorskip("torch")
    x, y = data()
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    with pytest.raises(ValueError, match=r"a torch Dataset gives samples, not batches: pass "
                                         r"a torch.utils.data.DataLoader"):
        model().fit(dataset, verbose=0)


def loader_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("dnn-loader")]


def test_an_error_in_a_loader_reaches_fit_with_its_traceback_and_stops_the_loaders():
    import traceback

    x, y = data()

    def failing():
        for i, batch in enumerate(batches(x, y)):
            if i == 3:
                raise RuntimeError("the disk went away")
            yield batch

    m = model()
    with pytest.raises(RuntimeError, match="the disk went away") as caught:
        m.fit(failing(), verbose=0)
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert "failing" in frames and "fit" in frames  # the loader's frames follow fit's
    notes = getattr(caught.value, "__notes__", ["(raised in dnn's loader thread"])
    assert any("raised in dnn's loader thread while preparing batch" in n for n in notes)
    assert not loader_threads()
    assert m.train_steps <= 3

    class Failing(Sequence):
        workers = 3

        def __getitem__(self, i):
            if i == 5:
                raise KeyError(i)
            return super().__getitem__(i)

    with pytest.raises(KeyError):
        model().fit(Failing(x, y), verbose=0, shuffle=False)
    assert not loader_threads()


@pytest.mark.parametrize("kind", ["memmap", "sequence"])
def test_a_landing_whose_loader_could_not_be_stopped_is_never_handed_out_again(
        kind, tmp_path, monkeypatch):
    """An evaluation left while a loader is stuck in a batch: the loader may still write
    its slot, so the next evaluation (the same ring and specs) gets a new landing; one
    whose loaders stopped is reused."""
    import threading

    from dnn.training import data_adapter, stream_feed

    monkeypatch.setattr(stream_feed, "JOIN_S", 0.05)
    x, y = data()
    m = model()
    release = threading.Event()
    if kind == "memmap":
        numpy.save(tmp_path / "x.npy", x)
        source, _ = data_adapter.evaluation_source(
            m, numpy.load(tmp_path / "x.npy", mmap_mode="r"), y, BATCH)
        stage = source._stage

        def stuck(landing, order, batch_size, task, slot):
            if task[0] > 0:
                release.wait(10)
            return stage(landing, order, batch_size, task, slot)
    else:
        source, _ = data_adapter.evaluation_source(m, Sequence(x, y), None, None)
        stage = source._stage

        def stuck(landing, index, slot, split=True):
            if index > 0:
                release.wait(10)
            return stage(landing, index, slot, split)
    source._stage = stuck
    try:
        with source.evaluation(m, BATCH) as batches:
            next(iter(batches))  # the loader is then stuck in the next batch
            abandoned = batches.landing
        assert abandoned.abandoned
    finally:
        release.set()
    with source.evaluation(m, BATCH) as batches:
        assert batches.landing is not abandoned
        rows = sum(b[0].shape[0] for b in batches)
        kept = batches.landing
    assert rows == ROWS and not kept.abandoned
    with source.evaluation(m, BATCH) as batches:
        assert batches.landing is kept


def test_an_early_ending_generator_stops_training_with_a_warning():
    x, y = data()
    m = model()
    with pytest.warns(RuntimeWarning, match=r"fit: the data ran out during epoch 2, after "
                                            r"fewer than steps_per_epoch=10 batches"):
        history = m.fit(iter(batches(x, y) + batches(x, y)[:5]), epochs=3,
                        steps_per_epoch=10, verbose=0)
    assert len(history.history["loss"]) == 2 and m.train_steps == 15
    assert m.epochs_done == 1  # the partial epoch is not done
    again = model()
    with pytest.warns(RuntimeWarning, match=r"fit: the data ran out before epoch 2"):
        history = again.fit(generator(x, y, 1), epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1 and again.epochs_done == 1


def test_a_re_iterable_source_starts_a_new_pass_within_steps_per_epoch():
    x, y = data()
    listed = batches(x, y)  # 10 batches a pass
    m = model()
    m.fit(listed, epochs=2, steps_per_epoch=15, shuffle=False, verbose=0)
    want = model()
    want.fit(iter(listed * 3), epochs=2, steps_per_epoch=15, verbose=0)
    for a, b in zip(want.get_weights(), m.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_ctrl_c_stops_training_and_the_loaders():
    import os
    import signal
    import threading
    import time

    x, y = data()

    class Interrupt(dnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    m = model()
    history = m.fit(Sequence(x, y), epochs=3, verbose=0, callbacks=[Interrupt()])
    assert history.history.get("loss") is None or len(history.history["loss"]) == 1
    assert history.interrupted and not loader_threads()

    def slow():  # a loader that stalls: the step waits for its next batch
        yield from batches(x, y)[:2]
        for batch in batches(x, y):
            time.sleep(1.0)
            yield batch

    def press_twice():
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGINT)  # asks to stop after the current step...
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)  # ... and the second stops at once

    presser = threading.Thread(target=press_twice)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        model().fit(slow(), epochs=1, verbose=0)
    presser.join()
    deadline = time.monotonic() + 3  # a loader inside a slow batch ends once it is done
    while loader_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not loader_threads()


def test_the_nan_guard_names_the_step_of_a_source_of_unknown_length():
    x, y = data()
    m = dnn.Sequential([Dense(8, "relu"), Dense(1)], input_dim=3, seed=1)
    m.compile(loss="mse", optimizer=dnn.optimizers.SGD(1e3))
    with pytest.raises(dnn.NonFiniteLossError, match=r"at epoch 1, step \d+;"):
        m.fit(iter(batches(x * 100, y * 1e3)), epochs=1, verbose=0)


def test_the_progress_bar_counts_unknown_steps_then_shows_the_total(monkeypatch):
    x, y = data()

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    logger = dnn.callbacks.ProgressLogger(verbose=1, stream=out)
    monkeypatch.setattr(logger, "_columns", lambda: 100)
    m = model()
    m.fit((b for _ in range(2) for b in batches(x, y)), epochs=1, verbose=0,
          callbacks=[logger])
    text = out.getvalue()
    assert "1/Unknown" in text and "20/20 [" in text  # 2 passes: learned at the end
    known = Tty()
    logger = dnn.callbacks.ProgressLogger(verbose=1, stream=known)
    monkeypatch.setattr(logger, "_columns", lambda: 100)
    model().fit(Sequence(x, y), epochs=1, verbose=0, callbacks=[logger])
    assert " 1/10 [" in known.getvalue()


def test_a_named_communicator_in_a_world_of_one_agrees_every_step_unchanged():
    """DataParallel("mpi") alone takes the data-parallel path: every batch of a source
    agreed across the (one) rank; nothing may change."""
    pytest.importorskip("mpi4py")
    x, y = data()
    want = model()
    want.fit(Sequence(x, y), epochs=2, shuffle=False, verbose=0)
    for shard in (False, True):
        m = dnn.Sequential([Dense(16, "tanh"), Dropout(0.25), Dense(8, "relu"),
                            Dense(1, "sigmoid")], input_dim=3, seed=7, dtype="float64")
        m.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"],
                  distribute=dnn.distributed.DataParallel("mpi"))
        m.fit(Sequence(x, y), epochs=2, shuffle=False, verbose=0, shard=shard)
        for a, b in zip(want.get_weights(), m.get_weights()):
            numpy.testing.assert_array_equal(a, b)


# --------------------------------------------------------- the device path on a CPU
class EventLog(SmallDevice):
    """A device backend that logs the staging calls and hands out named events, to
    check how copies are ordered against the steps."""

    def __init__(self):
        super().__init__()
        self.log, self._count = [], 0

    def upload_stream(self):
        return "copy"

    def upload(self, host, out, stream=None):
        self.log.append(("upload", stream))
        return super().upload(host, out, stream)

    def record_event(self, stream=None, event=None):
        event = event or f"event{self._count}"
        self._count += 1
        self.log.append(("record", stream or "compute", event))
        return event

    def wait_event(self, event, stream=None):
        self.log.append(("wait", stream or "compute", event))

    def host_wait(self, event):
        self.log.append(("host_wait", event))


def test_a_slot_is_refilled_only_after_its_copy_and_recopied_after_its_steps():
    from dnn.training.staging import Landing

    be = EventLog()
    landing = Landing(be, [((2,), "float64")], ring=1)
    for step in range(2):
        host, = landing.host_buffers(0, 4)  # the loader
        host[...] = step
        landing.send(0, 4)
        device, = landing.batch(0, 4)  # the step
        numpy.testing.assert_array_equal(device, step)
        landing.release(0)
    uploaded, consumed = "event0", "event1"
    assert be.log == [
        ("host_wait", None), ("wait", "copy", None), ("upload", "copy"),
        ("record", "copy", uploaded),  # the copy's end
        ("wait", "compute", uploaded),  # the step waits for the copy
        ("record", "compute", consumed),  # the step's end
        ("host_wait", uploaded),  # the loader rewrites the host slot after its copy
        ("wait", "copy", consumed),  # the next copy waits for the step that read it
        ("upload", "copy"), ("record", "copy", uploaded),
        ("wait", "compute", uploaded), ("record", "compute", consumed)]


def test_training_through_logged_events_matches_arrays():
    x, y = data()
    want = model()
    want.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    be = EventLog()
    with dnn.use_backend(be):
        got = model()
        got.fit(Sequence(x, y), epochs=1, shuffle=False, verbose=0)
    for a, b in zip(want.get_weights(), got.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    assert sum(1 for entry in be.log if entry == ("upload", "copy")) == 2 * 10  # x and y


@pytest.mark.gpu
def test_cupy_stages_in_pinned_memory_and_orders_the_copy_with_events():
    if backends.backend_status()["cupy"] is not None:
        pytest.skip(backends.backend_status()["cupy"])
    import cupy

    be = backends.get_backend("cupy")
    host = be.host_empty((4096, 16), "float32")
    attributes = cupy.cuda.runtime.pointerGetAttributes(host.ctypes.data)
    assert attributes.type == cupy.cuda.runtime.memoryTypeHost  # page-locked
    host[...] = numpy.arange(host.size, dtype=numpy.float32).reshape(host.shape)
    out = be.empty(host.shape, "float32")
    stream = be.upload_stream()
    be.upload(host, out, stream)
    event = be.record_event(stream)
    assert be.record_event(stream, event) is event  # recorded again, not made anew
    be.wait_event(event)
    total = be.sum(out)  # on the compute stream, after the copy
    be.host_wait(event)
    assert float(total) == float(host.sum(dtype=numpy.float64))
    numpy.testing.assert_array_equal(be.to_numpy(out), host)


def test_a_list_of_rows_is_data_and_a_list_of_tuples_of_arrays_is_batches():
    x, y = data(64)
    rows = [[numpy.float64(v) for v in row] for row in x]  # NumPy scalars: still rows
    want, got = model(), model()
    want.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    got.fit(rows, list(y), epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    for a, b in zip(want.get_weights(), got.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    again = model()
    again.fit(batches(x, y), epochs=1, shuffle=False, verbose=0)
    for a, b in zip(want.get_weights(), again.get_weights()):
        numpy.testing.assert_array_equal(a, b)
