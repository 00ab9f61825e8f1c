"""The ``dnn`` command: train, evaluate, predict, info and bench.

With no arguments, ``dnn train`` reproduces seed 002: a 2-4-6-6-4-1 ReLU network
trained with Adam and binary cross-entropy on two concentric circles.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy

from . import backends

from .version import __version__
from .data import (Standardizer, load_csv, load_digits, load_idx, load_npz, make_circles,
                   make_moons, make_spirals, make_student, make_xor, train_test_split)
from .model_file import ModelFileError

# name -> (loader(seed), description)
DATASETS = {
    "circles": (lambda s: make_circles(1000, factor=0.5, noise=0.08, seed=s),
                "two concentric circles, 1000 samples (seed 002)"),
    "moons": (lambda s: make_moons(1000, noise=0.2, seed=s), "two interleaving half moons"),
    "xor": (lambda s: make_xor(400, noise=0.15, seed=s), "four clusters labelled by XOR"),
    "spirals": (lambda s: make_spirals(900, n_classes=3, noise=0.2, seed=s),
                "three interleaved spiral arms"),
    "student": (lambda s: make_student(1000, seed=s),
                "pass/fail from lectures, homework hours and disconnections"),
    "student-score": (lambda s: make_student(1000, regression=True, seed=s),
                      "the student example as score regression"),
    "digits": (lambda s: load_digits(), "scikit-learn's 8x8 digits (needs scikit-learn)"),
}


class UsageError(Exception):
    """A user error reported as one line, exit status 2."""


def load_data(source, target=None, seed=0):
    """``(x, y)`` from a dataset name or a .csv / .npz / .idx(.gz) path."""
    if source in DATASETS:
        return DATASETS[source][0](seed)
    if not os.path.exists(source):
        names = ", ".join(DATASETS)
        raise UsageError(f"data: expected a dataset name ({names}) or an existing .csv, .npz "
                         f"or .idx file; got {source!r}")
    lower = source.lower()
    if lower.endswith(".csv"):
        return load_csv(source, target=-1 if target is None else target)
    if lower.endswith(".npz"):
        return load_npz(source, y_key=target or "y")
    if lower.endswith((".idx", ".idx.gz")) or "-idx" in lower or "ubyte" in lower:
        if target is None:
            raise UsageError("--target: expected the labels IDX file for IDX images; got none")
        x = load_idx(source)
        return x.reshape(x.shape[0], -1).astype(numpy.float64), load_idx(target)
    raise UsageError(f"data: expected a .csv, .npz or .idx(.gz) file; got {source!r}")


def infer_task(y):
    """``(loss, output_units, output_activation)`` from the targets' values."""
    y = numpy.asarray(y)
    integral = y.dtype.kind in "iub" or (y.dtype.kind == "f" and
                                         numpy.array_equal(y, numpy.round(y)))
    if y.ndim == 1 and integral:
        values = numpy.unique(y)
        if set(values.tolist()) <= {0, 1}:
            return "binary_crossentropy", 1, "sigmoid"
        if values.min() >= 0:
            return "sparse_categorical_crossentropy", int(values.max()) + 1, "softmax"
    return "mse", 1 if y.ndim == 1 else y.shape[1], "linear"


def _parse_layers(text):
    try:
        units = [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        units = None
    if not units or any(u <= 0 for u in units):
        raise UsageError(f"--layers: expected comma-separated positive integers such as "
                         f"64,64; got {text!r}")
    return units


def _build_parser():
    parser = argparse.ArgumentParser(prog="dnn", description="Train multi-layer perceptrons "
                                     "on NumPy (CPU) or CuPy (NVIDIA GPU).")
    parser.add_argument("--version", action="version", version=f"dnn {__version__}")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a network (default: seed 002's circles)")
    train.add_argument("data", nargs="?", default="circles",
                       help=f"dataset name ({', '.join(DATASETS)}) or a .csv/.npz/.idx path")
    train.add_argument("--target", help="CSV target column (name or position), NPZ key of y, "
                       "or the labels IDX file")
    train.add_argument("--layers", default="4,6,6,4", help="hidden layer widths (default 4,6,6,4)")
    train.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    train.add_argument("--loss", default="auto", help="loss name, or auto (from the targets)")
    train.add_argument("--optimizer", default="adam", help="sgd, adam, adamw or rmsprop")
    train.add_argument("--lr", type=float, default=None, help="learning rate")
    train.add_argument("--epochs", type=int, default=50)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--val-split", type=float, default=0.0)
    train.add_argument("--test-split", type=float, default=0.1)
    train.add_argument("--backend", default=None, help="numpy, cupy, cupy:N or auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--dtype", default="float32")
    train.add_argument("--no-standardize", action="store_true",
                       help="do not scale features (default: standardize on the train split)")
    train.add_argument("--save", help="write the trained model to this .npz path")
    train.add_argument("--plot", help="write loss/metric curves to this PNG")
    train.add_argument("--boundary", help="2-D data: write the decision regions to this "
                       "PNG, or a GIF of their evolution during training")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)

    for name, helptext in (("evaluate", "evaluate a saved model on data"),
                           ("predict", "write a saved model's predictions to CSV")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("model", help="a model .npz written by --save or model.save")
        p.add_argument("data", help="dataset name or a .csv/.npz/.idx path")
        p.add_argument("--target", help="as for train")
        p.add_argument("--backend", default=None)
        if name == "predict":
            p.add_argument("--out", required=True, help="CSV file for the predictions")

    sub.add_parser("info", help="versions, backends, devices and BLAS")
    bench = sub.add_parser("bench", help="throughput benchmarks (python -m dnn.bench)",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _standardize(model_meta, x_train, *others):
    scaler = Standardizer().fit(x_train)
    model_meta["standardizer"] = {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}
    return [scaler.transform(x_train)] + [scaler.transform(o) for o in others]


def _apply_saved_scaling(model, x):
    state = model.metadata.get("standardizer")
    if state is None:
        return x
    x = numpy.asarray(x, dtype=numpy.float64)
    mean = numpy.asarray(state["mean"])
    if x.ndim != 2 or x.shape[1] != mean.shape[0]:
        raise UsageError(f"data: expected {mean.shape[0]} features per sample as at training; "
                         f"got shape {x.shape}")
    return (x - mean) / numpy.asarray(state["scale"])


def cmd_train(args):
    import dnn

    if args.backend:
        dnn.set_backend(args.backend)
    x, y = load_data(args.data, args.target, seed=args.seed)
    hidden = _parse_layers(args.layers)
    loss, units, out_act = infer_task(y)
    if args.loss != "auto":
        loss = args.loss
        if loss == "binary_crossentropy":
            units, out_act = (1 if numpy.ndim(y) == 1 else numpy.shape(y)[1]), "sigmoid"
        elif loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
            classes = int(numpy.max(y)) + 1 if numpy.ndim(y) == 1 else numpy.shape(y)[1]
            units, out_act = classes, "softmax"
        elif loss in ("mse", "mean_squared_error"):
            units, out_act = (1 if numpy.ndim(y) == 1 else numpy.shape(y)[1]), "linear"
    stratify = loss != "mse"
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=args.test_split, seed=args.seed,
                                              stratify=stratify)
    meta = {"data": args.data}
    if not args.no_standardize:
        x_tr, x_te = _standardize(meta, x_tr, x_te)
    layers = [dnn.layers.Dense(u, args.activation) for u in hidden]
    layers.append(dnn.layers.Dense(units, out_act))
    model = dnn.Sequential(layers, input_dim=x_tr.shape[1], seed=args.seed, dtype=args.dtype)
    model.metadata.update(meta)
    opt_kwargs = {} if args.lr is None else {"learning_rate": args.lr}
    metrics = ["mae"] if loss in ("mse", "mean_squared_error") else ["accuracy"]
    model.compile(loss=loss, optimizer=dnn.optimizers.get(args.optimizer, **opt_kwargs),
                  metrics=metrics)
    model.build()
    if args.verbose:
        model.summary()
    callbacks = []
    recorder = None
    if args.boundary:
        from .plot import DecisionBoundaryRecorder

        if x_tr.shape[1] != 2:
            raise UsageError(f"--boundary: expected 2-D inputs; got {x_tr.shape[1]} features")
        recorder = DecisionBoundaryRecorder(x_tr, y_tr, every=max(1, args.epochs // 25),
                                            animate=args.boundary.lower().endswith(".gif"))
        callbacks.append(recorder)
    history = model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=args.val_split, verbose=args.verbose,
                        callbacks=callbacks)
    result = model.evaluate(x_te, y_te)
    if "accuracy" in result:
        print(f"test accuracy: {result['accuracy']:.4f} (test loss {result['loss']:.4f}, "
              f"{len(x_te)} samples)")
    else:
        print(f"test loss ({loss}): {result['loss']:.4f} (mae {result['mae']:.4f}, "
              f"{len(x_te)} samples)")
    if args.save:
        model.save(args.save)
        print(f"saved model to {args.save}")
    if args.plot:
        from .plot import history as plot_history

        plot_history(history, args.plot)
        print(f"saved curves to {args.plot}")
    if recorder is not None:
        recorder.save(args.boundary)
        print(f"saved decision regions to {args.boundary}")
    return 0


def _load_for_inference(args):
    import dnn

    if args.backend:
        dnn.set_backend(args.backend)
    model = dnn.load_model(args.model)
    x, y = load_data(args.data, args.target)
    return model, _apply_saved_scaling(model, x), y


def cmd_evaluate(args):
    model, x, y = _load_for_inference(args)
    result = model.evaluate(x, y)
    print(" - ".join(f"{k}: {v:.4f}" for k, v in result.items()))
    return 0


def cmd_predict(args):
    model, x, _ = _load_for_inference(args)
    pred = model.predict(x)
    header = ",".join(f"output_{i}" for i in range(pred.shape[1]))
    if model.loss is not None and model.loss.name != "mse":
        labels = pred.argmax(1) if pred.shape[1] > 1 else (pred[:, 0] > 0.5).astype(int)
        table = numpy.column_stack([pred, labels])
        header += ",label"
        fmt = ["%.6g"] * pred.shape[1] + ["%d"]
    else:
        table, fmt = pred, "%.6g"
    numpy.savetxt(args.out, table, delimiter=",", header=header, comments="", fmt=fmt)
    print(f"wrote {pred.shape[0]} predictions to {args.out}")
    return 0


def cmd_info(_args):
    from .info import info_text

    print(info_text())
    return 0


def cmd_bench(args):
    try:
        from .bench.__main__ import main as bench_main
    except ImportError as exc:
        raise UsageError(f"bench: the benchmark package is not installed ({exc})") from exc
    return bench_main(args.args)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "info": cmd_info, "bench": cmd_bench}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser()
    if argv and argv[0] == "bench":  # everything after 'bench' belongs to the benchmark
        args = argparse.Namespace(command="bench", args=argv[1:])
    else:
        args = parser.parse_args(argv or ["train"])
        if args.command is None:
            args = parser.parse_args(["train", *argv])
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, TypeError, FileNotFoundError, ImportError, MemoryError,
            ModelFileError, backends.BackendUnavailable) as exc:
        if os.environ.get("DNN_DEBUG"):
            raise
        print(f"dnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
