"""The command line streams what is too large (issue 21, item 5): a .npy file as a
memmap, a CSV read in chunks into a memmap cache beside it; the streamed data set is
split by rows as in memory, standardized from statistics computed in chunks."""
import os

import numpy
import pytest

from dnn.cli import main, streaming
from dnn.data import make_moons, read_csv, train_test_split
from dnn.training import Rows


@pytest.fixture
def small_limit(monkeypatch):
    """Stream every file larger than 1 KiB."""
    monkeypatch.setenv("DNN_STREAM_MB", str(1 / 1024))


def moons_table(n=600):
    x, y = make_moons(n, noise=0.2, seed=0)
    return x, y, numpy.column_stack([x, y])


def test_a_large_npy_file_trains_and_evaluates_as_a_memmap(tmp_path, small_limit, capsys):
    _, _, table = moons_table()
    path = tmp_path / "moons.npy"
    numpy.save(path, table)
    x, y, name = streaming.load_npy(str(path), None)
    assert isinstance(x, numpy.memmap) and name == "column 2"
    assert y.dtype == numpy.int64 and numpy.array_equal(y, table[:, 2])
    model = tmp_path / "m.npz"
    assert main(["train", str(path), "--epochs", "20", "--verbose", "0", "--backend",
                 "numpy", "--save", str(model)]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.8
    assert main(["evaluate", str(model), str(path), "--backend", "numpy"]) == 0
    assert "accuracy: " in capsys.readouterr().out


def test_a_npy_target_can_be_a_file_of_its_own_or_another_column(tmp_path):
    x, y, table = moons_table(50)
    numpy.save(tmp_path / "x.npy", x)
    numpy.save(tmp_path / "y.npy", y)
    got_x, got_y, name = streaming.load_npy(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert numpy.array_equal(got_x, x) and numpy.array_equal(got_y, y) and name == "y.npy"
    numpy.save(tmp_path / "t.npy", table)
    got_x, got_y, _ = streaming.load_npy(str(tmp_path / "t.npy"), "0")
    assert numpy.array_equal(got_x, table[:, 1:]) and numpy.array_equal(got_y, table[:, 0])
    numpy.save(tmp_path / "short.npy", y[:10])
    with pytest.raises(Exception, match=r"--target: expected 50 targets, one per row"):
        streaming.load_npy(str(tmp_path / "x.npy"), str(tmp_path / "short.npy"))


def test_a_streamed_split_picks_the_rows_the_in_memory_split_picks(tmp_path):
    x, y, _ = moons_table(301)
    numpy.save(tmp_path / "x.npy", x)
    mapped = numpy.load(tmp_path / "x.npy", mmap_mode="r")
    for stratify in (False, True):
        want = train_test_split(x, y, test_size=0.2, seed=4, stratify=stratify)
        got = streaming.split(mapped, y, 0.2, 4, stratify)
        assert isinstance(got[0], Rows) and isinstance(got[1], Rows)
        for rows, memory, targets in ((got[0], want[0], got[2]), (got[1], want[1], got[3])):
            picked = x[rows.rows]
            assert numpy.array_equal(numpy.sort(picked, axis=0), numpy.sort(memory, axis=0))
            numpy.testing.assert_array_equal(targets, y[rows.rows])


def test_standardization_of_streamed_rows_uses_their_mean_and_variance(tmp_path):
    from dnn.layers import Normalization

    rng = numpy.random.default_rng(0)
    x = rng.normal(3, 2, size=(200_000, 3))
    numpy.save(tmp_path / "x.npy", x)
    rows = Rows(numpy.load(tmp_path / "x.npy", mmap_mode="r"), numpy.arange(0, 200_000, 3))
    adapted = streaming.adapt_data(rows)
    numpy.testing.assert_allclose(adapted.mean(axis=0), x[::3].mean(axis=0), rtol=1e-12)
    numpy.testing.assert_allclose(adapted.var(axis=0), x[::3].var(axis=0), rtol=1e-10)
    layer = Normalization(input_dim=3)
    layer.adapt(adapted)  # accepted as any data is


def write_csv(path, x, labels, header=True):
    with open(path, "w") as f:
        if header:
            f.write("a,b,label\n")
        for row, label in zip(x, labels):
            f.write(f"{row[0]:.6f},{row[1]:.6f},{label}\n")


def test_a_large_csv_is_read_in_chunks_into_a_memmap_cache_beside_it(tmp_path, small_limit,
                                                                     monkeypatch):
    x, y, _ = moons_table(500)
    labels = numpy.array(["left", "right"])[y]
    path = str(tmp_path / "moons.csv")
    write_csv(path, x, labels)
    monkeypatch.setattr(streaming, "CHUNK_ROWS", 64)  # several chunks
    got = streaming.load_large_csv(path, -1, None)
    whole = read_csv(path, -1)
    assert isinstance(got[0], numpy.memmap)
    numpy.testing.assert_array_equal(got[0], whole.x)
    numpy.testing.assert_array_equal(got[1], whole.y)
    assert got[2:] == (whole.feature_names, whole.target_name, whole.class_names)
    assert sorted(os.listdir(tmp_path)) == ["moons.csv", "moons.csv.dnn-cache.json",
                                            "moons.csv.dnn-cache.npy",
                                            "moons.csv.dnn-cache.y.npy"]
    made = os.stat(path + ".dnn-cache.npy").st_mtime_ns
    streaming.load_large_csv(path, -1, None)  # the same CSV: the cache is reused
    assert os.stat(path + ".dnn-cache.npy").st_mtime_ns == made
    write_csv(path, x[:400], labels[:400])  # another CSV: made again
    assert streaming.load_large_csv(path, -1, None)[0].shape == (400, 2)


def test_a_bad_cell_of_a_large_csv_names_its_line_and_column(tmp_path, small_limit, monkeypatch):
    x, y, _ = moons_table(300)
    path = str(tmp_path / "bad.csv")
    write_csv(path, x, y)
    lines = open(path).read().splitlines()
    lines[250] = lines[250].replace(lines[250].split(",")[1], "oops", 1)
    open(path, "w").write("\n".join(lines) + "\n")
    monkeypatch.setattr(streaming, "CHUNK_ROWS", 64)
    with pytest.raises(ValueError, match=r"line 251, column b: expected a finite number; "
                                         r"got 'oops'"):
        streaming.load_large_csv(path, -1, None)
    assert not [p for p in os.listdir(tmp_path) if "cache" in p]  # nothing half-written


def test_dnn_train_streams_a_large_csv(tmp_path, small_limit, capsys):
    x, y, _ = moons_table(600)
    path = str(tmp_path / "moons.csv")
    write_csv(path, x, y)
    assert main(["train", path, "--epochs", "20", "--verbose", "0", "--backend",
                 "numpy"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("test accuracy: ")[1].split()[0]) >= 0.8
    assert os.path.exists(path + ".dnn-cache.npy")
