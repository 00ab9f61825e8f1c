"""Plots with matplotlib (the ``plot`` extra): training curves and the decision
regions of a 2-D classifier, also as frames taken during training (GIF)."""
from __future__ import annotations

import numpy

from .callbacks import Callback


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install matplotlib (or "
                          "pip install '.[plot]' in the dnn checkout)") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _history_dict(h):
    data = getattr(h, "history", h)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"history: expected a History (from fit) or a non-empty dict of "
                         f"per-epoch lists; got {type(h).__name__}")
    return data


def history(h, path, dpi=100):
    """Loss and metric curves, training and validation, one panel per quantity.

    Saved to ``path`` (PNG by extension); returns the path.
    """
    data = _history_dict(h)
    plt = _pyplot()
    names = [k for k in data if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = numpy.arange(1, len(data[name]) + 1)
        ax.plot(epochs, data[name], label=f"train {name}")
        if "val_" + name in data:
            ax.plot(epochs, data["val_" + name], label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _grid(x, resolution):
    lo, hi = x.min(0), x.max(0)
    pad = 0.1 * (hi - lo)
    gx, gy = numpy.meshgrid(numpy.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
                            numpy.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))
    return gx, gy, numpy.column_stack([gx.ravel(), gy.ravel()])


def _class_map(model, points):
    p = model.predict(points, batch_size=4096)
    return p.argmax(1) if p.shape[1] > 1 else (p[:, 0] > 0.5).astype(int), \
        p.max(1) if p.shape[1] > 1 else p[:, 0]


def _draw(ax, gx, gy, classes, scores, x, y, title):
    binary = classes.max() <= 1 and scores is not None
    if binary:
        ax.contourf(gx, gy, scores.reshape(gx.shape), levels=numpy.linspace(0, 1, 11),
                    cmap="RdBu_r", alpha=0.6)
        ax.contour(gx, gy, scores.reshape(gx.shape), levels=[0.5], colors="k", linewidths=1)
    else:
        ax.contourf(gx, gy, classes.reshape(gx.shape), alpha=0.4, cmap="viridis")
    ax.scatter(x[:, 0], x[:, 1], c=y, s=8, cmap="RdBu_r" if binary else "viridis",
               edgecolors="k", linewidths=0.2)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _check_2d(x, y):
    x = numpy.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x: expected 2-D inputs of shape (n, 2) for a decision-boundary plot; "
                         f"got shape {x.shape}")
    y = numpy.asarray(y)
    if y.ndim == 2:
        y = y.argmax(1) if y.shape[1] > 1 else y[:, 0]
    return x, y


def decision_boundary(model, x, y, path, resolution=200, dpi=100, title=None):
    """The classifier's decision regions over the data (2-D inputs). Returns the path."""
    x, y = _check_2d(x, y)
    plt = _pyplot()
    gx, gy, pts = _grid(x, resolution)
    classes, scores = _class_map(model, pts)
    fig, ax = plt.subplots(figsize=(5, 5))
    _draw(ax, gx, gy, classes, scores, x, y, title or "decision regions")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


class DecisionBoundaryRecorder(Callback):
    """Takes the decision regions every ``every`` epochs during fit; ``save(path)``
    writes the last frame as PNG, or every frame as an animated GIF."""

    def __init__(self, x, y, every=1, resolution=120, animate=True):
        self.x, self.y = _check_2d(x, y)
        self.every = max(1, int(every))
        self.resolution = resolution
        self.animate = animate
        self.frames = []  # (epoch, classes, scores)
        self.gx, self.gy, self.points = _grid(self.x, resolution)

    def _capture(self, epoch):
        classes, scores = _class_map(self.model, self.points)
        self.frames.append((epoch, classes, scores))

    def on_epoch_end(self, epoch, logs=None):
        if self.animate and epoch % self.every == 0:
            self._capture(epoch + 1)
        self.last_epoch = epoch + 1

    def on_train_end(self, logs=None):
        if not self.frames or self.frames[-1][0] != getattr(self, "last_epoch", 0):
            self._capture(getattr(self, "last_epoch", 0))

    def save(self, path, dpi=80):
        if not self.frames:
            raise ValueError("DecisionBoundaryRecorder: no frames; use it as a fit callback")
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5, 5))
        if not str(path).lower().endswith(".gif"):
            epoch, classes, scores = self.frames[-1]
            _draw(ax, self.gx, self.gy, classes, scores, self.x, self.y, f"epoch {epoch}")
            fig.tight_layout()
            fig.savefig(path, dpi=dpi)
            plt.close(fig)
            return path
        from matplotlib.animation import FuncAnimation, PillowWriter

        def frame(i):
            ax.clear()
            epoch, classes, scores = self.frames[i]
            _draw(ax, self.gx, self.gy, classes, scores, self.x, self.y, f"epoch {epoch}")

        anim = FuncAnimation(fig, frame, frames=len(self.frames))
        anim.save(path, writer=PillowWriter(fps=5), dpi=dpi)
        plt.close(fig)
        return path
