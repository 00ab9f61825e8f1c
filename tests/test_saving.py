"""Save/load round trips, atomic writes and hostile files."""
import json
import os
import re
import signal
import subprocess
import textwrap
import zipfile

import numpy
import pytest
from support import ROOT, popen, python

import dnn
from dnn.data import make_moons
from dnn.utils.files import OutputPathError
from dnn.layers import Dense, Dropout


def trained(epochs=2, optimizer="adam"):
    x, y = make_moons(200, seed=0)
    model = dnn.Sequential([Dense(8, "relu"), Dropout(0.2), Dense(1, "sigmoid")], input_dim=2,
                           seed=3)
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, verbose=0)
    return model, x, y


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop",
                                       dnn.optimizers.SGD(0.1, momentum=0.9, nesterov=True)])
def test_round_trip_keeps_predictions_and_optimizer_state(use, tmp_path, optimizer):
    model, x, y = trained(optimizer=optimizer)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = dnn.load_model(path)
    numpy.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    state_a, state_b = model.optimizer.get_state(), loaded.optimizer.get_state()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        numpy.testing.assert_array_equal(state_a[key], state_b[key])
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.loss.name == model.loss.name and loaded.train_steps == model.train_steps


def test_resume_is_bitwise_identical(tmp_path):
    with dnn.use_backend("numpy"):
        straight, x, y = trained(epochs=4)
        first, _, _ = trained(epochs=2)
        first.save(tmp_path / "half.npz")
        resumed = dnn.load_model(tmp_path / "half.npz")
        resumed.fit(x, y, epochs=4, initial_epoch=2, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_file_is_npz_with_versioned_json_header(tmp_path):
    model, _, _ = trained(epochs=1)
    model.save(tmp_path / "m.npz")
    with numpy.load(tmp_path / "m.npz", allow_pickle=False) as data:
        header = json.loads(data["header"].tobytes())
    assert header["format"] == "dnn-model" and header["format_version"] == 3
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_truncated_file_gives_clear_error(tmp_path):
    model, _, _ = trained(epochs=1)
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(dnn.ModelFileError, match=str(path)):
        dnn.load_model(path)


def test_pickle_carrying_file_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    numpy.savez(path, header=numpy.array([Evil()], dtype=object))
    with pytest.raises(dnn.ModelFileError, match="evil.npz") as error:
        dnn.load_model(path)
    assert not marker.exists()
    assert "holds Python objects, which dnn never writes and does not load" in str(error.value)
    assert "allow_pickle" not in str(error.value)


@pytest.mark.parametrize("content,reason", [
    (b"a,b,label\n1,2,x\n", "this file is not a .npz archive"),
    (None, r"it holds arrays \['x', 'y'\] but no dnn header"),
])
def test_a_file_that_is_not_a_model_says_so_and_never_advises_unpickling(tmp_path, content,
                                                                        reason):
    path = tmp_path / "data.csv"
    if content is None:
        path = tmp_path / "data.npz"
        numpy.savez(path, x=numpy.ones(3), y=numpy.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(dnn.ModelFileError) as error:
        dnn.load_model(path)
    message = str(error.value)
    assert repr(str(path)) in message and "expected a .npz written by model.save" in message
    assert re.search(reason, message) and "pickle" not in message


def test_a_truncated_file_is_closed_after_the_error(tmp_path):
    model, _, _ = trained(epochs=1)
    path = tmp_path / "m.npz"
    model.save(path)
    path.write_bytes(path.read_bytes()[:300])
    out = python("-X", "dev", "-W", "error::ResourceWarning", "-c",
                 f"import dnn\ntry:\n    dnn.load_model({str(path)!r})\n"
                 f"except dnn.ModelFileError as e:\n    print('refused:', e)")
    assert out.returncode == 0 and "refused:" in out.stdout, out.stderr
    assert "ResourceWarning" not in out.stderr, out.stderr


def test_saved_files_get_the_usual_mode_not_mkstemp_0600(tmp_path):
    model, _, _ = trained(epochs=1)
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o644


def test_save_to_a_missing_directory_names_the_users_path(tmp_path):
    model, _, _ = trained(epochs=1)
    target = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(OutputPathError, match=r"save: path: the directory .* of "
                                                         + re.escape(repr(str(target)))):
        model.save(target)
    assert ".tmp" not in str(target)


def test_format_1_models_load_and_answer_as_they_did(use):
    """A model written by dnn 0.1's dnn train (its feature scaling in the metadata, text
    labels big/small) loads with the scaling as a Normalization layer: raw features in,
    dnn 0.1's own predictions out."""
    data = ROOT / "tests" / "data"
    model = dnn.load_model(data / "format1_cli_model.npz")
    assert type(model.layers[0]).__name__ == "Normalization"
    assert "standardizer" not in model.metadata
    table = dnn.data.read_csv(data / "format1_people.csv")
    then = numpy.loadtxt(data / "format1_predictions.csv", delimiter=",", skiprows=1)
    numpy.testing.assert_allclose(model.predict(table.x)[:, 0], then[:, 0], rtol=2e-6,
                                  atol=1e-6)
    assert model.optimizer.get_state()["iterations"][0] == 30  # the Adam state came along


def test_tampered_header_gives_clear_error(tmp_path):
    model, _, _ = trained(epochs=1)
    path = tmp_path / "m.npz"
    model.save(path)
    with numpy.load(path) as data:
        arrays = dict(data)
    header = json.loads(arrays["header"].tobytes())
    header["format_version"] = 99
    arrays["header"] = numpy.frombuffer(json.dumps(header).encode(), numpy.uint8)
    numpy.savez(path, **arrays)
    with pytest.raises(dnn.ModelFileError, match="format_version"):
        dnn.load_model(path)
    arrays["header"] = numpy.frombuffer(b"{not json", numpy.uint8)
    numpy.savez(path, **arrays)
    with pytest.raises(dnn.ModelFileError, match="JSON"):
        dnn.load_model(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        dnn.load_model(tmp_path / "nothing.npz")


def test_a_crash_mid_save_leaves_the_previous_file_intact(tmp_path):
    """Kill a process while it writes a large model over a good one."""
    path = tmp_path / "model.npz"
    small, x, _ = trained(epochs=1)
    small.save(path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import sys, numpy
        import dnn, dnn.saving
        from dnn.layers import Dense
        model = dnn.Sequential([Dense(2048), Dense(2048), Dense(1, "sigmoid")], input_dim=2048)
        model.compile(loss="binary_crossentropy", optimizer="adam")
        model.build()
        real = numpy.savez
        def slow_savez(f, **arrays):
            print("writing", flush=True)
            for name, a in arrays.items():  # write slowly so the kill lands mid-file
                f.write(a.tobytes()[:1 << 20])
                import time; time.sleep(0.2)
            real(f, **arrays)
        numpy.savez = slow_savez
        model.save({str(path)!r})
    """)
    proc = popen("-c", script, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_bytes() == before
    numpy.testing.assert_array_equal(dnn.load_model(path).predict(x), small.predict(x))


def test_model_checkpoint_writes_each_epoch(tmp_path):
    x, y = make_moons(100, seed=0)
    model = dnn.Sequential([Dense(4, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    cb = dnn.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.npz"))
    model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.npz", "ckpt-02.npz", "ckpt-03.npz"]
    assert zipfile.is_zipfile(tmp_path / "ckpt-03.npz")


def test_model_checkpoint_to_a_missing_directory_fails_before_the_first_epoch(tmp_path):
    x, y = make_moons(100, seed=0)
    model = dnn.Sequential([Dense(4, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    before = model.get_weights()
    cb = dnn.callbacks.ModelCheckpoint(str(tmp_path / "missing" / "ckpt-{epoch:02d}.npz"))
    with pytest.raises(OutputPathError, match=r"ModelCheckpoint: filepath: the directory "
                                              r".*missing.* does not exist"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    for a, b in zip(before, model.get_weights()):
        numpy.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["mixed", "rmsprop", "sgd"])
def test_format2_files_predict_and_resume_as_the_dnn_that_wrote_them(name):
    """Files written by dnn at c959bf0 (tests/data/make_format2_fixtures.py): every layer
    kind, Adam, momentum RMSprop and Nesterov SGD with a schedule. They predict bitwise
    as they did, and three more steps train to the weights that dnn reached."""
    data = ROOT / "tests" / "data"
    expected = numpy.load(data / f"format2_{name}_expected.npz")
    with dnn.use_backend("numpy"):
        model = dnn.load_model(data / f"format2_{name}.npz")
        numpy.testing.assert_array_equal(model.predict(expected["probe"]),
                                         expected["predictions"])
        model.fit(expected["resume_x"], expected["resume_y"], epochs=1, batch_size=16,
                  verbose=0, shuffle=False)
        fused = model.backend.accelerated  # the files were written with numba's updates
    for i, weight in enumerate(model.get_weights()):
        if fused:
            numpy.testing.assert_array_equal(weight, expected[f"resumed_{i}"])
        else:
            numpy.testing.assert_allclose(weight, expected[f"resumed_{i}"], rtol=1e-5,
                                          atol=1e-7)
