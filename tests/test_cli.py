"""The real ``dnn`` command in a subprocess, and the plots it writes."""
import os
import pathlib
import re
import struct

import numpy
import pytest
from support import ROOT, popen, python


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
    (["train", "--batch-size", "0", "--epochs", "1"], "--batch-size: expected a positive integer"),
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
    """On a TTY, verbose=1 draws a Keras-style bar per epoch, redrawn in place."""
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
    assert "\r" in text  # a bar redrawn in place (test_progress checks its ETA and rate)
    assert "102/102 [==============================]" in text
    assert "test accuracy" in text


# --------------------------------------------------------- what a new user runs into
def people_csv(path, n=300, seed=0, sep=","):
    """Weights and sizes labelled "big"/"small" by a rule on raw scales far from unit."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal([70.0, 1.7], [15.0, 0.1], size=(n, 2))
    label = numpy.where(x[:, 0] / 70 + (x[:, 1] - 1.7) * 10 > 1.0, "big", "small")
    lines = [sep.join(["weight", "height", "kind"])]
    lines += [sep.join([f"{a:.3f}", f"{b:.4f}", c]) for (a, b), c in zip(x, label)]
    path.write_text("\n".join(lines) + "\n")
    return x, label


def test_a_cli_model_answers_the_same_from_python_and_names_its_classes(tmp_path):
    csv, model = tmp_path / "people.csv", tmp_path / "people.npz"
    people_csv(csv)
    out = dnn_cmd("train", str(csv), "--epochs", "30", "--save", str(model), "--verbose", "0")
    assert out.returncode == 0, out.stderr
    ev = dnn_cmd("evaluate", str(model), str(csv))
    assert ev.returncode == 0, ev.stderr
    cli_accuracy = float(ev.stdout.split("accuracy: ")[1].split()[0])
    preds = tmp_path / "p.csv"
    pr = dnn_cmd("predict", str(model), str(csv), "--out", str(preds))
    assert pr.returncode == 0, pr.stderr
    lines = preds.read_text().splitlines()
    assert lines[0] == "p_small,label"
    labels = [line.split(",")[1] for line in lines[1:]]
    assert set(labels) <= {"big", "small"} and len(labels) == 300
    import dnn

    table = dnn.data.read_csv(csv)
    with dnn.use_backend("numpy"):
        loaded = dnn.load_model(model)
        assert loaded.class_names == table.class_names == ["big", "small"]
        python_accuracy = loaded.evaluate(table.x, table.y, return_dict=True)["accuracy"]
        probabilities = loaded.predict(table.x)[:, 0]  # raw features: the model scales them
    assert python_accuracy == pytest.approx(cli_accuracy, abs=5e-5) and python_accuracy > 0.9
    written = numpy.array([float(line.split(",")[0]) for line in lines[1:]])
    numpy.testing.assert_allclose(written, probabilities, rtol=1e-5, atol=1e-6)
    assert [("small" if p > 0.5 else "big") for p in probabilities] == labels
    # A file of features only, and one holding a subset of the classes, work too.
    features = tmp_path / "features.csv"
    features.write_text("\n".join(",".join(line.split(",")[:2]) for line in
                                  csv.read_text().splitlines()) + "\n")
    pr = dnn_cmd("predict", str(model), str(features), "--out", str(tmp_path / "q.csv"))
    assert pr.returncode == 0, pr.stderr
    assert (tmp_path / "q.csv").read_text() == preds.read_text()
    small = tmp_path / "small.csv"
    small.write_text("\n".join([line for line in csv.read_text().splitlines()
                                if not line.endswith(",big")]) + "\n")
    ev = dnn_cmd("evaluate", str(model), str(small))
    assert ev.returncode == 0, ev.stderr
    assert float(ev.stdout.split("accuracy: ")[1].split()[0]) > 0.8  # "small" stays class 1


def test_train_says_what_it_chose_before_training(tmp_path):
    csv = tmp_path / "people.csv"
    people_csv(csv, sep=";")
    out = dnn_cmd("train", str(csv), "--epochs", "1", "--val-split", "0.2", "--verbose", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("Epoch 1/1"))
    chosen = "\n".join(lines[:first_epoch])
    assert "300 samples, 2 features (weight, height)" in chosen
    assert "target: kind (the last column; --target chooses another)" in chosen
    assert "task: binary classification (big, small), loss binary_crossentropy" in chosen
    assert "  why: the target holds text labels" in chosen
    assert "split: 216 train, 54 validation, 30 test" in chosen
    assert "layers: Normalization, 16-16 relu, 1 sigmoid (auto: from the data's width)" \
        in chosen


def test_default_layers_scale_with_the_data():
    from dnn.cli import default_layers

    assert default_layers(2, 1) == [16, 16]
    assert default_layers(20, 3) == [64, 64]
    assert default_layers(64, 10) == [256, 256]
    assert default_layers(784, 10) == [256, 256]


def test_digits_with_the_default_layers_learns(capsys):
    pytest.importorskip("sklearn")
    from dnn.cli import main

    assert main(["train", "digits", "--verbose", "0", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("test accuracy: ")[1].split()[0]) >= 0.95  # 4,6,6,4 gave 0.76


@pytest.mark.parametrize("option", ["--save", "--plot", "--boundary"])
def test_an_unwritable_output_fails_before_training(tmp_path, option):
    target = tmp_path / "no" / "such" / "dir" / ("out.npz" if option == "--save" else "out.png")
    out = dnn_cmd("train", "--epochs", "50", option, str(target), "--verbose", "2")
    assert out.returncode == 2
    assert "Epoch" not in out.stdout, "trained before failing"
    assert f"{option}: the directory" in out.stderr and str(target) in out.stderr
    assert ".tmp" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_plots_without_matplotlib_fail_before_training(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "matplotlib").mkdir()
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('blocked')\n")
    out = python("-m", "dnn", "train", "--plot", str(tmp_path / "c.png"), "--verbose", "2",
                 env={"DNN_BACKEND": "numpy", "PYTHONPATH": str(blocker)})
    assert out.returncode == 2 and "Epoch" not in out.stdout
    assert "pip install matplotlib" in out.stderr


def test_bare_dnn_prints_help_and_train_help_shows_every_default():
    out = dnn_cmd()
    assert out.returncode == 0 and out.stdout.startswith("usage: dnn")
    assert "train" in out.stdout and "Epoch" not in out.stdout
    from dnn.cli import build_parser

    help_text = " ".join(dnn_cmd("train", "--help").stdout.split())
    for action in _train_parser(build_parser())._actions:
        if action.option_strings and action.dest != "help" and action.nargs != 0:
            assert f"(default: {action.default})" in help_text, action.option_strings


def _train_parser(parser):
    return next(a for a in parser._actions if a.dest == "command").choices["train"]


def readme_synopsis():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The command line"):]
    block = section.split("```")[1]
    commands, current = {}, None
    for line in block.strip().splitlines():
        if line.startswith("dnn "):
            current = line.split()[1]
            commands[current] = line
        else:
            commands[current] += " " + line.strip()
    return commands


def test_the_readme_synopsis_agrees_with_the_cli():
    """Every option of every command is in the README's synopsis, with its default
    (capitals where there is none), and the synopsis names no option the CLI lacks."""
    from dnn.cli import build_parser

    synopsis = readme_synopsis()
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(synopsis) == set(subparsers)
    for command, line in synopsis.items():
        if command == "bench":
            continue  # its options belong to dnn.bench, checked below
        shown = dict(re.findall(r"\[(--[a-z-]+)(?: ([^\]]+))?\]", line))
        shown.update(re.findall(r"(?<!\[)(--[a-z-]+) ([A-Z]+)", line))
        actions = {a.option_strings[0]: a for a in subparsers[command]._actions
                   if a.option_strings and a.dest != "help"}
        assert set(shown) == set(actions), command
        for option, value in shown.items():
            default = actions[option].default
            if actions[option].nargs == 0:
                assert value == "", option
            elif default is None:
                assert value.isupper(), (command, option, value)
            else:
                assert value == str(default), (command, option, value, default)


def test_the_readme_bench_synopsis_agrees_with_bench_help():
    """Both ways: every option ``dnn bench --help`` lists is in the README's synopsis,
    with its default (capitals where there is none), and no other."""
    out = dnn_cmd("bench", "--help")
    assert out.returncode == 0, out.stderr
    usage = " ".join(out.stdout.split("\n\n")[0].split())  # the usage paragraph
    helped = set(re.findall(r"\[(--[a-z-]+)", usage))
    from dnn.bench.__main__ import _parse_args

    defaults = {f"--{k.replace('_', '-')}": v for k, v in vars(_parse_args([])).items()}
    shown = dict(re.findall(r"\[(--[a-z-]+)(?: ([^\]]+))?\]", readme_synopsis()["bench"]))
    assert set(shown) == helped - {"--help"}
    for option, value in shown.items():
        default = defaults[option]
        if default in (None, False):
            assert value == "" if default is False else value.isupper(), (option, value)
        else:
            assert value == str(default), (option, value, default)


def test_a_diverging_run_ends_with_one_clear_line_and_no_numpy_warnings():
    out = dnn_cmd("train", "student-score", "--optimizer", "sgd", "--lr", "100",
                  "--verbose", "0")
    assert out.returncode == 1
    assert out.stderr.startswith("dnn train: fit: non-finite loss") and "RuntimeWarning" \
        not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_export_writes_an_onnx_file_that_takes_raw_features(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    csv, model, onnx_path = tmp_path / "people.csv", tmp_path / "m.npz", tmp_path / "m.onnx"
    people_csv(csv, n=120)
    assert dnn_cmd("train", str(csv), "--epochs", "5", "--save", str(model),
                   "--verbose", "0").returncode == 0
    out = dnn_cmd("export", str(model), str(onnx_path))
    assert out.returncode == 0, out.stderr
    assert "input 'input' [batch, 2], output 'output' [batch, 1]" in out.stdout
    import dnn

    table = dnn.data.read_csv(csv)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": table.x.astype(numpy.float32)})[0]
    with dnn.use_backend("numpy"):
        want = dnn.load_model(model).predict(table.x)
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["class_names"] == '["big", "small"]'


def test_bench_help_is_plain_text_with_its_defaults():
    out = dnn_cmd("bench", "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: dnn bench")
    assert "``" not in out.stdout and "(default 5)" in out.stdout


def test_optimizer_help_lists_every_optimizer_dnn_has():
    import dnn
    from dnn.cli import build_parser

    action = next(a for a in _train_parser(build_parser())._actions if a.dest == "optimizer")
    names = list(dnn.optimizers.OPTIMIZERS)
    assert len(names) >= 8 and action.help == ", ".join(names[:-1]) + " or " + names[-1]
