"""The command line streams what is too large (issue 21, item 5): a .npy file as a
memmap, a CSV read in chunks into a memmap cache beside it; the streamed data set is
split by rows as in memory, standardized from statistics computed in chunks."""
import os

import numpy
import pytest

from dnn.cli import main, streaming
from dnn.cli.data_sources import Reading, load_data
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


def assert_same_table(streamed, whole):
    numpy.testing.assert_array_equal(streamed.x, whole.x)
    numpy.testing.assert_array_equal(streamed.y, whole.y)
    assert streamed.y.dtype == whole.y.dtype
    assert (streamed.feature_names, streamed.target_name, streamed.class_names,
            streamed.delimiter, streamed.notes) == (whole.feature_names, whole.target_name,
                                                     whole.class_names, whole.delimiter,
                                                     whole.notes)


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
    got = streaming.load_large_csv(path, -1, Reading())
    whole = read_csv(path, -1)
    assert isinstance(got.x, numpy.memmap)
    assert_same_table(got, whole)
    assert sorted(os.listdir(tmp_path)) == ["moons.csv", "moons.csv.dnn-cache.json",
                                            "moons.csv.dnn-cache.npy",
                                            "moons.csv.dnn-cache.y.npy"]
    made = os.stat(path + ".dnn-cache.npy").st_mtime_ns
    streaming.load_large_csv(path, -1, Reading())  # the same CSV: the cache is reused
    assert os.stat(path + ".dnn-cache.npy").st_mtime_ns == made
    write_csv(path, x[:400], labels[:400])  # another CSV: made again
    assert streaming.load_large_csv(path, -1, Reading()).x.shape == (400, 2)


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
        streaming.load_large_csv(path, -1, Reading())
    assert not [p for p in os.listdir(tmp_path) if "cache" in p]  # nothing half-written


def test_dnn_train_streams_a_large_csv(tmp_path, small_limit, capsys):
    x, y, _ = moons_table(600)
    path = str(tmp_path / "moons.csv")
    write_csv(path, x, y)
    assert main(["train", path, "--epochs", "20", "--verbose", "2", "--backend",
                 "numpy"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("test accuracy: ")[1].split()[0]) >= 0.8
    assert os.path.exists(path + ".dnn-cache.npy")
    # The notes say what happens: the cache made beside the CSV, streamed batch by batch
    # and cast per batch (nothing is copied into memory whole).
    notes = " ".join(line.strip() for line in out.splitlines() if not line.startswith("Epoch"))
    assert "note: moons.csv is larger than DNN_STREAM_MB: its rows were read in chunks " \
           "into moons.csv.dnn-cache.npy beside it" in notes
    assert "note: x streams from moons.csv.dnn-cache.npy (under 1 MiB of float64): each " \
           "batch is read and cast to float32 as the step needs it" in notes
    assert "copies" not in notes and "into memory" not in notes


def pandas_and_windows_files(tmp_path):
    """A CSV that pandas wrote with its (shuffled) index, and a cp1252 one with text
    labels, a decimal comma and whole-number features: each exercises one of read_csv's
    rules that a cache read in chunks must follow too."""
    pd = pytest.importorskip("pandas")
    rng = numpy.random.default_rng(3)
    x = rng.normal(size=(300, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] > x[:, 1]).astype(int)})
    indexed = tmp_path / "indexed.csv"
    frame.sample(frac=1, random_state=0).to_csv(indexed)
    windows = tmp_path / "boissons.csv"
    labels = numpy.array(["café", "thé", "bœuf"])[rng.integers(0, 3, 300)]
    lines = ["prix;taille;boisson"] + [f"{a:.3f};{int(b * 10)};{c}".replace(".", ",")
                                       for (a, b), c in zip(x, labels)]
    windows.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return [str(indexed), str(windows)]


@pytest.mark.parametrize("which", [0, 1])
def test_a_csv_streamed_in_chunks_reads_as_the_csv_read_whole(tmp_path, small_limit,
                                                              monkeypatch, which):
    path = pandas_and_windows_files(tmp_path)[which]
    monkeypatch.setattr(streaming, "CHUNK_ROWS", 64)  # several chunks
    whole = read_csv(path)
    assert whole.notes  # the index left out, or the encoding guessed
    streamed = streaming.load_large_csv(path, -1, Reading())
    assert isinstance(streamed.x, numpy.memmap)
    assert_same_table(streamed, whole)
    cached = streaming.load_large_csv(path, -1, Reading())  # from the cache: the same
    assert_same_table(cached, whole)
    monkeypatch.setenv("DNN_STREAM_MB", "256")
    in_memory = load_data(path)
    monkeypatch.setenv("DNN_STREAM_MB", str(1 / 1024))
    from_disk = load_data(path)
    assert isinstance(from_disk.x, numpy.memmap) and not isinstance(in_memory.x, numpy.memmap)
    for name in ("x", "y"):
        numpy.testing.assert_array_equal(getattr(from_disk, name), getattr(in_memory, name))
    for name in ("feature_names", "target_name", "class_names", "target_note"):
        assert getattr(from_disk, name) == getattr(in_memory, name)
    assert from_disk.notes[:-1] == in_memory.notes == whole.notes
    assert "its rows were read in chunks into" in from_disk.notes[-1]


def test_a_streamed_csv_fails_as_the_csv_read_whole(tmp_path, small_limit, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_ROWS", 64)
    windows = pandas_and_windows_files(tmp_path)[1]
    for reading in (Reading(encoding="utf-8"), Reading(encoding="no-such-codec")):
        with pytest.raises(ValueError) as whole:
            read_csv(windows, encoding=reading.encoding)
        with pytest.raises(ValueError) as streamed:
            streaming.load_large_csv(windows, -1, reading)
        assert str(streamed.value) == str(whole.value)
    right = streaming.load_large_csv(windows, -1, Reading(encoding="cp1252"))
    assert right.notes == [] and right.class_names == ["bœuf", "café", "thé"]
    # The encoding is part of the cache's key: the same file read as Latin-1 is made again.
    again = streaming.load_large_csv(windows, -1, Reading(encoding="latin-1"))
    assert again.class_names == ["b\x9cuf", "café", "thé"]
    # Errors of the rows: a late text label among numbers, a missing label, a bad cell.
    path = tmp_path / "late.csv"
    lines = ["a,b,y"] + [f"{i},{i % 7},{i % 2}" for i in range(200)] + ["1,2,cat"]
    path.write_text("\n".join(lines) + "\n")
    assert streaming.load_large_csv(str(path), -1, Reading()).class_names == \
        read_csv(path).class_names == ["0", "1", "cat"]
    for bad in ("1,2,", "1,x,0", "1,2,3,4"):
        path.write_text("\n".join(lines[:150] + [bad] + lines[150:]) + "\n")
        with pytest.raises(ValueError) as whole:
            read_csv(path)
        with pytest.raises(ValueError) as streamed:
            streaming.load_large_csv(str(path), -1, Reading())
        assert "line 151" in str(whole.value) and str(streamed.value) == str(whole.value)
