"""Every output checked before the work that would fill it (its suffix, and a file really
created and removed where it goes), and the temporaries that killed writers leave
removed by the next write, never a live writer's."""
import os
import signal
import subprocess
import textwrap

import numpy
import pytest
from support import popen

import dnn
from dnn.cli import main
from dnn.layers import Dense
from dnn.saving.keras_archive import KerasExportError
from dnn.utils import files
from dnn.utils.files import OutputPathError


def train(capsys, *args):
    code = main(["train", *args, "--epochs", "50", "--verbose", "2", "--backend", "numpy"])
    out, err = capsys.readouterr()
    return code, out, err


def uncreatable_dir():
    """A directory that refuses new files even to root (/proc), or None."""
    if not os.path.isdir("/proc"):
        return None
    try:
        files.check_output_directory("/proc/x.npz", "probe")
    except OutputPathError:
        return "/proc"
    return None


@pytest.mark.parametrize("option,name,needle", [
    ("--save", "model.txt", "--save: expected a file name ending in .npz; got "),
    ("--plot", "curves.txt", "--plot: expected a file name ending in .png, .svg or .pdf "
                             "(matplotlib also writes "),
    ("--boundary", "regions.txt", "--boundary: expected a file name ending in .png, .svg, .pdf "
                                  "or .gif (matplotlib also writes "),
])
def test_a_wrong_suffix_fails_before_the_first_epoch(tmp_path, capsys, option, name, needle):
    if option != "--save":
        pytest.importorskip("matplotlib")
    code, out, err = train(capsys, option, str(tmp_path / name))
    assert code == 2 and "Epoch" not in out and needle in err
    listed = err.split("(matplotlib also writes ")[-1].split(")")[0].split(", ")
    assert len(listed) == len(set(listed)) and ".png" not in listed  # each format once
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["model.keras", "model.KERAS"])
def test_save_takes_dnns_npz_and_says_a_keras_archive_is_written_from_python(tmp_path, capsys,
                                                                             name):
    """The CLI's other commands read .npz only, so --save refuses a Keras archive before
    training rather than write one that dnn predict, evaluate and export then refuse."""
    code, out, err = train(capsys, "--save", str(tmp_path / name))
    assert code == 2 and "Epoch" not in out
    assert "--save: expected a file name ending in .npz" in err
    assert 'a Keras archive is written from Python, model.save("m.keras")' in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("option,name", [("--save", "m.npz"), ("--plot", "c.png"),
                                         ("--boundary", "r.gif")])
def test_a_directory_that_takes_no_file_fails_before_the_first_epoch(capsys, option, name):
    directory = uncreatable_dir()
    if directory is None:
        pytest.skip("no directory here refuses new files")
    if option != "--save":
        pytest.importorskip("matplotlib")
    code, out, err = train(capsys, option, f"{directory}/{name}")
    assert code == 2 and "Epoch" not in out
    assert f"{option}: cannot write '{directory}/{name}': the directory '{directory}' takes no " \
           f"new file" in err


def test_the_check_creates_and_removes_a_file_and_leaves_nothing(tmp_path, monkeypatch):
    made = []
    real = files._temporary

    def spy(path):
        fd, name = real(path)
        made.append(name)
        return fd, name

    monkeypatch.setattr(files, "_temporary", spy)
    files.check_output_path(tmp_path / "m.npz", "--save", files.MODEL_SUFFIXES)
    assert len(made) == 1 and os.path.dirname(made[0]) == str(tmp_path)
    assert os.listdir(tmp_path) == []


def test_predict_out_is_checked_first_and_dash_is_standard_output(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "moons", "--epochs", "2", "--verbose", "0", "--backend", "numpy",
                 "--save", str(model)]) == 0
    capsys.readouterr()
    assert main(["predict", str(model), "moons", "--out", str(tmp_path / "p.txt")]) == 2
    assert "--out: expected a file name ending in .csv or .tsv; got " in capsys.readouterr().err
    assert main(["predict", str(model), "moons", "--out", "-"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "p_1,label" and len(lines) == 1001  # the table and nothing else
    assert not os.path.exists("-") and not (tmp_path / "-").exists()
    assert main(["predict", str(model), "moons", "--out", str(tmp_path / "p.tsv")]) == 0
    assert (tmp_path / "p.tsv").read_text().splitlines()[1] == lines[1].replace(",", "\t")


def test_predict_out_help_has_no_default_of_none():
    from dnn.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    text = " ".join(sub["predict"].format_help().split())
    out_help = text.split("--out OUT ")[-1]  # the last: its help, after the usage line
    assert "standard output" in out_help and "default" not in out_help


def test_export_checks_its_suffix_first(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "m.txt")]) == 2
    assert "out: expected a file name ending in .onnx" in capsys.readouterr().err


def small_model():
    model = dnn.Sequential([Dense(4, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model


@pytest.mark.parametrize("name,needle", [
    ("ckpt-{epoch}.h5", "ModelCheckpoint: filepath: expected a file name ending in .npz"),
    ("ckpt-{epoch}", "ModelCheckpoint: filepath: expected a file name ending in .npz"),
])
def test_model_checkpoint_checks_its_suffix_before_the_first_epoch(tmp_path, name, needle):
    x, y = dnn.data.make_moons(64, seed=0)
    with dnn.use_backend("numpy"):
        model = small_model()
        with pytest.raises(OutputPathError, match=needle):
            model.fit(x, y, epochs=2, verbose=0,
                      callbacks=[dnn.callbacks.ModelCheckpoint(str(tmp_path / name))])
    assert model.epochs_done == 0 and os.listdir(tmp_path) == []


@pytest.mark.parametrize("layers,needle", [
    (lambda: [dnn.layers.Residual([Dense(4, "relu")]), Dense(1, "sigmoid")],
     r"ModelCheckpoint: filepath: model.layers\[0\] \(Residual\(1 layers\)\): a Keras "
     r"Sequential model has no layer for it"),
    (lambda: [Dense(4, {"name": "gelu", "approximate": True}), Dense(1, "sigmoid")],
     r"ModelCheckpoint: filepath: model.layers\[0\] .*no activation for gelu's tanh"),
])
def test_model_checkpoint_refuses_what_a_keras_archive_cannot_hold_before_the_first_epoch(
        tmp_path, layers, needle):
    pytest.importorskip("h5py")
    x, y = dnn.data.make_moons(64, seed=0)
    with dnn.use_backend("numpy"):
        model = dnn.Sequential(layers(), input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer="adam")
        with pytest.raises(KerasExportError, match=needle):
            model.fit(x, y, epochs=2, verbose=0, callbacks=[
                dnn.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.keras"))])
        model.fit(x, y, epochs=1, verbose=0, callbacks=[  # .npz keeps the model
            dnn.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.npz"))])
    assert model.epochs_done == 1 and os.listdir(tmp_path) == ["ckpt-1.npz"]


def test_model_checkpoint_without_h5py_fails_before_the_first_epoch(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)
    x, y = dnn.data.make_moons(64, seed=0)
    with dnn.use_backend("numpy"):
        model = small_model()
        with pytest.raises(ImportError, match=r"ModelCheckpoint: filepath: a .keras archive "
                                              r"needs h5py: pip install h5py"):
            model.fit(x, y, epochs=2, verbose=0, callbacks=[
                dnn.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.KERAS"))])
    assert model.epochs_done == 0 and os.listdir(tmp_path) == []


def test_model_checkpoint_tries_its_directory_before_the_first_epoch():
    directory = uncreatable_dir()
    if directory is None:
        pytest.skip("no directory here refuses new files")
    x, y = dnn.data.make_moons(64, seed=0)
    with dnn.use_backend("numpy"):
        model = small_model()
        with pytest.raises(OutputPathError, match="takes no new file"):
            model.fit(x, y, epochs=2, verbose=0, callbacks=[
                dnn.callbacks.ModelCheckpoint(f"{directory}/ckpt-{{epoch}}.npz")])
    assert model.epochs_done == 0


# ------------------------------------------------------------------ stale temporaries
WRITER = textwrap.dedent("""
    import sys
    from dnn.utils.files import atomic_write

    def write(f):
        f.write(b"partial ")
        f.flush()
        print("writing", flush=True)
        sys.stdin.readline()  # mid-write until told to go on (or killed)
        f.write(b"written by " + sys.argv[2].encode())

    atomic_write(sys.argv[1], write)
    print("wrote", flush=True)
""")


def start_writer(path, name):
    proc = popen("-c", WRITER, str(path), name, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def test_a_save_removes_what_killed_writers_left_and_spares_a_live_one(tmp_path):
    """Writers killed with SIGKILL mid-write leave their temporaries; the next write to
    the same path removes them (a zombie's too: killed, not yet reaped), and while one
    writer is still writing, a model saved by another process to the same path spares
    that writer's file, and it finishes. Nothing is left over."""
    path = tmp_path / "model.npz"
    killed = [start_writer(path, f"killed {i}") for i in range(3)]
    for proc in killed:
        proc.send_signal(signal.SIGKILL)
    for proc in killed[:2]:
        proc.wait()
    assert len(temporaries(tmp_path)) == 3
    live = start_writer(path, "live")  # its own write removed the three
    assert temporaries(tmp_path) == [t for t in temporaries(tmp_path) if f"-{live.pid}." in t]
    assert len(temporaries(tmp_path)) == 1
    late = start_writer(path, "late")
    late.send_signal(signal.SIGKILL)
    late.wait()
    assert len(temporaries(tmp_path)) == 2
    with dnn.use_backend("numpy"):
        model = small_model()
        model.save(path)
    left = temporaries(tmp_path)
    assert len(left) == 1 and f"-{live.pid}." in left[0], left  # the live writer's own
    numpy.testing.assert_array_equal(dnn.load_model(path).get_weights()[0],
                                     model.get_weights()[0])
    out, _ = live.communicate("go\n", timeout=60)
    killed[2].wait()
    assert live.returncode == 0 and out.strip() == "wrote"
    assert path.read_bytes() == b"partial written by live"
    assert temporaries(tmp_path) == []


def test_temporaries_of_other_targets_and_hosts_are_left_alone(tmp_path):
    path = tmp_path / "model.npz"
    host = files._host_tag()
    others = [".model.npz.other-host-1.abcd1234.tmp",           # another host's writer
              f".other.npz.{host}-1.abcd1234.tmp",              # another target
              ".model.npz.abcd1234.tmp",                        # no writer named
              f".model.npz.{host}-{os.getpid()}.abcd1234.tmp"]  # a live one: this process
    for name in others:
        (tmp_path / name).write_bytes(b"x")
    gone = f".model.npz.{host}-{2 ** 22 + 12345}.abcd1234.tmp"  # past pid_max: no such pid
    (tmp_path / gone).write_bytes(b"x")
    assert files.stale_temporaries(path) == [str(tmp_path / gone)]
    assert files.remove_stale_temporaries(path) == [str(tmp_path / gone)]
    assert sorted(os.listdir(tmp_path)) == sorted(others)
