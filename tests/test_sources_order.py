"""The pieces under the streamed sources: a memmap's shuffled order is exactly the one
``block_order`` documents (and a shuffled memmap trains on exactly it), the loaders'
prefetcher is bounded, ordered, and hands errors over, a DataLoader-shaped iterable of
DLPack tensors needs no torch, and a rank's share of a global batch comes from one
function of the epoch plan."""
import threading
import time

import numpy
import pytest
from test_data_adapter import CpuTensor
from test_sources import BATCH, assert_same_training, batches, data, model, reference

from dnn.training import epoch_plan
from dnn.training.prefetch import Prefetcher


def documented_order(rows, row_bytes, seed, epoch, block_bytes, window):
    """block_order written again from its docstring."""
    block = max(1, block_bytes // row_bytes)
    rng = numpy.random.default_rng([seed, epoch])
    blocks = list(rng.permutation(-(-rows // block)))
    order = []
    for first in range(0, len(blocks), window):
        rows_of = [r for b in blocks[first:first + window]
                   for r in range(b * block, min(rows, (b + 1) * block))]
        order += [rows_of[i] for i in rng.permutation(len(rows_of))]
    return numpy.array(order)


@pytest.mark.parametrize("rows,row_bytes", [(1000, 24), (997, 100), (10, 8)])
def test_a_memmaps_shuffle_is_the_documented_block_order(monkeypatch, rows, row_bytes):
    monkeypatch.setattr(epoch_plan, "BLOCK_BYTES", 240)
    monkeypatch.setattr(epoch_plan, "WINDOW_BLOCKS", 4)
    got = epoch_plan.block_order(rows, row_bytes, 5, 2, True)
    numpy.testing.assert_array_equal(got, documented_order(rows, row_bytes, 5, 2, 240, 4))
    assert sorted(got.tolist()) == list(range(rows))
    assert not numpy.array_equal(got, epoch_plan.block_order(rows, row_bytes, 5, 3, True))
    numpy.testing.assert_array_equal(epoch_plan.block_order(rows, row_bytes, 5, 2, False),
                                     numpy.arange(rows))


def test_a_shuffled_memmap_trains_on_its_block_order(tmp_path, monkeypatch):
    monkeypatch.setattr(epoch_plan, "BLOCK_BYTES", 24 * 16)  # 16 rows of 3 float64 a block
    monkeypatch.setattr(epoch_plan, "WINDOW_BLOCKS", 3)
    x, y = data()
    numpy.save(tmp_path / "x.npy", x)
    got = model()
    got.fit(numpy.load(tmp_path / "x.npy", mmap_mode="r"), y, epochs=2, batch_size=BATCH,
            verbose=0)
    orders = [epoch_plan.block_order(len(x), 24, 7, e, True) for e in range(2)]
    assert not numpy.array_equal(orders[0], epoch_plan.epoch_order(len(x), 7, 0, True))
    want = model()
    want.fit(iter([b for o in orders for b in batches(x[o], y[o])]), epochs=2,
             steps_per_epoch=10, verbose=0)
    for a, b in zip(want.get_weights(), got.get_weights()):
        numpy.testing.assert_array_equal(a, b)


class LoaderShape:
    """What a torch DataLoader is to dnn: an iterable with a length, making a new pass
    at every iter(), of lists of tensors that export DLPack."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // BATCH)

    def __iter__(self):
        return iter([[CpuTensor(a), CpuTensor(b)] for a, b in batches(self.x, self.y)])


def test_a_dataloader_shaped_iterable_of_dlpack_tensors_trains_as_arrays(use):
    want, want_history = reference(use)
    x, y = data()
    got = model()
    history = got.fit(LoaderShape(x, y), epochs=2, verbose=0)
    assert_same_training(want, got, want_history, history, exact=use.name != "cupy")


def test_the_prefetcher_stays_a_ring_ahead_and_returns_in_task_order():
    started = []
    lock = threading.Lock()

    def produce(task, slot):
        with lock:
            started.append(task)
        time.sleep(0.002 * (task % 3))  # out of order in a pool of three
        return task * 10

    with Prefetcher(produce, range(20), ring=4, workers=3) as loader:
        got = []
        for i in range(20):
            value, slot = loader.get()
            assert slot == i % 4
            time.sleep(0.005)
            with lock:  # never more than the ring's tasks beyond those released
                assert max(started) < i + 4
            got.append(value)
            loader.release()
        assert loader.get() is None
    assert got == [t * 10 for t in range(20)]


def test_the_prefetcher_raises_the_loaders_error_and_stops_its_threads():
    def produce(task, slot):
        if task == 2:
            raise OSError("no such file")
        return task

    loader = Prefetcher(produce, range(10), ring=2, workers=2, describe=lambda t: f"batch {t}")
    assert loader.get()[0] == 0
    loader.release()
    assert loader.get()[0] == 1
    loader.release()
    with pytest.raises(OSError, match="no such file") as caught:
        loader.get()
    notes = getattr(caught.value, "__notes__", ["while preparing batch 2"])
    assert any("while preparing batch 2" in n for n in notes)
    assert loader.close()
    assert not any(t.is_alive() for t in loader._threads)


def test_a_consumer_holding_every_slot_is_told_so():
    loader = Prefetcher(lambda task, slot: task, range(5), ring=2)
    loader.get(), loader.get()
    with pytest.raises(RuntimeError, match="holds all 2 slots"):
        loader.get()
    loader.close()


class Ranks:
    """A replica's rank and world, as the epoch plan reads them."""

    def __init__(self, rank, world_size, shares_batches=True):
        self.rank, self.world_size, self.shares_batches = rank, world_size, shares_batches

    def evaluation_rows(self, count):
        return epoch_plan.split_rows(count, self.world_size, self.rank)


def test_a_ranks_share_of_a_global_batch_is_its_rows_over_all_and_where_they_start():
    share, total = epoch_plan.rank_share([5, 7, 3], Ranks(1, 3))
    assert total == 15 and share == (7 / 15, 5)
    assert epoch_plan.rank_share([5, 7, 3], Ranks(2, 3)) == ((3 / 15, 12), 15)
    assert epoch_plan.rank_share([9], Ranks(0, 1, shares_batches=False)) == \
        (epoch_plan.WHOLE, 9)
    # A batch every rank holds whole: contiguous rows, the first ranks one longer.
    assert [epoch_plan.split_batch(7, Ranks(r, 3)) for r in range(3)] == [
        (0, 3, (3 / 7, 0)), (3, 5, (2 / 7, 3)), (5, 7, (2 / 7, 5))]
    assert epoch_plan.split_batch(7, Ranks(0, 1, False)) == (0, 7, epoch_plan.WHOLE)
    # Evaluation: a share of the rows, all of them for predict, each rank its own shard.
    assert epoch_plan.evaluation_rows(7, Ranks(1, 3), True, False) == (3, 5, 7)
    assert epoch_plan.evaluation_rows(7, Ranks(1, 3), False, False) == (0, 7, 7)
    assert epoch_plan.evaluation_rows(7, Ranks(1, 3), True, True) == (0, 7, None)
    assert epoch_plan.evaluation_rows(None, Ranks(1, 3), True, False)[2] == -1
    # Steps: of the global batches of 16 rows per rank, or of a rank's own shard.
    assert epoch_plan.epoch_steps(70, 16, Ranks(0, 2)) == 3
    assert epoch_plan.epoch_steps(70, 16, Ranks(0, 2), sharded=True) == 5
    assert epoch_plan.epoch_steps(70, 16, Ranks(0, 1, False)) == 5


@pytest.mark.parametrize("shard_rows", [None, [40, 37]])
def test_the_plans_shares_are_rank_shares_of_each_global_batch(shard_rows):
    """Every segment's share and global rows are ``rank_share`` of what each rank holds
    in that step: 16 rows per rank and step, 70 rows in all or shards of 40 and 37."""
    for rank in range(2):
        rows = 70 if shard_rows is None else shard_rows[rank]
        plan = epoch_plan.EpochPlan(numpy.arange(rows), 16, Ranks(rank, 2),
                                    shard_rows=shard_rows)
        for segment in plan:
            if shard_rows is None:
                held = [epoch_plan.split_rows(min(70 - 32 * segment.begin, 32), 2, r)
                        for r in range(2)]
                held = [stop - start for start, stop in held]
            else:
                held = [max(0, min(16, n - 16 * segment.begin)) for n in shard_rows]
            assert (segment.share, segment.global_rows) == \
                epoch_plan.rank_share(held, Ranks(rank, 2))
            assert segment.rows == held[rank]


def test_no_source_does_its_own_rank_arithmetic():
    import pathlib

    import dnn.training

    folder = pathlib.Path(dnn.training.__file__).parent
    for name in ("sources", "host_source", "batch_sources", "stream_feed", "batch_reader",
                 "staging", "prefetch"):
        text = (folder / f"{name}.py").read_text()
        for word in ("split_rows", "Share(", ".rank]", "rank_order"):
            assert word not in text, (name, word)
