"""Captured steps on the CPU keep a CUDA graph's rules: a replay runs what was captured
(the buffers and values bound then), the captured body may not allocate, read the
device or synchronise, and a step whose buffers were rebound since its capture is
caught. So a stale graph shows on NumPy, where the suite runs."""
import threading

import numpy
import pytest

import dnn
from dnn.backends.host_graph import CaptureError
from dnn.data import make_moons
from dnn.layers import Dense, Dropout
from dnn.training.captured_steps import CapturedSteps


def _model(seed=0, **compile_args):
    model = dnn.Sequential([Dense(8, "relu"), Dropout(0.2), Dense(1, "sigmoid")],
                           input_dim=2, seed=seed, dtype="float64")
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"],
                  **compile_args)
    return model


def _second_fits(model, x, y, case):
    """Two fits that differ in what their steps are bound to."""
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, **case["first"])
    if case.get("recompile"):
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    data = case.get("data", lambda x, y: (x, y))(x, y)
    model.fit(*data, epochs=1, batch_size=16, verbose=0, **case["second"])
    return model.get_weights()


CASES = {
    "sample weights": {"first": {}, "second": {"sample_weight": numpy.zeros(128)}},
    "class weights": {"first": {}, "second": {"class_weight": {0: 0.0, 1: 3.0}}},
    "nan guard off then on": {"first": {"terminate_on_nan": False}, "second": {}},
    "nan guard on then off": {"first": {}, "second": {"terminate_on_nan": False}},
    "other batch count": {"first": {}, "second": {},
                          "data": lambda x, y: (x[:80], y[:80])},
    "compiled again": {"first": {}, "second": {}, "recompile": True},
}


@pytest.mark.parametrize("steps_per_execution", [1, 3])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_second_fit_never_replays_the_first_fits_graph(case, steps_per_execution):
    """Defect 2 of issue 18: a single step captured in one fit was replayed in the next
    on that fit's buffers, unweighted, or without its NaN guard. Replayed steps must
    train exactly as eager ones."""
    x, y = make_moons(128, seed=1)
    results = []
    with dnn.use_backend("numpy"):
        for cuda_graph in (False, True):
            model = _model(steps_per_execution=steps_per_execution)
            case_graph = {k: ({**v, "cuda_graph": cuda_graph} if k in ("first", "second")
                              else v) for k, v in CASES[case].items()}
            results.append(_second_fits(model, x, y, case_graph))
    for eager, replayed in zip(*results):
        numpy.testing.assert_array_equal(eager, replayed)


def test_a_second_fit_with_zero_weights_leaves_the_weights_alone():
    """The issue's own example: all-zero sample weights in the second fit move nothing
    (the stale graph moved them by 0.061)."""
    x, y = make_moons(128, seed=1)
    with dnn.use_backend("numpy"):
        model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer=dnn.optimizers.SGD(0.5))
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, cuda_graph=True)
        before = model.get_weights()
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, cuda_graph=True,
                  sample_weight=numpy.zeros(128))
    for a, b in zip(before, model.get_weights()):
        numpy.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ capture rules
@pytest.fixture
def numpy_backend():
    return dnn.backends.get_backend("numpy")


@pytest.mark.parametrize("call,what", [
    (lambda be, a: be.empty((4,)), "empty, which allocates"),
    (lambda be, a: be.zeros((4,)), "zeros, which allocates"),
    (lambda be, a: be.asarray(numpy.ones(4)), "asarray, which allocates"),
    (lambda be, a: be.to_float(a[0]), "to_float, which reads the device on the host"),
    (lambda be, a: be.to_numpy(a), "to_numpy, which reads the device on the host"),
    (lambda be, a: be.synchronize(), "synchronize, which synchronises"),
], ids=["empty", "zeros", "asarray", "to_float", "to_numpy", "synchronize"])
def test_what_a_cuda_graph_forbids_fails_a_capture(numpy_backend, call, what):
    a = numpy.zeros(4)

    def body():
        numpy_backend.fill(a, 1.0)
        call(numpy_backend, a)

    with pytest.raises(CaptureError, match=f"a captured step calls {what}"):
        numpy_backend.capture(body)
    # Nothing is left intercepted afterwards.
    assert numpy_backend.to_float(numpy_backend.sum(a)) == 4.0


def test_a_replay_runs_what_was_captured_not_the_python_body(numpy_backend):
    """As a graph does: the values and buffers bound at capture, whatever the Python
    state says now."""
    a, b = numpy.zeros(3), numpy.zeros(3)
    state = {"target": a, "value": 2.0}

    def body():
        numpy_backend.fill(state["target"], state["value"])

    graph = numpy_backend.capture(body)
    numpy.testing.assert_array_equal(a, [2.0, 2.0, 2.0])  # the capture ran the work once
    graph.replay()  # that run was the first launch: nothing more happens
    a[:] = 0
    state.update(target=b, value=5.0)
    graph.replay()
    numpy.testing.assert_array_equal(a, [2.0, 2.0, 2.0])
    numpy.testing.assert_array_equal(b, [0.0, 0.0, 0.0])


def test_results_of_operations_are_passed_on_at_each_replay(numpy_backend):
    """A NumPy loss is a new array at every call: a replay passes the new one on, as a
    graph's intermediate lives at a fixed address."""
    pred, target, total = numpy.zeros((4, 1)), numpy.ones((4, 1)), numpy.zeros(1)

    def body():
        loss, _ = numpy_backend.mean_squared_error(pred, target)
        numpy_backend.accumulate(total, loss, 1.0)

    graph = numpy_backend.capture(body)
    graph.replay()
    pred[:] = 3.0  # (3 - 1)^2 = 4
    graph.replay()
    assert total[0] == 1.0 + 4.0


def test_a_buffer_rebound_after_capture_is_caught(numpy_backend):
    first, second = numpy.zeros(2), numpy.zeros(2)
    graph = numpy_backend.capture(lambda: numpy_backend.fill(first, 1.0))
    graph.verify(lambda: numpy_backend.fill(first, 1.0))  # the same step: fine
    with pytest.raises(CaptureError, match=r"operation 0 was fill\(<array \(2,\) float64 "
                                           r".*the step now calls fill.*rebound after "
                                           r"capture"):
        graph.verify(lambda: numpy_backend.fill(second, 1.0))
    with pytest.raises(CaptureError, match=r"was fill\(.*, 1.0\).*fill\(.*, 2.0\)"):
        graph.verify(lambda: numpy_backend.fill(first, 2.0))
    with pytest.raises(CaptureError, match="stops before operation 1"):
        numpy_backend.capture(lambda: (numpy_backend.fill(first, 1.0),
                                       numpy_backend.fill(second, 1.0))).verify(
            lambda: numpy_backend.fill(first, 1.0))


def test_captured_steps_with_a_binding_that_misses_a_change_fail_loudly():
    """The safety net behind CapturedSteps' bindings: were a binding ever to miss what
    changed, the host's replay check names it instead of training on stale buffers."""
    with dnn.use_backend("numpy"):
        model = _model()
    be = model.backend
    captured = CapturedSteps(model)
    a, b = numpy.zeros(2), numpy.zeros(2)
    captured.run(2, lambda: be.fill(a, 1.0), binding=())
    captured.run(2, lambda: be.fill(a, 1.0), binding=())  # captured
    captured.run(2, lambda: be.fill(a, 1.0), binding=())  # replayed
    with pytest.raises(CaptureError, match="rebound after capture"):
        captured.run(2, lambda: be.fill(b, 1.0), binding=())
    captured.run(2, lambda: be.fill(b, 1.0), binding=(b,))  # named: captured again


def test_another_threads_calls_during_a_capture_are_its_own(numpy_backend):
    """A data loader's thread may allocate while the training thread captures."""
    done = threading.Event()
    made = []

    def loader():
        made.append(numpy_backend.asarray(numpy.ones(3)))
        done.set()

    def body():
        threading.Thread(target=loader).start()
        done.wait(10)

    numpy_backend.capture(body)
    assert made and made[0].sum() == 3.0


def test_keyword_buffers_are_checked_too(numpy_backend):
    x, out, other = numpy.ones((2, 2)), numpy.zeros((2, 2)), numpy.zeros((2, 2))
    graph = numpy_backend.capture(lambda: numpy_backend.multiply(x, 2.0, out=out))
    graph.verify(lambda: numpy_backend.multiply(x, 2.0, out=out))
    with pytest.raises(CaptureError, match="rebound after capture"):
        graph.verify(lambda: numpy_backend.multiply(x, 2.0, out=other))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # diverging on purpose
def test_a_guard_switched_on_in_the_next_fit_guards_the_replayed_steps():
    """A step captured without the NaN guard must not be replayed in a fit that asks for
    it: the divergence is caught, replayed or not."""
    x, y = make_moons(128, seed=1)
    with dnn.use_backend("numpy"):
        for cuda_graph in (False, True):
            model = dnn.Sequential([Dense(4, "relu"), Dense(1)], input_dim=2, seed=0)
            model.compile(loss="mse", optimizer=dnn.optimizers.SGD(1e-3))
            model.fit(x, y, epochs=1, batch_size=16, verbose=0, cuda_graph=cuda_graph,
                      terminate_on_nan=False)
            model.optimizer.learning_rate = 1e30
            with pytest.raises(dnn.NonFiniteLossError):
                model.fit(x, y * 1e30, epochs=1, batch_size=16, verbose=0,
                          cuda_graph=cuda_graph)
