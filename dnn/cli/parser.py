"""The ``dnn`` command's argument parser."""
from __future__ import annotations

import argparse

from ..optimizers import OPTIMIZERS
from ..version import __version__
from .data_sources import DATASETS
from .errors import UsageError
from .task import TASKS


def parse_layers(text):
    try:
        units = [int(u) for u in text.split(",")]
    except ValueError:  # a word, or an empty item as in 16,,16
        units = None
    if not units or any(u <= 0 for u in units):
        raise UsageError(f"--layers: expected comma-separated positive integers such as "
                         f"64,64; got {text!r}")
    return units


def _listed(names):
    """``"a, b or c"``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (as "(default: ...)"), except a required one's."""

    def _get_help_string(self, action):
        if action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    parser = argparse.ArgumentParser(prog="dnn", description="Train multi-layer perceptrons "
                                     "on NumPy (CPU) or CuPy (NVIDIA GPU).")
    parser.add_argument("--version", action="version", version=f"dnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_inference(sub)
    export = sub.add_parser("export", help="write a saved model as ONNX",
                            formatter_class=_Formatter)
    export.add_argument("model", help="a model .npz written by --save or model.save")
    export.add_argument("out", help="the .onnx file to write")
    sub.add_parser("info", help="versions, backends, devices and BLAS")
    bench = sub.add_parser("bench", help="throughput benchmarks (dnn bench --help)",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _add_train(sub):
    train = sub.add_parser("train", help="train a network (default: the circles example)",
                           formatter_class=_Formatter)
    train.add_argument("data", nargs="?", default="circles",
                       help=f"dataset name ({', '.join(DATASETS)}) or a .csv/.tsv/.npz/.idx "
                       f"path")
    _add_file_options(train, "CSV target column (name or position; None: the last column), "
                      "NPZ key of y, or the labels IDX file")
    train.add_argument("--task", default="auto", choices=TASKS,
                       help="auto: regression for values that are not whole numbers, "
                       "classification for text labels, 0/1, and whole numbers from 0 with "
                       "at most 1000 distinct values, at most 10%% of the rows (5%% above "
                       "1000 rows); regression otherwise")
    train.add_argument("--layers", default="auto", help="hidden layer widths such as 64,64; "
                       "auto: the circles example's 4,6,6,4 on circles, else two layers of "
                       "the power of two >= 2 x (features + outputs), within [16, 256]")
    train.add_argument("--activation", default="relu", help="hidden activation")
    train.add_argument("--loss", default="auto", help="loss name; auto: from the targets "
                       "(0/1: binary_crossentropy, other integers: "
                       "sparse_categorical_crossentropy, reals: mse)")
    train.add_argument("--optimizer", default="adam", help=_listed(OPTIMIZERS))
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate (None: the optimizer's default)")
    train.add_argument("--epochs", type=int, default=50, help="passes over the training set")
    train.add_argument("--batch-size", type=int, default=32, help="samples per step")
    train.add_argument("--val-split", type=float, default=0.0,
                       help="fraction of the training split held out for validation")
    train.add_argument("--test-split", type=float, default=0.1,
                       help="fraction of the data held out for the final test (0: none, "
                       "train on all of it)")
    train.add_argument("--backend", default="auto", help="numpy, cupy, cupy:N or auto")
    train.add_argument("--seed", type=int, default=0,
                       help="seed of the data, split, weights and shuffling")
    train.add_argument("--dtype", default="float32",
                       help="float32, float64 or mixed_bfloat16")
    train.add_argument("--no-standardize", action="store_true",
                       help="leave features unscaled (otherwise a Normalization layer, "
                            "adapted to the train split, is the model's first layer)")
    train.add_argument("--save", default=None, help="write the trained model to this .npz "
                       "path (a Keras archive is written from Python: model.save(\"m.keras\"))")
    train.add_argument("--plot", default=None, help="write loss/metric curves to this PNG")
    train.add_argument("--boundary", default=None, help="2-D data: write the decision regions "
                       "to this PNG, or a GIF of their evolution during training")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 silent, 1 progress bar, 2 one line per epoch")


def _add_inference(sub):
    for name, helptext in (("evaluate", "evaluate a saved model on data"),
                           ("predict", "write a saved model's predictions to CSV")):
        p = sub.add_parser(name, help=helptext, formatter_class=_Formatter)
        p.add_argument("model", help="a model .npz written by --save or model.save")
        p.add_argument("data", help="dataset name or a .csv/.tsv/.npz/.idx path")
        _add_file_options(p, "as for train" if name == "evaluate" else
                          "as for train; a CSV may lack the target column")
        p.add_argument("--backend", default="auto", help="numpy, cupy, cupy:N or auto")
        if name == "predict":
            p.add_argument("--out", required=True, help="the predictions: a .csv file (a "
                           ".tsv one for tabs), or - for standard output")


def _add_file_options(p, target_help):
    p.add_argument("--target", default=None, help=target_help)
    p.add_argument("--delimiter", default=None,
                   help="CSV delimiter (None: detected from , ; tab |; tab for .tsv)")
    p.add_argument("--encoding", default=None,
                   help="CSV encoding (None: UTF-8, or cp1252 with a note when the file "
                   "is not UTF-8)")
    p.add_argument("--x-key", default="x", help="NPZ key of x")


