"""The real ``dnn`` command in a subprocess, and the plots it writes."""
import os
import pathlib
import struct

import numpy
import pytest
from support import popen, python


def dnn_cmd(*args, cwd=None):
    return python("-m", "dnn", *args, cwd=cwd, env={"DNN_BACKEND": "numpy"})


def png_size(path):
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_default_train_is_seed002_circles():
    out = dnn_cmd("train", "--verbose", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Dense(4, relu)" in out.stdout and "Dense(1, sigmoid)" in out.stdout
    assert sum(line.startswith("Epoch ") for line in lines) == 50
    acc = float(lines[-1].split("test accuracy: ")[1].split()[0])
    assert acc >= 0.95


def test_train_save_evaluate_predict_round_trip(tmp_path):
    model = tmp_path / "spirals.npz"
    out = dnn_cmd("train", "spirals", "--layers", "32,32", "--epochs", "40", "--lr", "0.01",
                  "--val-split", "0.1", "--save", str(model), "--verbose", "0")
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and model.exists()
    ev = dnn_cmd("evaluate", str(model), "spirals")
    assert ev.returncode == 0, ev.stderr
    assert ev.stdout.startswith("loss: ") and "accuracy: " in ev.stdout
    preds = tmp_path / "p.csv"
    pr = dnn_cmd("predict", str(model), "spirals", "--out", str(preds))
    assert pr.returncode == 0, pr.stderr
    table = numpy.loadtxt(preds, delimiter=",", skiprows=1)
    assert table.shape == (900, 4)
    numpy.testing.assert_allclose(table[:, :3].sum(1), 1.0, atol=1e-4)


def test_regression_csv_with_named_target(tmp_path):
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x @ [1.5, -2.0, 0.5] + 3
    csv = tmp_path / "r.csv"
    numpy.savetxt(csv, numpy.column_stack([x, y]), delimiter=",", header="a,b,c,target",
                  comments="")
    out = dnn_cmd("train", str(csv), "--target", "target", "--layers", "16", "--epochs", "60",
                  "--lr", "0.01", "--verbose", "0")
    assert out.returncode == 0, out.stderr
    assert "test loss (mse)" in out.stdout
    mse = float(out.stdout.split("test loss (mse): ")[1].split()[0])
    assert mse < 0.1 * y.var()


def test_idx_training(tmp_path):
    from dnn.data import write_idx

    rng = numpy.random.default_rng(0)
    labels = rng.integers(0, 3, 300).astype(numpy.uint8)
    images = (rng.random((300, 4, 4)) * 40).astype(numpy.uint8)
    images[numpy.arange(300), labels, labels] = 255  # a bright pixel says the class
    write_idx(tmp_path / "img-idx3-ubyte.gz", images)
    write_idx(tmp_path / "lab-idx1-ubyte.gz", labels)
    out = dnn_cmd("train", str(tmp_path / "img-idx3-ubyte.gz"), "--target",
                  str(tmp_path / "lab-idx1-ubyte.gz"), "--layers", "16", "--epochs", "20",
                  "--verbose", "0")
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split("test accuracy: ")[1].split()[0]) >= 0.9


@pytest.mark.parametrize("args,needle", [
    (["train", "nosuchdata"], "expected a dataset name"),
    (["train", "--layers", "4,x"], "--layers: expected comma-separated positive integers"),
    (["train", "--optimizer", "lbfgs"], "optimizer: expected one of sgd"),
    (["train", "--activation", "swish"], "activation: expected one of"),
    (["train", "--batch-size", "0", "--epochs", "1"], "batch_size: expected a positive integer"),
    (["train", "--backend", "tpu"], "backend: expected one of"),
    (["evaluate", "/no/such/model.npz", "circles"], "no such file: '/no/such/model.npz'"),
])
def test_user_errors_are_one_line_and_nonzero(args, needle):
    out = dnn_cmd(*args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_info_lists_backends_and_blas():
    out = dnn_cmd("info")
    assert out.returncode == 0, out.stderr
    assert "numpy: available" in out.stdout and "cupy: " in out.stdout
    assert "BLAS: " in out.stdout and "dnn 0.1.0" in out.stdout


def test_plots_are_real_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    curves, regions, gif = tmp_path / "c.png", tmp_path / "r.png", tmp_path / "r.gif"
    out = dnn_cmd("train", "moons", "--layers", "16,16", "--epochs", "10", "--val-split", "0.2",
                  "--plot", str(curves), "--boundary", str(regions), "--verbose", "0")
    assert out.returncode == 0, out.stderr
    assert png_size(curves) == (1000, 360)  # two panels of 5 x 3.6 inches at 100 dpi
    assert png_size(regions) == (400, 400)
    out = dnn_cmd("train", "moons", "--layers", "8", "--epochs", "6", "--boundary", str(gif),
                  "--verbose", "0")
    assert out.returncode == 0, out.stderr
    data = gif.read_bytes()
    assert data[:6] in (b"GIF87a", b"GIF89a")
    assert data.count(b"\x21\xf9\x04") >= 2  # more than one frame (graphic control blocks)


def test_plot_api(tmp_path):
    pytest.importorskip("matplotlib")
    import dnn
    from dnn.layers import Dense

    x, y = dnn.data.make_circles(200, seed=0)
    with dnn.use_backend("numpy"):
        model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
        h = model.fit(x, y, epochs=2, verbose=0)
    assert png_size(dnn.plot.history(h, tmp_path / "h.png")) == (1000, 360)
    assert png_size(dnn.plot.decision_boundary(model, x, y, tmp_path / "d.png")) == (500, 500)
    with pytest.raises(ValueError, match=r"shape \(n, 2\).*got shape \(200, 3\)"):
        dnn.plot.decision_boundary(model, numpy.zeros((200, 3)), y, tmp_path / "x.png")


def test_progress_bar_on_a_terminal():
    """On a TTY, verbose=1 draws a Keras-style bar with ETA, samples/s and the loss."""
    import pty

    master, slave = pty.openpty()
    proc = popen("-m", "dnn", "train", "spirals", "--layers", "64,64", "--epochs", "3",
                 "--batch-size", "8", stdout=slave, stderr=slave, env={"DNN_BACKEND": "numpy"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Epoch 1/3" in text and "Epoch 3/3" in text
    assert "ETA" in text and "samples/s" in text and "\r" in text
    assert "102/102 [==============================]" in text
    assert "test accuracy" in text
