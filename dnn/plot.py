"""Plots with matplotlib (the ``plot`` extra): training curves and the decision
regions of a 2-D classifier, also as frames taken during training (GIF).

Files are written atomically (``dnn.utils.files.atomic_write``): a crash mid-write leaves the
previous file, and the path is checked before any drawing. The format follows the
suffix: .png, .svg, .pdf (.jpg and the other formats matplotlib knows work too), and
.gif for ``DecisionBoundaryRecorder.save``'s animation.
"""
from __future__ import annotations

import collections
import os

import numpy

from .callbacks import Callback
from .utils.files import OutputPathError, atomic_write, check_output_path

# A loss curve whose largest value is more than LOG_SPAN times its smallest gets a log
# scale: a regression loss that starts near 3600 would otherwise flatten all the rest.
LOG_SPAN = 30.0

_INSTALL_HINT = "pip install matplotlib (or pip install '.[plot]' in the dnn checkout)"


def check_available(what="plotting"):
    """Raise ImportError, naming ``what`` (e.g. ``"--plot"``) and how to install it,
    unless matplotlib can be imported. Cheap; the CLI calls it before training."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{what}: plotting needs matplotlib: {_INSTALL_HINT}") from exc


def _figure(width, height):
    """A Figure outside pyplot: no global state, no GUI backend, nothing to close."""
    check_available("dnn.plot")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


COMMON_FORMATS = ("png", "svg", "pdf")


def _check_path(path, extra=(), what="path"):
    """Check ``path`` before any drawing (see ``dnn.utils.files.check_output_path``:
    its directory takes a file) and return the format its suffix names (png when it
    has none). ``what`` names the argument in errors (the CLI passes its option)."""
    check_available(what if what != "path" else "dnn.plot")
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".") or "png"
    supported = sorted(set(FigureCanvasBase.get_supported_filetypes()) | set(extra))
    if suffix not in supported:
        common = [f for f in COMMON_FORMATS + tuple(extra) if f in supported]
        others = ", ".join("." + f for f in supported if f not in common)
        listed = ", ".join("." + f for f in common[:-1]) + " or ." + common[-1]
        raise OutputPathError(f"{what}: expected a file name ending in {listed} (matplotlib "
                              f"also writes {others}); got {os.fspath(path)!r}")
    check_output_path(path, what)
    return suffix


def _save(fig, path, fmt, dpi):
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi), "path")
    return path


def figure(width, height):
    """A matplotlib Figure of ``width`` x ``height`` inches, outside pyplot, for plots of
    one's own (the benchmarks draw theirs on it); write it with ``save_figure``."""
    return _figure(width, height)


def check_figure_path(path, what="path", animated=False):
    """Raise before any work unless a figure can be written at ``path`` (its directory
    takes a file, and matplotlib writes the format its suffix names; ``animated``: a
    GIF too, as ``DecisionBoundaryRecorder.save`` writes); returns the format."""
    return _check_path(path, ("gif",) if animated else (), what)


def save_figure(fig, path, dpi=100):
    """Write ``fig`` to ``path`` atomically, in the format its suffix names."""
    return _save(fig, path, _check_path(path), dpi)


# ---------------------------------------------------------------------------- curves
def _history_dict(h):
    data = getattr(h, "history", h)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"history: expected a History (from fit) or a non-empty dict of "
                         f"per-epoch lists; got {type(h).__name__}")
    return data


def _is_error_curve(name):
    """Losses and error metrics (smaller is better, can span decades), not accuracies."""
    return "loss" in name or "error" in name or name in ("mae", "mse", "rmse", "msle")


def log_scale(name, *curves):
    """Whether the panel of ``name`` gets a log y-axis: it is a loss (or an error metric
    such as mae), all its values (training and validation) are positive and finite,
    and the largest is more than ``LOG_SPAN`` (30, about 1.5 decades) times the
    smallest."""
    values = numpy.concatenate([numpy.asarray(c, dtype=float).ravel() for c in curves])
    if not _is_error_curve(name) or values.size == 0 or not numpy.isfinite(values).all():
        return False
    return bool(values.min() > 0 and values.max() / values.min() > LOG_SPAN)


def _plain(value, _position=None):
    return f"{value:g}"


def _plain_2_5(value, _position=None):
    """Labels for the minor ticks at 2 and 5 times a power of ten only."""
    mantissa = value / 10 ** numpy.floor(numpy.log10(value)) if value > 0 else 0
    return f"{value:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def _history_figure(h):
    """The Figure of ``history``: one panel per quantity (loss, then each metric), each
    with its training curve and, where there is one, its validation curve."""
    data = _history_dict(h)
    names = [k for k in data if not k.startswith("val_")]
    fig = _figure(5 * len(names), 3.6)
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        curves = [("training", data[name], "-")]
        if "val_" + name in data:
            curves.append(("validation", data["val_" + name], "--"))
        for label, values, style in curves:
            ax.plot(numpy.arange(1, len(values) + 1), values, style, label=label,
                    marker="o" if len(values) < 3 else None)
        if log_scale(name, *(values for _, values, _ in curves)):
            ax.set_yscale("log")
            ax.set_ylabel(f"{name} (log scale)")
            # Plain numbers (100, 200, 500), not powers of ten with unlabelled ticks.
            ax.yaxis.set_major_formatter(FuncFormatter(_plain))
            ax.yaxis.set_minor_formatter(FuncFormatter(_plain_2_5))
        else:
            ax.set_ylabel(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    return fig


def history(h, path, dpi=100):
    """Loss and metric curves: one panel per quantity with the training and (if any)
    validation curves, axis labels and a legend. A loss or error-metric panel uses a
    log y-scale when its values are all positive and span more than a factor of 30
    (see ``log_scale``), otherwise a linear one.

    ``h``: the History from ``fit`` or a dict of per-epoch lists. Written atomically
    to ``path`` (format from the suffix: .png, .svg, .pdf); returns the path.
    """
    data = _history_dict(h)
    fmt = _check_path(path)
    return _save(_history_figure(data), path, fmt, dpi)


# ------------------------------------------------------------------ decision regions
def _grid(x, resolution):
    lo, hi = x.min(0), x.max(0)
    pad = 0.1 * numpy.where(hi > lo, hi - lo, 1.0)
    gx, gy = numpy.meshgrid(numpy.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
                            numpy.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))
    return gx, gy, numpy.column_stack([gx.ravel(), gy.ravel()])


def _predict(model, points):
    return numpy.asarray(model.predict(points, batch_size=4096), dtype=numpy.float32)


def _classes_and_confidence(p):
    """The predicted class of each point, and how sure the model is, from 0 (a tie)
    to 1 (certain)."""
    if p.shape[1] == 1:
        p = numpy.clip(p[:, 0], 0.0, 1.0)
        return (p > 0.5).astype(int), numpy.abs(2 * p - 1)
    k = p.shape[1]
    top = p.max(1)
    return p.argmax(1), numpy.clip((top - 1 / k) / (1 - 1 / k), 0.0, 1.0)


def _check_2d(x, y):
    x = numpy.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x: expected 2-D inputs of shape (n, 2) for a decision-boundary plot; "
                         f"got shape {x.shape}")
    y = numpy.asarray(y)
    if y.ndim == 2:
        y = y.argmax(1) if y.shape[1] > 1 else y[:, 0]
    if len(y) != len(x):
        raise ValueError(f"y: expected {len(x)} labels, one per row of x; got {len(y)}")
    return x, y


def _label_indices(y):
    """Class indices 0..K-1 for the labels, and default names: integer labels are
    their own indices; other labels (text) are numbered in sorted order."""
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and numpy.array_equal(y, numpy.round(y))
                                  and (y >= 0).all()):
        index = y.astype(int)
        return index, None
    values, index = numpy.unique(y, return_inverse=True)
    return index, [str(v) for v in values]


def _class_colors(count):
    from matplotlib import colormaps

    # tab10's saturated colours (blue, orange, green, red...) are told apart by most
    # colour-blind readers; beyond ten classes, spread a cyclic map.
    cmap = colormaps["tab10"] if count <= 10 else colormaps["hsv"]
    return numpy.array([cmap(i if count <= 10 else i / count)[:3] for i in range(count)])


def _names(model, class_names, feature_names, count, label_names):
    classes = class_names or getattr(model, "class_names", None) or label_names
    classes = list(classes or [])
    classes += [f"class {i}" for i in range(len(classes), count)]
    features = feature_names
    if features is None:
        saved = getattr(model, "metadata", {}).get("features")
        features = saved if saved and len(saved) == 2 else None
    features = list(features or ["feature 0", "feature 1"])
    if len(features) != 2:
        raise ValueError(f"feature_names: expected 2 names; got {feature_names!r}")
    return [str(c) for c in classes], [str(f) for f in features]


def _draw(ax, grid, p, x, labels, names):
    """Regions in pale class colours (paler where the model is unsure), the boundary
    as a dark line, and the points in the saturated class colours with white edges:
    a point stands out on any region, and its own colour says its true class.
    ``grid``: (gx, gy); ``names``: (class names, feature names, title)."""
    gx, gy = grid
    class_names, feature_names, title = names
    classes, confidence = _classes_and_confidence(p)
    count = len(class_names)
    colors = _class_colors(count)
    # At most 35% of the class colour, so that the saturated points stay visible on it.
    strength = (0.10 + 0.25 * confidence)[:, None]
    region = 1.0 - strength * (1.0 - colors[numpy.minimum(classes, count - 1)])
    extent = (gx[0, 0], gx[0, -1], gy[0, 0], gy[-1, 0])
    ax.imshow(region.reshape(gx.shape + (3,)), extent=extent, origin="lower",
              interpolation="bilinear", aspect="auto")
    grid = classes.reshape(gx.shape)
    if p.shape[1] == 1 and grid.min() != grid.max():
        ax.contour(gx, gy, p[:, 0].reshape(gx.shape), levels=[0.5], colors="0.2",
                   linewidths=1.2)
    elif grid.min() != grid.max():
        # Each class's outline, where its probability meets the best other class's: a
        # smooth line (a contour of the class index would be a staircase, and would
        # draw the border of classes 0 and 2 twice, across the 0.5 and 1.5 levels).
        for k in numpy.unique(grid):
            margin = p[:, k] - numpy.delete(p, k, axis=1).max(1)
            ax.contour(gx, gy, margin.reshape(gx.shape), levels=[0.0], colors="0.2",
                       linewidths=1.2)
    for k in range(count):
        rows = labels == k
        ax.scatter(x[rows, 0], x[rows, 1], s=18, color=colors[k], edgecolors="white",
                   linewidths=0.6, label=class_names[k], zorder=3)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.locator_params(nbins=6)  # 0.25 steps crowd the ticks of a 5-inch plot
    ax.set_xlabel(feature_names[0])
    ax.set_ylabel(feature_names[1])
    ax.set_title(title)
    # Below the axes, so that it never hides a point.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(count, 4),
              frameon=False, fontsize="small", markerscale=1.5, title="class",
              title_fontsize="small")


# What a decision-region figure is titled, and what its classes and axes are called
# (None: the model's class names or the labels, "feature 0"/"feature 1").
Labels = collections.namedtuple("Labels", "title class_names feature_names",
                                defaults=(None, None, None))


def _boundary_figure(model, x, y, resolution=200, names=Labels(), prediction=None):
    """The Figure of ``decision_boundary``; ``names``: its ``Labels``; ``prediction``:
    ``(p, grid)`` already made (a recorder's frame), else predicted here."""
    title, class_names, feature_names = names
    p, grid = prediction or (None, None)
    x, y = _check_2d(x, y)
    labels, label_names = _label_indices(y)
    gx, gy, points = grid or _grid(x, resolution)
    if p is None:
        p = _predict(model, points)
    outputs = 2 if p.shape[1] == 1 else p.shape[1]
    count = max(outputs, int(labels.max(initial=0)) + 1, len(class_names or []))
    classes, features = _names(model, class_names, feature_names, count, label_names)
    fig = _figure(5, 5)
    _draw(fig.add_subplot(), (gx, gy), p, x, labels,
          (classes, features, title or "decision regions"))
    fig.tight_layout()
    return fig


def decision_boundary(model, x, y, path, resolution=200, dpi=100, title=None,
                      class_names=None, feature_names=None):
    """The classifier's decision regions over the data (2-D inputs): regions in pale
    class colours, the points in saturated ones, a legend of the classes (named by
    ``class_names``, else the model's ``class_names``, else the labels), axis labels
    (``feature_names``, else the names the CLI saved with the model, else
    "feature 0"/"feature 1") and a title. Written atomically to ``path`` (format from
    the suffix); returns the path."""
    fmt = _check_path(path)
    fig = _boundary_figure(model, x, y, resolution, Labels(title, class_names, feature_names))
    return _save(fig, path, fmt, dpi)


class DecisionBoundaryRecorder(Callback):
    """Takes the decision regions every ``every`` epochs during fit; ``save(path)``
    writes the last frame (.png, .svg, .pdf), or every frame as an animated GIF
    (.gif). ``class_names`` and ``feature_names`` as for ``decision_boundary``."""

    def __init__(self, x, y, every=1, resolution=120, animate=True, class_names=None,
                 feature_names=None):
        self.x, self.y = _check_2d(x, y)
        self.every = max(1, int(every))
        self.resolution = resolution
        self.animate = animate
        self.class_names = class_names
        self.feature_names = feature_names
        self.frames = []  # (epoch, predictions over the grid)
        self.grid = _grid(self.x, resolution)

    def _capture(self, epoch):
        self.frames.append((epoch, _predict(self.model, self.grid[2])))

    def on_epoch_end(self, epoch, logs=None):
        if self.animate and epoch % self.every == 0:
            self._capture(epoch + 1)
        self.last_epoch = epoch + 1

    def on_train_end(self, logs=None):
        if not self.frames or self.frames[-1][0] != getattr(self, "last_epoch", 0):
            self._capture(getattr(self, "last_epoch", 0))

    def _frame_figure(self, index):
        epoch, p = self.frames[index]
        names = Labels(f"decision regions, epoch {epoch}", self.class_names,
                       self.feature_names)
        return _boundary_figure(getattr(self, "model", None), self.x, self.y,
                                names=names, prediction=(p, self.grid))

    def save(self, path, dpi=80, fps=5):
        """Write the frames to ``path``; returns the path."""
        if not self.frames:
            raise ValueError("DecisionBoundaryRecorder: no frames; use it as a fit callback")
        fmt = _check_path(path, extra=("gif",))
        if fmt != "gif":
            return _save(self._frame_figure(-1), path, fmt, dpi)
        images = [_rendered(self._frame_figure(i), dpi) for i in range(len(self.frames))]
        # Each frame is drawn on its own and the GIF written by Pillow straight into the
        # atomic writer's file: no animation writer that would want a real file name.
        atomic_write(path, lambda f: images[0].save(
            f, format="GIF", save_all=True, append_images=images[1:],
            duration=int(1000 / fps), loop=0), "path")
        return path


def _rendered(fig, dpi):
    """The figure as a Pillow image (Pillow comes with matplotlib)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(numpy.asarray(canvas.buffer_rgba())).convert("RGB")
