"""What a new user met in an afternoon with ``dnn``: errors that name the flag typed,
files from pandas and from Windows, .tsv and npz keys, Ctrl-C, lines that fit the
terminal, and a start that does not pay for CuPy on a machine without a GPU."""
import os
import signal
import subprocess

import numpy
import pytest
from support import popen, python

import dnn
from dnn.cli import main
from dnn.cli.header import Header, memmap_notes


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,message", [
    (["--test-split", "1.5"], "--test-split: expected a fraction in [0, 1); got 1.5"),
    (["--val-split", "-0.1"], "--val-split: expected a fraction in [0, 1); got -0.1"),
    (["--lr", "-1"], "--lr: expected a finite number > 0; got -1.0"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer; got 0"),
    (["--seed", "-1"], "--seed: expected an integer >= 0; got -1"),
    (["--dtype", "float16"], "--dtype: expected one of float32, float64, mixed_bfloat16; "
                             "got 'float16'"),
])
def test_errors_name_the_flag_the_user_typed(capsys, args, message):
    code, out, err = run(capsys, "train", *args, "--epochs", "1", "--verbose", "0",
                         "--backend", "numpy")
    assert code == 2 and err.strip() == f"dnn train: error: {message}"


def test_the_library_keeps_naming_its_arguments():
    with pytest.raises(ValueError, match=r"^Adam: learning_rate: expected a finite number"):
        dnn.optimizers.Adam(-1.0)
    with pytest.raises(ValueError, match=r"^test_size: expected a fraction in \(0, 1\)"):
        dnn.data.train_test_split(numpy.zeros((10, 1)), numpy.zeros(10), test_size=1.5)


def people(path, encoding="utf-8", index=False):
    """A CSV with accented text labels (café, thé), as a Windows tool writes them."""
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    labels = numpy.where(x[:, 0] + x[:, 1] > 0, "café", "thé")
    rows = ["prix,taille,boisson"] + [f"{a:.4f},{b:.4f},{c}" for (a, b), c in zip(x, labels)]
    if index:
        rows = ["," + rows[0]] + [f"{i},{r}" for i, r in enumerate(rows[1:])]
    path.write_bytes(("\n".join(rows) + "\n").encode(encoding))


def test_a_latin1_csv_is_read_with_a_note(tmp_path, capsys):
    path = tmp_path / "boissons.csv"
    people(path, encoding="cp1252")
    table = dnn.data.read_csv(path)
    assert table.class_names == ["café", "thé"]
    assert table.notes == ["boissons.csv is not UTF-8 (byte 0xe9 on line 2): read as cp1252; "
                           "encoding= (--encoding) names another"]
    code, out, _ = run(capsys, "train", str(path), "--epochs", "1", "--verbose", "2",
                       "--backend", "numpy")
    assert code == 0 and "note: boissons.csv is not UTF-8 (byte 0xe9 on line 2): read as " \
                          "cp1252" in out
    assert "binary classification (café, thé)" in out


def test_an_encoding_that_does_not_fit_names_the_file_line_and_a_hint(tmp_path, capsys):
    path = tmp_path / "boissons.csv"
    people(path, encoding="cp1252")
    with pytest.raises(ValueError, match=r"boissons.csv' line 2: byte 0xe9 is not utf-8; pass "
                                         r"the file's encoding \(encoding='cp1252'"):
        dnn.data.read_csv(path, encoding="utf-8")
    code, _, err = run(capsys, "train", str(path), "--encoding", "utf-8", "--backend", "numpy")
    assert code == 2 and "line 2: byte 0xe9 is not utf-8" in err and "--encoding" in err
    assert dnn.data.read_csv(path, encoding="cp1252").notes == []


def test_the_index_pandas_writes_is_not_a_feature(tmp_path):
    path = tmp_path / "indexed.csv"
    people(path, index=True)
    table = dnn.data.read_csv(path)
    assert table.feature_names == ["prix", "taille"] and table.x.shape == (120, 2)
    assert "is the index pandas writes" in table.notes[0]
    # A named first column, or an unnamed one that is not an index, stays a feature.
    named = tmp_path / "named.csv"
    named.write_text(path.read_text().replace(",prix", "id,prix", 1))
    assert dnn.data.read_csv(named).feature_names == ["id", "prix", "taille"]
    repeated = tmp_path / "repeated.csv"
    lines = path.read_text().splitlines()
    repeated.write_text("\n".join([lines[0]] + ["7" + line[line.index(","):]
                                                for line in lines[1:]]) + "\n")
    assert dnn.data.read_csv(repeated).feature_names == ["", "prix", "taille"]


def test_a_pandas_frame_round_trip_with_its_index(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    rng = numpy.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    frame["y"] = (frame.a > frame.b).astype(int)
    frame.sample(frac=1, random_state=0).to_csv(tmp_path / "f.csv")  # shuffled index
    model = tmp_path / "m.npz"
    code, out, _ = run(capsys, "train", str(tmp_path / "f.csv"), "--epochs", "1", "--save",
                       str(model), "--verbose", "2", "--backend", "numpy")
    assert code == 0 and "200 samples, 2 features (a, b)" in out
    assert "the first column, unnamed and holding distinct whole numbers (0..199)" in \
        " ".join(out.split())


def test_pandas_text_labels_and_nullable_columns_get_a_pointer(capsys):
    pd = pytest.importorskip("pandas")
    x = numpy.random.default_rng(0).normal(size=(20, 2))
    with dnn.use_backend("numpy"):
        model = dnn.Sequential([dnn.layers.Dense(2, "softmax")], input_dim=2, seed=0)
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        with pytest.raises(TypeError, match=r"y: expected numeric data .* got dtype object "
                                            r"\(text labels: code them as integers first, "
                                            r"e.g. codes, classes = dnn.data.encode_labels\(y\)"):
            model.fit(x, pd.Series(["a", "b"] * 10), verbose=0)
        mixed = pd.Series([0, 1] * 9 + [pd.NA, 1], dtype="object")
        with pytest.raises(TypeError, match=r"a pandas nullable column such as Float64 or "
                                            r"Int64: y.to_numpy\('float64', na_value=numpy.nan\)"):
            model.fit(x, mixed, verbose=0)


def test_tsv_files_and_npz_keys_of_ones_own(tmp_path, capsys):
    path = tmp_path / "people.tsv"
    people(path)
    path.write_text(path.read_text().replace(",", "\t"))
    model = tmp_path / "m.npz"
    code, out, _ = run(capsys, "train", str(path), "--epochs", "1", "--save", str(model),
                       "--verbose", "2", "--backend", "numpy")
    assert code == 0 and "120 samples, 2 features (prix, taille)" in out
    x, y = dnn.data.load_csv(path)
    numpy.savez(tmp_path / "own.npz", features=x, labels=y)
    code, out, _ = run(capsys, "train", str(tmp_path / "own.npz"), "--x-key", "features",
                       "--target", "labels", "--epochs", "1", "--verbose", "2",
                       "--backend", "numpy")
    assert code == 0 and "120 samples, 2 features" in out and "target: labels" in out
    code, out, _ = run(capsys, "evaluate", str(model), str(tmp_path / "own.npz"), "--x-key",
                       "features", "--target", "labels")
    assert code == 0 and out.startswith("loss: ")
    code, _, err = run(capsys, "train", str(tmp_path / "own.npz"), "--backend", "numpy")
    assert code == 2 and "expected arrays 'x' and 'y'; got ['features', 'labels']: choose x " \
                         "with --x-key and y with --target" in err


def test_header_lines_fit_80_columns(tmp_path, capsys):
    names = [f"a_rather_long_feature_name_{i:02d}" for i in range(30)]
    rng = numpy.random.default_rng(0)
    deep = tmp_path / ("very_long_directory_name_" * 3) / "and_deeper"
    deep.mkdir(parents=True)
    path = deep / "a_data_file_with_a_long_name_too.csv"
    x = rng.normal(size=(60, 30))
    rows = [",".join(names + ["the_target_column_with_a_long_name"])]
    rows += [",".join(f"{v:.3f}" for v in row) + f",{'yes' if row[0] > 0 else 'no'}"
             for row in x]
    path.write_text("\n".join(rows) + "\n")
    code, out, _ = run(capsys, "train", str(path), "--layers", "256,256,256,256,256,256",
                       "--epochs", "1", "--verbose", "2", "--backend", "numpy")
    assert code == 0
    lines = out.split("Model:")[0].splitlines()
    assert len(lines) >= 6 and all(len(line) <= 80 for line in lines), \
        max(lines, key=len)
    assert lines[0] == "data: a_data_file_with_a_long_name_too.csv: 60 samples, 30 features"
    assert lines[1] == "  features: a_rather_long_feature_name_00, ... (30 in all)"
    code, out, _ = run(capsys, "train", "--epochs", "1", "--verbose", "2", "--backend", "numpy")
    lines = out.split("Model:")[0].splitlines()
    assert all(len(line) <= 80 for line in lines) and \
        "layers: Normalization, 4-6-6-4 relu, 1 sigmoid (auto: the circles example)" in lines


def test_a_narrower_width_wraps_with_an_indent(capsys):
    Header(width=40)("task: regression of 1 value, loss mse, linear output")
    Header(width=40)("  why: 214 distinct whole numbers in 442 rows (over 10%)")
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 40 for line in lines)
    assert lines[1].startswith("    ") and lines[2].startswith("  why: ")


def test_a_memmap_gets_a_note_that_it_streams_cast_per_batch(tmp_path):
    array = numpy.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype="float64",
                                         shape=(1024, 256))
    with dnn.use_backend("numpy"):
        model = dnn.Sequential([dnn.layers.Dense(1)], input_dim=256)
    assert memmap_notes(array, model) == ["x streams from x.npy (2 MiB of float64): each "
                                          "batch is read and cast to float32 as the step "
                                          "needs it, never the whole file"]
    assert memmap_notes(array[:, :8], model) == ["x streams from x.npy (under 1 MiB of "
                                                 "float64): each batch is read and cast to "
                                                 "float32 as the step needs it, never the "
                                                 "whole file"]
    assert memmap_notes(numpy.asarray(array), model) == []
    with dnn.use_backend("numpy"):
        wide = dnn.Sequential([dnn.layers.Dense(1)], input_dim=256, dtype="float64")
    assert "read as the step needs it" in memmap_notes(array, wide)[0]


def test_ctrl_c_stops_saves_and_exits_130(tmp_path):
    model = tmp_path / "m.npz"
    proc = popen("-m", "dnn", "train", "spirals", "--epochs", "1000", "--save", str(model),
                 "--verbose", "2", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 env={"DNN_BACKEND": "numpy"})
    for line in proc.stdout:
        if line.startswith("Epoch 2/"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "saved model to" in out and "test accuracy" in out
    assert "dnn train: interrupted after" in err and "the model so far is saved" in err
    with dnn.use_backend("numpy"):
        assert 2 <= dnn.load_model(model).epochs_done < 1000


def test_without_a_cuda_driver_the_cli_does_not_import_cupy():
    """With CuPy installed and no GPU, importing CuPy cost every CLI start about a
    second; the driver is looked for first."""
    try:
        import importlib.util

        if importlib.util.find_spec("cupy") is None:
            pytest.skip("CuPy is not installed (the nvrtc extra installs it)")
    except ValueError:
        pytest.skip("cupy is blocked in this process")
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("a CUDA driver is installed here")
    except OSError:
        pass
    code = ("import sys\nfrom dnn.cli import main\n"
            "main(['info'])\nmain(['train', '--epochs', '1', '--verbose', '0'])\n"
            "print('cupy imported:', 'cupy' in sys.modules)")
    out = python("-c", code)
    assert out.returncode == 0, out.stderr
    assert "no CUDA driver" in out.stdout and "cupy imported: False" in out.stdout
    assert os.environ.get("DNN_BACKEND") != "cupy"
