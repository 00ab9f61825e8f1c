"""The host build's thread blocks (kernels/host_shim.h) catch what they are there to
catch: a removed barrier, threads that leave a block's barriers, a launch wider than
the build; and the portable (ucontext) context switch computes what the fast one does.
The kernels' own tests, at 32, 256 and 1024 threads, are in test_kernels.py."""
import numpy
import pytest

from dnn.kernels import catalogue, host
from dnn.kernels.host import HostLaunchError, HostRuntime, ThreadOrderError
from dnn.kernels.launch import BLOCK, FusedKernels

pytestmark = pytest.mark.skipif(host.compiler() is None, reason="no C++ compiler")

BARRIER_AFTER_STORE = "    buf[threadIdx.x] = v;\n    __syncthreads();\n"


def planted(old, new):
    source = catalogue.read_source()
    assert source.count(old) == 1, f"the planted change no longer applies: {old!r}"
    return source.replace(old, new)


def _sum(k, n, dtype="float64"):
    x = numpy.random.default_rng(n).normal(size=n).astype(dtype)
    out = k.sum(x, numpy.full(catalogue.REDUCE_BLOCKS, numpy.nan, dtype), numpy.empty(1, dtype))
    return out[0], x


def test_a_removed_barrier_makes_the_thread_orders_disagree():
    """dnn_group_reduce without the barrier after its shared-memory store: threads read
    their neighbours' slots before those are written, which depends on who ran first."""
    source = planted(BARRIER_AFTER_STORE, "    buf[threadIdx.x] = v;\n")
    k = FusedKernels(HostRuntime(source=source, threads=256))
    with pytest.raises(ThreadOrderError, match=r"dnn_block_sums_f64 at 4 blocks of 256 "
                                               r"threads: partials differs between the "
                                               r"forward and the reverse order"):
        _sum(k, 1000)


def test_a_removed_barrier_gives_a_wrong_sum_in_one_order():
    """The same race with a single order: the result is wrong, not merely unstable."""
    source = planted(BARRIER_AFTER_STORE, "    buf[threadIdx.x] = v;\n")
    total, x = _sum(FusedKernels(HostRuntime(source=source, threads=256,
                                             orders=("forward",))), 1000)
    assert not numpy.isclose(total, x.sum())


def test_threads_that_return_before_a_barrier_are_an_error():
    source = planted("    T total = T(0);\n    DNN_LOOP(i, n) total += x[i];\n",
                     "    if (threadIdx.x == 5) return;\n"
                     "    T total = T(0);\n    DNN_LOOP(i, n) total += x[i];\n")
    k = FusedKernels(HostRuntime(source=source, threads=32))
    with pytest.raises(HostLaunchError, match=r"dnn_block_sums_f64: block 0: thread 0 waits "
                                              r"at __syncthreads\(\) #1 while thread 5 "
                                              r"returned after 0"):
        _sum(k, 100)


def test_a_launch_wider_than_the_build_is_refused():
    runtime = HostRuntime(threads=32)
    entry = runtime.entry(catalogue.kernels()["reduce_partials"], "float64", None)
    partials = numpy.zeros(catalogue.REDUCE_BLOCKS)
    with pytest.raises(HostLaunchError, match="1 blocks of 64 threads; this build takes 1 to "
                                              "32 threads"):
        runtime.launch(entry, (1, 64), (partials, numpy.zeros(1), 0))


@pytest.mark.parametrize("threads", [32, 1024])
def test_a_block_reduction_uses_every_thread(threads):
    """One block reduces REDUCE_BLOCKS partials: each thread adds its strided share, and
    the shared-memory tree adds the threads' sums."""
    k = FusedKernels(HostRuntime(threads=threads))
    partials = numpy.arange(catalogue.REDUCE_BLOCKS, dtype=numpy.float64)
    out = numpy.zeros(1)
    k._launch("reduce_partials", "float64", BLOCK, catalogue.REDUCE_BLOCKS, (partials, out, 0))
    assert out[0] == partials.sum()


def test_the_ucontext_switch_computes_what_the_fast_one_does():
    fast = FusedKernels(HostRuntime(threads=32))
    portable = FusedKernels(HostRuntime(threads=32, defines=("DNN_HOST_UCONTEXT",)))
    x = numpy.random.default_rng(0).normal(size=(37, 70))
    for k in (fast, portable):
        assert _sum(k, 5000)[0] == _sum(fast, 5000)[0]
    softmax = [k.bias_activation(x, numpy.zeros(70), "softmax", numpy.empty_like(x))
               for k in (fast, portable)]
    numpy.testing.assert_array_equal(softmax[0], softmax[1])


def test_orders_are_checked():
    with pytest.raises(ValueError, match="orders: expected names from forward, reverse, "
                                         "shuffle; got"):
        HostRuntime(orders=("sideways",))
