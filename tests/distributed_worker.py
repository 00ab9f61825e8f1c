"""One rank of a data-parallel run, started by tests/test_distributed.py under mpiexec:
``python distributed_worker.py SCENARIO OUTDIR``. Each rank writes what it ended with
to OUTDIR/rank<r>.npz (weights, history) for the test to compare."""
import json
import os
import sys
import time

import numpy

import dnn
from dnn.callbacks import Callback, EarlyStopping, ModelCheckpoint
from dnn.data import make_spirals
from dnn.layers import Dense, Dropout

BACKEND = os.environ.get("DNN_TEST_BACKEND", "numpy")


def model(strategy, seed=3, dtype="float64", lr=1e-3, steps_per_execution=1):
    m = dnn.Sequential([Dense(32, "tanh", kernel_regularizer="l2"), Dropout(0.2),
                        Dense(16, "relu"), Dense(3, "softmax")], input_dim=2, seed=seed,
                       dtype=dtype)
    m.compile(loss="sparse_categorical_crossentropy", optimizer=dnn.optimizers.Adam(lr),
              metrics=["accuracy"], distribute=strategy,
              steps_per_execution=steps_per_execution)
    return m


def data(n=300):
    # 300 rows: batches of 2 x 16 leave a last global batch of 12 rows, 6 per rank.
    # 319: the last global batch has 31 rows, so rank 0 holds a full 16 of them, with
    # another share of the gradient and another mask offset than a full batch's.
    return make_spirals(n, n_classes=3, noise=0.2, seed=0)


def report(strategy, m, **extra):
    numpy.savez(os.path.join(sys.argv[2], f"rank{strategy.rank}.npz"), *m.get_weights(),
                meta=numpy.frombuffer(json.dumps(extra).encode(), numpy.uint8))


def halves(x, y, batch, passes, kind=iter):
    """Batches of ``batch`` rows of (x, y), ``passes`` times over: a generator (``iter``)
    or a list (``list``, a sequence)."""
    return kind((x[i:i + batch], y[i:i + batch]) for _ in range(passes)
                for i in range(0, x.shape[0], batch))


class RaiseOnRank(Callback):
    def __init__(self, rank, epoch):
        self.rank, self.epoch = rank, epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.model.distribute.rank == self.rank and epoch == self.epoch:
            raise ValueError(f"boom on rank {self.rank} at epoch {epoch + 1}")


def main(scenario, out):
    dnn.set_backend(BACKEND)
    strategy = dnn.distributed.DataParallel(os.environ.get("DNN_TEST_COMMUNICATOR", "auto"))
    x, y = data()
    if scenario in ("equivalence", "equivalence-captured", "equivalence-last"):
        # captured: the captured-step code path, 3 steps per replay (on NumPy a replay
        # runs the step again; on a GPU with NCCL it is a CUDA graph). last: 319 rows,
        # one step per replay, so the last batch meets a full batch's captured step.
        captured = scenario != "equivalence"
        if scenario == "equivalence-last":
            x, y = data(319)
        m = model(strategy, steps_per_execution=3 if scenario == "equivalence-captured"
                  else 1)
        history = m.fit(x, y, epochs=2, batch_size=16, verbose=0, cuda_graph=captured)
        report(strategy, m, history=history.history, world=strategy.world_size,
               train_steps=m.train_steps, communicator=m.replica.collectives.name)
    elif scenario == "checkpoint":
        m = model(strategy)
        path = os.path.join(out, "ckpt-{epoch}.npz")
        m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ModelCheckpoint(path)])
        loaded = dnn.load_model(os.path.join(out, "ckpt-2.npz"))
        same = all(numpy.array_equal(a, b) for a, b in zip(m.get_weights(),
                                                           loaded.get_weights()))
        report(strategy, m, loaded_equal=same)
    elif scenario == "resume":
        straight = model(strategy)
        straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
        first = model(strategy)
        first.fit(x, y, epochs=2, batch_size=16, verbose=0)
        path = os.path.join(out, "half.npz")
        first.save(path)
        resumed = dnn.load_model(path, distribute=strategy)
        resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0)
        same = all(numpy.array_equal(a, b) for a, b in zip(straight.get_weights(),
                                                           resumed.get_weights()))
        report(strategy, resumed, resumed_equal=same)
    elif scenario == "early_stopping":
        m = model(strategy, lr=1e-12)  # the loss cannot improve: stop after patience
        history = m.fit(x, y, epochs=20, batch_size=16, verbose=0,
                        callbacks=[EarlyStopping(monitor="loss", patience=2, min_delta=1e-3)])
        report(strategy, m, epochs=len(history.history["loss"]), history=history.history)
    elif scenario == "nan":
        m = dnn.Sequential([Dense(8, "relu"), Dense(1)], input_dim=2, seed=1)
        m.compile(loss="mse", optimizer=dnn.optimizers.SGD(1e3), distribute=strategy)
        try:
            m.fit(x * 100, y * 1e3, epochs=5, batch_size=16, verbose=0)
            message = None
        except dnn.NonFiniteLossError as exc:
            message = str(exc)
        report(strategy, m, message=message, train_steps=m.train_steps)
    elif scenario == "stop":
        class StopOnRank0(Callback):
            def on_train_batch_end(self, batch, logs=None):
                if strategy.rank == 0 and batch == 3:
                    self.model.stop_training = True

        m = model(strategy)
        m.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[StopOnRank0()])
        report(strategy, m, train_steps=m.train_steps)
    elif scenario == "two-models":
        a = model(strategy)
        b = model(strategy, seed=9)  # one strategy, a second model attached after
        a.fit(x, y, epochs=2, batch_size=16, verbose=0)
        b.fit(x, y, epochs=1, batch_size=16, verbose=0)
        report(strategy, a, train_steps=a.train_steps)
    elif scenario == "mismatch":
        m = model(strategy)
        rows = 300 if strategy.rank == 0 else 250  # Horovod's habit: a shard per rank
        m.fit(x[:rows], y[:rows], epochs=1, batch_size=16, verbose=0)
    elif scenario in ("shards-arrays", "shards-generator", "shards-sequence"):  # shard=True
        mine = slice(0, 150) if strategy.rank == 0 else slice(150, 300)
        m = model(strategy)
        source = {"shards-arrays": lambda: ((x[mine], y[mine]), {"batch_size": 16}),
                  "shards-generator": lambda: ((halves(x[mine], y[mine], 16, 2),),
                                               {"steps_per_epoch": 10}),
                  "shards-sequence": lambda: ((halves(x[mine], y[mine], 16, 1, list),),
                                              {})}[scenario]
        args, fit = source()
        history = m.fit(*args, epochs=2, verbose=0, shuffle=False, shard=True,
                        validation_data=(x[mine][:40], y[mine][:40]), **fit)
        report(strategy, m, history=history.history, train_steps=m.train_steps,
               evaluated=m.evaluate(x[mine], y[mine]))
    elif scenario == "same-generator":  # every rank the same batches of 32, shard=False
        m = model(strategy)
        history = m.fit(halves(x, y, 32, 2), epochs=2, steps_per_epoch=10, verbose=0)
        report(strategy, m, history=history.history, train_steps=m.train_steps)
    elif scenario == "shards-end-early":
        m = model(strategy)
        rows = 150 if strategy.rank == 0 else 100  # rank 1 runs out after 7 batches
        m.fit(halves(x[:rows], y[:rows], 16, 1), epochs=1, verbose=0, shard=True)
    elif scenario == "shards-unequal-steps":
        m = model(strategy)
        rows = 300 if strategy.rank == 0 else 250
        m.fit(x[:rows], y[:rows], epochs=1, batch_size=16, verbose=0, shard=True)
    elif scenario == "same-size-different-data":  # Horovod's habit, without shard=True
        m = model(strategy)
        mine = slice(0, 150) if strategy.rank == 0 else slice(150, 300)
        m.fit(x[mine], y[mine], epochs=1, batch_size=16, verbose=0)
    elif scenario == "different-batches":
        m = model(strategy)
        mine = slice(0, 150) if strategy.rank == 0 else slice(150, 300)
        m.fit(halves(x[mine], y[mine], 32, 1), epochs=1, verbose=0)
    elif scenario == "save-fail":
        m = model(strategy)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
        try:
            m.save(os.path.join(out, "missing", "m.npz"))
            message = None
        except (OSError, ValueError) as exc:
            message = f"{type(exc).__name__}: {exc}"
        report(strategy, m, message=message)
    elif scenario == "threads":
        from threadpoolctl import threadpool_info

        m = model(strategy)
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        report(strategy, m, blas=blas, backend=m.backend._threads(),
               cores=os.cpu_count())
    elif scenario == "timeout":
        strategy.timeout = 2.0
        m = model(strategy)
        if strategy.rank == 1:
            time.sleep(60)  # a rank that never joins: rank 0 must not wait forever
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    elif scenario == "raise":
        m = model(strategy)
        m.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[RaiseOnRank(1, 1)])
        report(strategy, m)  # not reached: rank 1 raises, and every rank is aborted
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
