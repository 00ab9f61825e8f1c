"""Where the tolerance of the float64 GPU parity test (tests/parity.py) comes from: on
the CPU, summing every reduction in another order, or moving the inputs by one ulp,
changes the 48-step run by less than ``MEASURED_BOUND``; the GPU test allows 100 times
that for the GPU's own orders and its own exp/log/tanh."""
import numpy
import pytest
from parity import MEASURED_BOUND, TASKS, WEIGHT_FLOOR, assert_parity, task_data, train

from dnn.backends import NumpyBackend


class _OtherOrder(NumpyBackend):
    """Every GEMM's inner dimension summed in a permuted order, every column sum from
    the last row up: the same arithmetic, rounded differently."""

    def gemm(self, a, b, out=None, trans_a=False, trans_b=False):
        a, b = (a.T if trans_a else a), (b.T if trans_b else b)
        order = numpy.random.default_rng(a.shape[1]).permutation(a.shape[1])
        return super().gemm(numpy.ascontiguousarray(a[:, order]),
                            numpy.ascontiguousarray(b[order]), out=out)

    def column_sum(self, x, out=None):
        return super().column_sum(numpy.ascontiguousarray(x[::-1]), out=out)


@pytest.mark.parametrize("task", TASKS)
def test_rounding_differences_stay_under_the_measured_bound(task):
    tight = dict(rtol=MEASURED_BOUND, atol=MEASURED_BOUND * 1e-2)
    weights = dict(rtol=MEASURED_BOUND, atol=WEIGHT_FLOOR)
    reference = train(task, NumpyBackend(accelerate=False))
    assert_parity(train(task, _OtherOrder(accelerate=False)), reference, tight, weights)
    x = task_data(task)[0]
    nudged = x * (1 + numpy.finfo(numpy.float64).eps * numpy.random.default_rng(1).choice(
        [-1, 1], x.shape))
    assert_parity(train(task, NumpyBackend(accelerate=False), nudged), reference, tight,
                  weights)
