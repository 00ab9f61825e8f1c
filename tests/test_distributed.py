"""Data-parallel training under a real ``mpiexec -n 2`` (mpich from the test extra):
two ranks equal one rank with twice the batch, replicas stay bitwise identical, rank 0
saves, a resume is exact, every rank stops together, and a rank that raises ends the
run instead of hanging it. Without mpiexec, a strategy is a world of one."""
import json
import os
import subprocess
import sys

import numpy
import pytest
from support import NEUTRAL_DIR, ROOT

import dnn
from dnn.distributed import DataParallel, find_mpiexec, rank_order, split_rows

WORKER = ROOT / "tests" / "distributed_worker.py"
sys.path.insert(0, str(WORKER.parent))
import distributed_worker as worker  # noqa: E402


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return find_mpiexec()


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec or mpi4py is missing "
                                                       "(pip install '.[test]' brings both)")


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS", "BLIS_NUM_THREADS")


def run_ranks(n, *args, timeout=120, env=None, threads_set=True):
    environ = {k: v for k, v in os.environ.items()
               if k != "PYTHONPATH" and k not in THREAD_VARS}
    if threads_set:  # one thread per rank, as a real job would be laid out
        environ.update({name: "1" for name in THREAD_VARS})
    environ.update(DNN_BACKEND="numpy", **(env or {}))
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *map(str, args)],
                          cwd=NEUTRAL_DIR, env=environ, capture_output=True, text=True,
                          timeout=timeout)


def ranks(scenario, tmp_path, n=2, env=None, threads_set=True):
    out = run_ranks(n, WORKER, scenario, tmp_path, env=env, threads_set=threads_set)
    assert out.returncode == 0, out.stderr[-3000:]
    results = []
    for r in range(n):
        with numpy.load(tmp_path / f"rank{r}.npz") as data:
            weights = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
            results.append((weights, json.loads(data["meta"].tobytes())))
    return results


def one_rank(rows=300):
    """The single-process run N ranks must equal: batch 32 (2 ranks x 16), 2 epochs.
    Returns the model and its History."""
    with dnn.use_backend("numpy"):
        single = worker.model(None)
        x, y = worker.data(rows)
        history = single.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return single, history


def assert_matches_one_rank(weights, rows=300):
    single, _ = one_rank(rows)
    for a, b in zip(weights, single.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def assert_bitwise_equal_replicas(results):
    first = results[0][0]
    for weights, _ in results[1:]:
        for a, b in zip(first, weights):
            numpy.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ under mpiexec
@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("scenario", ["equivalence", "equivalence-captured",
                                      "equivalence-last"])
def test_two_ranks_of_batch_b_train_as_one_rank_of_batch_2b(tmp_path, scenario):
    """float64, Adam, two epochs of 300 rows (the last global batch 12 rows, 6 per
    rank), or 319 through captured steps (rank 0 holds a full 16 rows of the last
    batch), with dropout and an L2 penalty: within 1e-6 of one process, and the two
    replicas bitwise equal."""
    results = ranks(scenario, tmp_path)
    assert_bitwise_equal_replicas(results)
    single, history = one_rank(319 if scenario == "equivalence-last" else 300)
    weights, meta = results[0]
    assert meta["world"] == 2 and meta["train_steps"] == single.train_steps == 20
    for a, b in zip(weights, single.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    numpy.testing.assert_allclose(meta["history"]["loss"], history.history["loss"],
                                  rtol=1e-9)
    assert meta["history"]["accuracy"] == history.history["accuracy"]


@needs_mpi
@pytest.mark.mpi
def test_rank_0_writes_the_checkpoint_and_every_rank_loads_it(tmp_path):
    results = ranks("checkpoint", tmp_path)
    assert_bitwise_equal_replicas(results)
    assert all(meta["loaded_equal"] for _, meta in results)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-1.npz", "ckpt-2.npz", "rank0.npz", "rank1.npz"]  # no temp files left


@needs_mpi
@pytest.mark.mpi
def test_a_data_parallel_resume_is_exact(tmp_path):
    results = ranks("resume", tmp_path)
    assert all(meta["resumed_equal"] for _, meta in results)
    assert_bitwise_equal_replicas(results)


@needs_mpi
@pytest.mark.mpi
def test_early_stopping_and_the_nan_guard_stop_every_rank_at_the_same_point(tmp_path):
    (tmp_path / "a").mkdir()
    stopped = ranks("early_stopping", tmp_path / "a")
    assert stopped[0][1]["epochs"] == stopped[1][1]["epochs"] == 3  # Keras: 2 epochs, no gain
    assert stopped[0][1]["history"] == stopped[1][1]["history"]
    (tmp_path / "b").mkdir()
    diverged = ranks("nan", tmp_path / "b")
    messages = [meta["message"] for _, meta in diverged]
    assert messages[0] is not None and messages[0] == messages[1]
    assert "non-finite loss" in messages[0]
    assert diverged[0][1]["train_steps"] == diverged[1][1]["train_steps"]
    assert_bitwise_equal_replicas(diverged)  # both kept the same last finite weights


@needs_mpi
@pytest.mark.mpi
def test_ranks_on_one_machine_split_its_cores_unless_told_otherwise(tmp_path):
    pytest.importorskip("threadpoolctl")
    results = ranks("threads", tmp_path, threads_set=False)
    share = max(1, results[0][1]["cores"] // 2)
    for _, meta in results:
        assert meta["blas"] and all(t == share for t in meta["blas"]), meta
        assert meta["backend"] <= share
    (tmp_path / "set").mkdir()
    chosen = ranks("threads", tmp_path / "set", threads_set=True)  # OMP_NUM_THREADS=1
    assert all(t == 1 for t in chosen[0][1]["blas"])


@needs_mpi
@pytest.mark.mpi
def test_a_stop_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    results = ranks("stop", tmp_path)
    assert results[0][1]["train_steps"] == results[1][1]["train_steps"] == 4
    assert_bitwise_equal_replicas(results)


@needs_mpi
@pytest.mark.mpi
def test_one_strategy_serves_two_models(tmp_path):
    results = ranks("two-models", tmp_path)
    assert_bitwise_equal_replicas(results)
    assert_matches_one_rank(results[0][0])


@needs_mpi
@pytest.mark.mpi
def test_ranks_with_different_data_are_told_so_instead_of_hanging(tmp_path):
    out = run_ranks(2, WORKER, "mismatch", tmp_path, timeout=60)
    assert out.returncode != 0
    assert "fit: rows of x: expected the same value on every rank (every rank passes the " \
           "same data and arguments, unless fit(shard=True) says each rank passes its own " \
           "part); got rank 0: 300, rank 1: 250" in out.stderr


def sharded_reference():
    """One process on the global batches that two ranks with shards make: rank 0's
    batch of 16 rows from the first 150, then rank 1's from the last 150 (the last
    global batch 6 + 6 rows)."""
    x, y = worker.data()
    halves = [(x[:150], y[:150]), (x[150:], y[150:])]
    glued = [tuple(numpy.concatenate([part[k][i:i + 16] for part in halves]) for k in (0, 1))
             for i in range(0, 150, 16)]
    with dnn.use_backend("numpy"):
        single = worker.model(None)
        history = single.fit(glued, epochs=2, verbose=0, shuffle=False)
    return single, history


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("scenario", ["shards-arrays", "shards-generator", "shards-sequence"])
def test_shards_train_as_one_process_on_every_ranks_batch_together(tmp_path, scenario):
    """shard=True: each rank passes its own half (arrays, a generator, a sequence); a
    global batch is every rank's batch of the step, in rank order, as one process
    would train on them glued together. Validation and evaluate add up the ranks'."""
    results = ranks(scenario, tmp_path)
    assert_bitwise_equal_replicas(results)
    single, history = sharded_reference()
    weights, meta = results[0]
    assert meta["train_steps"] == single.train_steps == 20
    for a, b in zip(weights, single.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    numpy.testing.assert_allclose(meta["history"]["loss"], history.history["loss"],
                                  rtol=1e-9)
    assert results[0][1]["evaluated"] == results[1][1]["evaluated"]
    assert results[0][1]["history"]["val_loss"] == results[1][1]["history"]["val_loss"]


@needs_mpi
@pytest.mark.mpi
def test_every_rank_reading_the_same_generator_takes_its_share_of_each_batch(tmp_path):
    results = ranks("same-generator", tmp_path)
    assert_bitwise_equal_replicas(results)
    x, y = worker.data()
    with dnn.use_backend("numpy"):  # one process on the same generator's batches of 32
        single = worker.model(None)
        history = single.fit(worker.halves(x, y, 32, 2), epochs=2, steps_per_epoch=10,
                             verbose=0)
    weights, meta = results[0]
    for a, b in zip(weights, single.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    numpy.testing.assert_allclose(meta["history"]["loss"], history.history["loss"],
                                  rtol=1e-9)


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("scenario,message", [
    ("shards-end-early", "fit: the data of rank 1 ended after 7 batches, while other ranks "
                         "had more: every rank must give the same number of batches per "
                         "epoch"),
    ("shards-unequal-steps", "fit: steps per epoch: expected the same value on every rank "
                             "(every rank passes the same data and arguments); got rank 0: "
                             "19, rank 1: 16"),
    ("same-size-different-data", "fit: fingerprint of x: expected the same value on every "
                                 "rank (every rank passes the same data and arguments, "
                                 "unless fit(shard=True) says each rank passes its own part)"),
    ("different-batches", "fit: batch 0: expected the same batch on every rank (shard=False: "
                          "every rank passes the same data and takes its share of each "
                          "batch); got rank 0: 32 rows, rank 1: 32 rows with different "
                          "values. Pass shard=True"),
])
def test_ranks_whose_data_disagree_are_told_so_on_every_rank_instead_of_hanging(
        tmp_path, scenario, message):
    out = run_ranks(2, WORKER, scenario, tmp_path, timeout=60)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]


@needs_mpi
@pytest.mark.mpi
def test_a_save_rank_0_cannot_write_fails_on_every_rank(tmp_path):
    results = ranks("save-fail", tmp_path)
    assert results[0][1]["message"].startswith("OutputPathError: save: path: the directory")
    assert results[1][1]["message"].startswith("OSError: save: rank 0 could not write")


@needs_mpi
@pytest.mark.mpi
def test_a_rank_that_raises_ends_every_rank_with_its_message(tmp_path):
    out = run_ranks(2, WORKER, "raise", tmp_path, timeout=60)
    assert out.returncode != 0
    assert "ValueError: boom on rank 1 at epoch 2" in out.stderr
    assert "rank 1 of 2 raised ValueError; aborting every rank" in out.stderr
    assert not list(tmp_path.glob("rank*.npz"))


@needs_mpi
@pytest.mark.mpi
def test_a_rank_that_never_joins_times_out_instead_of_hanging(tmp_path):
    out = run_ranks(2, WORKER, "timeout", tmp_path, timeout=60)
    assert out.returncode != 0
    assert "TimeoutError: data-parallel: rank 0 waited 2 s for every rank's values that " \
           "not every rank of 2 joined" in out.stderr  # fit's first agreement


@needs_mpi
@pytest.mark.mpi
def test_mpiexec_dnn_train_reaches_the_accuracy_of_dnn_train(tmp_path):
    """--batch-size is the global batch: 2 ranks of 16 train as one process of 32."""
    args = ["-m", "dnn", "train", "moons", "--epochs", "6", "--verbose", "0"]
    alone = subprocess.run([sys.executable, *args], cwd=NEUTRAL_DIR, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "DNN_BACKEND": "numpy"})
    together = run_ranks(2, *args)
    assert alone.returncode == 0 and together.returncode == 0, together.stderr

    def accuracy(text):
        line = next(t for t in text.splitlines() if t.startswith("test accuracy"))
        return float(line.split()[2])

    assert abs(accuracy(alone.stdout) - accuracy(together.stdout)) <= 0.01
    odd = run_ranks(2, "-m", "dnn", "train", "moons", "--epochs", "1", "--batch-size", "33")
    assert odd.returncode == 2
    assert "--batch-size: expected a multiple of the 2 ranks" in odd.stderr


@needs_mpi
@pytest.mark.mpi
def test_mpiexec_dnn_train_trains_data_parallel_and_prints_once(tmp_path):
    model = tmp_path / "m.npz"
    out = run_ranks(2, "-m", "dnn", "train", "moons", "--epochs", "4", "--verbose", "2",
                    "--save", model)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("data-parallel: 2 ranks over MPI, batch 32 (16 per rank)") == 1
    assert out.stdout.count("Epoch 1/4") == 1 and out.stdout.count("test accuracy") == 1
    assert out.stdout.count(f"saved model to {model}") == 1
    with dnn.use_backend("numpy"):
        assert dnn.load_model(model).epochs_done == 4


# ------------------------------------------------------------------ on a GPU
@needs_mpi
@pytest.mark.mpi
@pytest.mark.gpu
def test_two_ranks_sharing_one_gpu_go_through_mpi_and_match_one_rank(tmp_path):
    if dnn.backends.backend_status()["cupy"] is not None:
        pytest.skip(str(dnn.backends.backend_status()["cupy"]))
    results = ranks("equivalence", tmp_path, env={"DNN_TEST_BACKEND": "cupy"})
    assert results[0][1]["communicator"] == "mpi"  # "auto": the ranks share the GPU
    assert_bitwise_equal_replicas(results)
    assert_matches_one_rank(results[0][0])


@needs_mpi
@pytest.mark.mpi
@pytest.mark.gpu
def test_nccl_with_one_rank_trains_as_without_a_strategy(tmp_path):
    if dnn.backends.backend_status()["cupy"] is not None:
        pytest.skip(str(dnn.backends.backend_status()["cupy"]))
    results = ranks("equivalence", tmp_path, n=1, env={"DNN_TEST_BACKEND": "cupy",
                                                       "DNN_TEST_COMMUNICATOR": "nccl"})
    assert results[0][1]["communicator"] == "nccl" and results[0][1]["world"] == 1
    with dnn.use_backend("cupy"):
        plain = worker.model(None)
        x, y = worker.data()
        plain.fit(x, y, epochs=2, batch_size=16, verbose=0)
        want = plain.get_weights()
    for a, b in zip(results[0][0], want):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@needs_mpi
@pytest.mark.mpi
@pytest.mark.gpu
def test_nccl_and_mpi_allreduce_agree_on_the_same_data():
    if dnn.backends.backend_status()["cupy"] is not None:
        pytest.skip(str(dnn.backends.backend_status()["cupy"]))
    from mpi4py import MPI

    from dnn.backends.collectives import MpiCollectives, NcclCollectives

    be = dnn.backends.get_backend("cupy")
    values = numpy.random.default_rng(0).normal(size=1_000_003)
    results = {}
    for name, make in (("mpi", lambda: MpiCollectives(MPI.COMM_WORLD, be)),
                       ("nccl", lambda: NcclCollectives(MPI.COMM_WORLD, be))):
        collectives = make()
        for dtype in ("float32", "float64"):
            buf = be.asarray(values, dtype=dtype)
            collectives.allreduce(buf[1:])  # an unaligned view, as a gradient bucket is
            collectives.broadcast(buf)
            be.synchronize()
            results[name, dtype] = be.to_numpy(buf)
    for dtype in ("float32", "float64"):
        numpy.testing.assert_array_equal(results["mpi", dtype], results["nccl", dtype])
        numpy.testing.assert_array_equal(results["mpi", dtype], values.astype(dtype))


# ------------------------------------------------------------------ a world of one
def test_without_mpiexec_a_strategy_is_a_world_of_one_that_changes_nothing(use):
    strategy = DataParallel()
    assert (strategy.rank, strategy.world_size) == (0, 1)
    x, y = worker.data()
    plain = worker.model(None)
    plain.fit(x, y, epochs=2, batch_size=16, verbose=0)
    parallel = worker.model(strategy)
    parallel.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(plain.get_weights(), parallel.get_weights()):
        numpy.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("guard", [True, False], ids=["nan-guard", "no-guard"])
def test_a_named_communicator_in_a_world_of_one_takes_the_parallel_path_unchanged(use, guard):
    """"mpi" named in a world of one runs the data-parallel step (buckets, scaled
    gradients, agreed stops, summed totals) with sums that are the values themselves:
    the result must be what training without a strategy gives, bit for bit."""
    pytest.importorskip("mpi4py")
    if use.name != "numpy":
        pytest.skip("MPI staging from a GPU is covered by the gpu+mpi tests")
    strategy = DataParallel("mpi", bucket_mb=1e-6)  # a bucket per layer
    x, y = worker.data()
    plain = worker.model(None)
    plain.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_split=0.1,
              terminate_on_nan=guard)
    parallel = worker.model(strategy)
    assert parallel.replica.lockstep and len(parallel.replica.reducer.buckets) == 3
    parallel.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_split=0.1,
                 terminate_on_nan=guard)
    for a, b in zip(plain.get_weights(), parallel.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    assert parallel.evaluate(x, y) == plain.evaluate(x, y)


def test_rows_split_as_evenly_as_they_go():
    assert [split_rows(12, 2, r) for r in range(2)] == [(0, 6), (6, 12)]
    assert [split_rows(7, 3, r) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [split_rows(1, 3, r) for r in range(3)] == [(0, 1), (1, 1), (1, 1)]


def test_a_rank_takes_its_share_of_each_global_batch():
    rows, steps, last = rank_order(numpy.arange(70), 16, world=2, rank=1)
    assert steps == 3 and last == (3, 6, 6)
    assert rows.tolist() == list(range(16, 32)) + list(range(48, 64)) + [67, 68, 69]


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(communicator="gloo"), r"communicator: expected 'auto', 'mpi' or 'nccl'; "
                                r"got 'gloo'"),
    (dict(bucket_mb=0), r"bucket_mb: expected a finite number > 0; got 0"),
    (dict(timeout=-1), r"timeout: expected a finite number > 0; got -1"),
])
def test_bad_strategy_arguments_are_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        DataParallel(**kwargs)


def test_compile_refuses_what_is_not_a_strategy(use):
    model = dnn.Sequential([dnn.layers.Dense(1)], input_dim=2)
    with pytest.raises(TypeError, match="distribute: expected a dnn.distributed.DataParallel"):
        model.compile(loss="mse", distribute="mpi")


@needs_mpi
@pytest.mark.mpi
def test_the_distributed_bench_worker_reports_rank_0s_figures():
    out = run_ranks(2, "-m", "dnn.bench.distributed", "--model", "tiny", "--batch", "8",
                    "--steps", "3", "--repeats", "1")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1  # rank 0 alone
    result = json.loads(lines[0][len("RESULT "):])
    assert result["world"] == 2 and result["communicator"] == "mpi"
    assert result["samples_per_s"] > 0 and result["allreduce_s"] > 0


def test_the_scaling_model_is_a_ring_allreduce_against_the_step():
    from dnn.bench.distributed import scaling_model

    rows = scaling_model(0.02, 100e6, ranks=(8,), links_gbit=(100,))
    comm = 2 * 7 / 8 * 100e6 / 12.5e9  # 14 ms
    assert rows[0]["allreduce_s"] == pytest.approx(comm)
    assert rows[0]["efficiency_no_overlap"] == pytest.approx(0.02 / (0.02 + comm))
    assert rows[0]["efficiency_overlap"] == 1.0
