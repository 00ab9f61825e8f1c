"""dnn.plot: what the figures show, and how they are written."""
import os
import sys

import numpy
import pytest

import dnn
from dnn import plot
from dnn.utils.files import OutputPathError

pytest.importorskip("matplotlib")


class FakeModel:
    """A binary or 3-class classifier of 2-D points, without training."""

    def __init__(self, classes=2, class_names=None):
        self.classes = classes
        self.class_names = class_names
        self.metadata = {}
        self.calls = 0

    def predict(self, x, batch_size=None):
        self.calls += 1
        x = numpy.asarray(x, dtype=float)
        if self.classes == 2:
            return 1 / (1 + numpy.exp(-3 * (x[:, :1] ** 2 + x[:, 1:] ** 2 - 1)))
        scores = numpy.stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]], 1) * 3
        e = numpy.exp(scores - scores.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def circles(n=200):
    return dnn.data.make_circles(n, factor=0.5, noise=0.08, seed=0)


def ramp(first, last, epochs=30):
    return list(numpy.geomspace(first, last, epochs))


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)
        return 0o666 & ~mask

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path):
    return os.stat(path).st_mode & 0o777


def test_files_get_the_usual_mode_not_mkstemps(tmp_path, umask):
    x, y = circles()
    for mask in (0o022, 0o002):
        expected = umask(mask)
        written = [plot.history({"loss": ramp(1, 0.1)}, tmp_path / f"h{mask}.png"),
                   plot.decision_boundary(FakeModel(), x, y, tmp_path / f"d{mask}.svg",
                                          resolution=30)]
        recorder = recording(x, y)
        written += [recorder.save(tmp_path / f"r{mask}.gif"),
                    recorder.save(tmp_path / f"r{mask}.pdf")]
        assert [mode(p) for p in written] == [expected] * 4
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left
    assert (tmp_path / "r18.gif").read_bytes()[:6] == b"GIF89a"
    assert (tmp_path / "d18.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert (tmp_path / "r18.pdf").read_bytes()[:5] == b"%PDF-"


def recording(x, y, epochs=3, **kwargs):
    recorder = plot.DecisionBoundaryRecorder(x, y, resolution=30, **kwargs)
    recorder.set_model(FakeModel())
    for epoch in range(epochs):
        recorder.on_epoch_end(epoch)
    recorder.on_train_end()
    return recorder


def test_a_missing_directory_fails_before_drawing(tmp_path, monkeypatch):
    def no_drawing(*args, **kwargs):
        raise AssertionError("drew before checking the path")

    monkeypatch.setattr(plot, "_figure", no_drawing)
    x, y = circles()
    model = FakeModel()
    target = tmp_path / "no" / "such" / "curves.png"
    with pytest.raises(OutputPathError, match="the directory .* of '.*/no/such/curves.png'"):
        plot.history({"loss": [1.0, 0.5]}, target)
    with pytest.raises(OutputPathError, match="/no/such/regions.png"):
        plot.decision_boundary(model, x, y, tmp_path / "no" / "such" / "regions.png")
    assert model.calls == 0
    recorder = recording(x, y)
    with pytest.raises(OutputPathError, match="/no/such/regions.gif"):
        recorder.save(tmp_path / "no" / "such" / "regions.gif")
    with pytest.raises(ValueError, match=r"expected a file name ending in \.png.*got '.*\.txt'"):
        plot.history({"loss": [1.0, 0.5]}, tmp_path / "curves.txt")


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "curves.png"
    target.write_bytes(b"the previous plot")

    def broken(self, f, **kwargs):
        f.write(b"half a png")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        plot.history({"loss": [1.0, 0.5]}, target)
    assert target.read_bytes() == b"the previous plot"
    assert os.listdir(tmp_path) == ["curves.png"]


@pytest.mark.parametrize("curve,scale", [
    (ramp(3600, 1), "log"),  # a regression loss: linear would flatten all but the start
    (ramp(0.7, 0.1), "linear"),
    (ramp(31, 1), "log"),
    (ramp(29, 1), "linear"),
    ([5.0, 0.0, 0.0], "linear"),  # not all positive
])
def test_loss_scale(curve, scale):
    fig = plot._history_figure({"loss": curve, "val_loss": curve})
    assert fig.axes[0].get_yscale() == scale


def test_log_scale_rule():
    assert plot.log_scale("val_loss", [100.0, 50.0], [2.0])  # validation counts too
    assert plot.log_scale("mae", ramp(60, 1))  # error metrics as losses
    assert not plot.log_scale("accuracy", ramp(0.01, 0.99))  # never for an accuracy
    assert not plot.log_scale("loss", [numpy.nan, 100.0, 1.0])


def test_history_labels_and_legend():
    data = {"loss": ramp(3600, 50), "mae": ramp(60, 5), "val_loss": ramp(3500, 60),
            "val_mae": ramp(59, 6)}
    fig = plot._history_figure(data)
    loss_ax, mae_ax = fig.axes
    assert loss_ax.get_xlabel() == "epoch" and mae_ax.get_xlabel() == "epoch"
    assert loss_ax.get_ylabel() == "loss (log scale)" and mae_ax.get_ylabel() == "mae"
    assert loss_ax.get_title() == "loss"
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training",
                                                                       "validation"]


def legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_boundary_labels_legend_and_title():
    x, y = circles()
    fig = plot._boundary_figure(FakeModel(), x, y, resolution=30,
                                names=plot.Labels(class_names=["outer", "inner"]))
    ax = fig.axes[0]
    assert legend(fig) == ["outer", "inner"]
    assert ax.get_legend().get_title().get_text() == "class"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("feature 0", "feature 1")
    assert ax.get_title() == "decision regions"
    fig = plot._boundary_figure(FakeModel(), x, y, resolution=30, names=plot.Labels(
        title="circles", feature_names=["width", "height"]))
    assert legend(fig) == ["class 0", "class 1"]
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("width", "height")
    assert fig.axes[0].get_title() == "circles"
    # The model's own class names (a CLI model trained on text labels) by default.
    fig = plot._boundary_figure(FakeModel(class_names=["no", "yes"]), x, y, resolution=30)
    assert legend(fig) == ["no", "yes"]


def test_boundary_of_three_classes_and_text_labels():
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(90, 2))
    names = numpy.array(["ant", "bee", "cat"])[rng.integers(0, 3, 90)]
    fig = plot._boundary_figure(FakeModel(classes=3), x, names, resolution=30)
    assert legend(fig) == ["ant", "bee", "cat"]
    one_hot = numpy.eye(3)[rng.integers(0, 3, 90)]
    fig = plot._boundary_figure(FakeModel(classes=3), x, one_hot, resolution=30,
                                names=plot.Labels(class_names=["a", "b", "c"]))
    assert legend(fig) == ["a", "b", "c"]


def test_points_stand_out_from_every_region():
    """Each point's fill is a saturated class colour, edged in white, on a pale region."""
    from matplotlib.colors import to_rgb

    x, y = circles()
    fig = plot._boundary_figure(FakeModel(), x, y, resolution=30)
    ax = fig.axes[0]
    region = ax.images[0].get_array()
    assert region.min() > 0.6  # no region darker than a pale tint
    points = ax.collections[-2:]
    for scatter in points:
        face = numpy.array(to_rgb(scatter.get_facecolor()[0]))
        assert face.min() < 0.3 and face.max() - face.min() > 0.4  # saturated
        assert numpy.allclose(scatter.get_edgecolor()[0][:3], 1.0)  # white edge


def test_recorder_titles_name_the_epoch_and_pass_class_names():
    x, y = circles()
    recorder = recording(x, y, epochs=4, class_names=["out", "in"])
    assert [epoch for epoch, _ in recorder.frames] == [1, 2, 3, 4]
    fig = recorder._frame_figure(-1)
    assert fig.axes[0].get_title() == "decision regions, epoch 4"
    assert legend(fig) == ["out", "in"]


def test_check_available_without_matplotlib(monkeypatch, tmp_path):
    plot.check_available("--plot")  # installed here: no error
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as error:
        plot.check_available("--plot")
    message = str(error.value)
    assert message.startswith("--plot: plotting needs matplotlib")
    assert "pip install matplotlib (or pip install '.[plot]' in the dnn checkout)" in message
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot.history({"loss": [1.0]}, tmp_path / "curves.png")
    assert not list(tmp_path.iterdir())
