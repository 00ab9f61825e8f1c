"""The lines ``dnn train`` prints before training (data, target, task, split, layers),
each fitted to 80 columns, or to a narrower terminal."""
from __future__ import annotations

import os
import shutil
import sys
import textwrap

import numpy

WIDTH = 80
MIN_WIDTH = 40


def header_width(stream=None):
    """80 columns, or the terminal's width when ``stream`` is a narrower terminal."""
    stream = stream or sys.stdout
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return WIDTH
    return max(MIN_WIDTH, min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns))


def names_text(names, limit=4):
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit
                                       else "")


def task_text(loss, units, out_act, class_names):
    if loss == "binary_crossentropy":
        kind = "binary classification"
    elif loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        kind = f"{units}-class classification"
    else:
        return f"regression of {units} value{'s' * (units > 1)}, loss {loss}, linear output"
    names = class_names or [str(c) for c in range(max(units, 2))]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"{kind} ({shown}), loss {loss}, {units} {out_act} output{'s' * (units > 1)}"


def memmap_notes(x, model):
    """A note when ``x`` is a memory-mapped array (a large .npy file, a large CSV's
    cache): training streams it from disk (``dnn.training.host_source``), reading each
    batch's rows as the step needs them and casting them to the model's compute dtype;
    the file is never loaded or converted whole."""
    if not isinstance(x, numpy.memmap):
        return []
    name = os.path.basename(x.filename) if x.filename else "a memmap"
    cast = "" if x.dtype == model.compute_dtype else f" and cast to {model.compute_dtype}"
    mib = x.nbytes / 2**20
    size = f"{mib:,.0f} MiB" if mib >= 1 else "under 1 MiB"
    return [f"x streams from {name} ({size} of {x.dtype}): each batch is read{cast} as "
            f"the step needs it, never the whole file"]


class Header:
    """Prints lines no wider than ``width``: a line that would be longer is wrapped,
    its continuation indented."""

    def __init__(self, width=None, stream=None):
        self.stream = stream or sys.stdout
        self.width = width or header_width(self.stream)

    def __call__(self, text):
        lead = " " * (len(text) - len(text.lstrip(" ")))
        lines = textwrap.wrap(text.strip(), self.width, initial_indent=lead,
                              subsequent_indent=lead + "    ", break_on_hyphens=False)
        print("\n".join(lines or [""]), file=self.stream)

    def data_line(self, source, samples, features, feature_names):
        """``data: SOURCE: N samples, F features (names...)``, with as many names as
        fit the width (a long path gives way to its file name first); names that do
        not fit there get a line of their own."""
        head = f"data: {source}: {samples} samples, {features} features"
        if len(head) > self.width:
            head = f"data: {os.path.basename(source)}: {samples} samples, {features} features"
        names = feature_names or []
        for limit in range(len(names), 0, -1):
            line = f"{head} ({names_text(names, limit)})"
            if len(line) <= self.width:
                return self(line)
        self(head)
        if names:  # on a line of their own, as many as fit (at least one)
            shown = next((f"  features: {names_text(names, limit)}"
                          for limit in range(len(names), 1, -1)
                          if len(f"  features: {names_text(names, limit)}") <= self.width),
                         f"  features: {names_text(names, 1)}")
            self(shown)
        return None
