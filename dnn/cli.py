"""The ``dnn`` command: train, evaluate, predict, export, info and bench.

With no arguments, ``dnn train`` reproduces seed 002: a 2-4-6-6-4-1 ReLU network
trained with Adam and binary cross-entropy on two concentric circles. Bare ``dnn``
prints help.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy

from . import backends

from .version import __version__
from .distributed import ABORT_GRACE_S, launched_rank, launched_world_size, local_rank
from .data import (csv_columns, load_digits, load_idx, load_npz, make_circles, make_moons,
                   make_spirals, make_student, make_xor, read_csv, train_test_split)
from .files import OutputPathError, atomic_write, check_output_path
from .model_file import ModelFileError
from .nan_guard import NonFiniteLossError

# name -> (loader(seed), description, target name)
DATASETS = {
    "circles": (lambda s: make_circles(1000, factor=0.5, noise=0.08, seed=s),
                "two concentric circles, 1000 samples (seed 002)", "label"),
    "moons": (lambda s: make_moons(1000, noise=0.2, seed=s), "two interleaving half moons",
              "label"),
    "xor": (lambda s: make_xor(400, noise=0.15, seed=s), "four clusters labelled by XOR",
            "label"),
    "spirals": (lambda s: make_spirals(900, n_classes=3, noise=0.2, seed=s),
                "three interleaved spiral arms", "label"),
    "student": (lambda s: make_student(1000, seed=s),
                "pass/fail from lectures, homework hours and disconnections", "passed"),
    "student-score": (lambda s: make_student(1000, regression=True, seed=s),
                      "the student example as score regression", "score"),
    "digits": (lambda s: load_digits(), "scikit-learn's 8x8 digits (needs scikit-learn)",
               "digit"),
}

# Seed 002's network, the default on its circles (the README's first command).
SEED002_LAYERS = (4, 6, 6, 4)


class UsageError(Exception):
    """A user error reported as one line, exit status 2."""


class Dataset:
    """What ``load_data`` read: ``x``, ``y`` (None when there is no target), and names
    for what the CLI prints and saves with the model."""

    def __init__(self, x, y, source, target_name=None, feature_names=None, class_names=None,
                 target_note=""):
        self.x, self.y, self.source = x, y, source
        self.target_name, self.feature_names = target_name, feature_names
        self.class_names, self.target_note = class_names, target_note


def load_data(source, target=None, seed=0, delimiter=None, with_target=True,
              class_names=None):
    """A ``Dataset`` from a dataset name or a .csv / .npz / .idx(.gz) path.
    ``with_target`` False reads a CSV of features only (unless ``target`` is given)."""
    if source in DATASETS:
        loader, _, target_name = DATASETS[source]
        x, y = loader(seed)
        return Dataset(x, y, source, target_name, class_names=None)
    if not os.path.exists(source):
        names = ", ".join(DATASETS)
        raise UsageError(f"data: expected a dataset name ({names}) or an existing .csv, .npz "
                         f"or .idx file; got {source!r}")
    lower = source.lower()
    if lower.endswith(".csv"):
        if target is None and not with_target:
            table = read_csv(source, None, delimiter)
            return Dataset(table.x, None, source, feature_names=table.feature_names)
        # A model's class names code a CSV's text labels as the model was trained
        # (a file may hold only some of the classes); without them, sorted order.
        table = read_csv(source, -1 if target is None else target, delimiter, class_names)
        note = " (the last column; --target chooses another)" if target is None else ""
        return Dataset(table.x, table.y, source, table.target_name, table.feature_names,
                       table.class_names, note)
    if lower.endswith(".npz"):
        x, y = load_npz(source, y_key=target or "y")
        return Dataset(x, y, source, target or "y")
    if lower.endswith((".idx", ".idx.gz")) or "-idx" in lower or "ubyte" in lower:
        if target is None:
            raise UsageError("--target: expected the labels IDX file for IDX images; got none")
        x = load_idx(source)
        return Dataset(x.reshape(x.shape[0], -1).astype(numpy.float64), load_idx(target),
                       source, os.path.basename(target))
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


def default_layers(n_features, n_outputs):
    """The hidden layers when ``--layers`` is not given: two layers of w units, w the
    power of two at or above 2 x (features + outputs), within [16, 256]. Seed 002's
    circles keep seed 002's 4,6,6,4 (see cmd_train)."""
    width = 16
    while width < min(256, 2 * (n_features + n_outputs)):
        width *= 2
    return [width, width]


def _parse_layers(text):
    try:
        units = [int(u) for u in text.split(",")]
    except ValueError:  # a word, or an empty item as in 16,,16
        units = None
    if not units or any(u <= 0 for u in units):
        raise UsageError(f"--layers: expected comma-separated positive integers such as "
                         f"64,64; got {text!r}")
    return units


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (as "(default: ...)")."""


def _build_parser():
    parser = argparse.ArgumentParser(prog="dnn", description="Train multi-layer perceptrons "
                                     "on NumPy (CPU) or CuPy (NVIDIA GPU).")
    parser.add_argument("--version", action="version", version=f"dnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a network (default: seed 002's circles)",
                           formatter_class=_Formatter)
    train.add_argument("data", nargs="?", default="circles",
                       help=f"dataset name ({', '.join(DATASETS)}) or a .csv/.npz/.idx path")
    train.add_argument("--target", default=None, help="CSV target column (name or position; "
                       "None: the last column), NPZ key of y, or the labels IDX file")
    train.add_argument("--delimiter", default=None,
                       help="CSV delimiter (None: detected from , ; tab |)")
    train.add_argument("--layers", default="auto", help="hidden layer widths such as 64,64; "
                       "auto: seed 002's 4,6,6,4 on circles, else two layers of the power of "
                       "two >= 2 x (features + outputs), within [16, 256]")
    train.add_argument("--activation", default="relu", help="hidden activation")
    train.add_argument("--loss", default="auto", help="loss name; auto: from the targets "
                       "(0/1: binary_crossentropy, other integers: "
                       "sparse_categorical_crossentropy, reals: mse)")
    train.add_argument("--optimizer", default="adam", help="sgd, adam, adamw or rmsprop")
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate (None: the optimizer's default)")
    train.add_argument("--epochs", type=int, default=50, help="passes over the training set")
    train.add_argument("--batch-size", type=int, default=32, help="samples per step")
    train.add_argument("--val-split", type=float, default=0.0,
                       help="fraction of the training split held out for validation")
    train.add_argument("--test-split", type=float, default=0.1,
                       help="fraction of the data held out for the final test")
    train.add_argument("--backend", default="auto", help="numpy, cupy, cupy:N or auto")
    train.add_argument("--seed", type=int, default=0,
                       help="seed of the data, split, weights and shuffling")
    train.add_argument("--dtype", default="float32",
                       help="float32, float64 or mixed_bfloat16")
    train.add_argument("--no-standardize", action="store_true",
                       help="leave features unscaled (otherwise a Normalization layer, "
                            "adapted to the train split, is the model's first layer)")
    train.add_argument("--save", default=None, help="write the trained model to this .npz path")
    train.add_argument("--plot", default=None, help="write loss/metric curves to this PNG")
    train.add_argument("--boundary", default=None, help="2-D data: write the decision regions "
                       "to this PNG, or a GIF of their evolution during training")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 silent, 1 progress bar, 2 one line per epoch")

    for name, helptext in (("evaluate", "evaluate a saved model on data"),
                           ("predict", "write a saved model's predictions to CSV")):
        p = sub.add_parser(name, help=helptext, formatter_class=_Formatter)
        p.add_argument("model", help="a model .npz written by --save or model.save")
        p.add_argument("data", help="dataset name or a .csv/.npz/.idx path")
        p.add_argument("--target", default=None,
                       help="as for train" if name == "evaluate" else
                       "as for train; a CSV may lack the target column")
        p.add_argument("--delimiter", default=None,
                       help="CSV delimiter (None: detected from , ; tab |)")
        p.add_argument("--backend", default="auto", help="numpy, cupy, cupy:N or auto")
        if name == "predict":
            p.add_argument("--out", required=True, help="CSV file for the predictions")

    export = sub.add_parser("export", help="write a saved model as ONNX",
                            formatter_class=_Formatter)
    export.add_argument("model", help="a model .npz written by --save or model.save")
    export.add_argument("out", help="the .onnx file to write")
    sub.add_parser("info", help="versions, backends, devices and BLAS")
    bench = sub.add_parser("bench", help="throughput benchmarks (dnn bench --help)",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _check_outputs(args):
    """Fail before training on an output that could not be written."""
    for option in ("save", "plot", "boundary"):
        path = getattr(args, option)
        if path is not None:
            check_output_path(path, f"--{option}")
    if args.plot or args.boundary:
        from .plot import check_available

        check_available("--plot" if args.plot else "--boundary")


def _task_text(loss, units, out_act, class_names):
    if loss == "binary_crossentropy":
        kind = "binary classification"
    elif loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        kind = f"{units}-class classification"
    else:
        return f"regression of {units} value{'s' * (units > 1)}, loss {loss}, linear output"
    names = class_names or [str(c) for c in range(max(units, 2))]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"{kind} ({shown}), loss {loss}, {units} {out_act} output{'s' * (units > 1)}"


def _names_text(names, limit=4):
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit
                                       else "")


def _split_sizes(n, test_split, val_split):
    n_test = max(1, int(round(n * test_split))) if test_split else 0
    n_fit = n - n_test
    n_train = int(round(n_fit * (1 - val_split))) if val_split else n_fit
    return n_train, n_fit - n_train, n_test


def _backend_for_rank(name):
    """Under mpiexec, each rank on a machine takes its own GPU (by its local rank), as
    NCCL wants; elsewhere the backend as asked."""
    if launched_world_size() == 1 or name not in ("auto", "cupy"):
        return name
    gpus = backends.gpu_count()
    return f"cupy:{local_rank() % gpus}" if gpus else name


def cmd_train(args):
    import dnn

    if args.epochs < 1:
        raise UsageError(f"--epochs: expected a positive integer; got {args.epochs}")
    _check_outputs(args)
    backend = _backend_for_rank(args.backend)
    if backend != "auto":
        dnn.set_backend(backend)
    data = load_data(args.data, args.target, seed=args.seed, delimiter=args.delimiter)
    x, y = data.x, data.y
    loss, units, out_act = infer_task(y)
    if args.loss != "auto":
        loss = args.loss
        if loss == "binary_crossentropy":
            units, out_act = (1 if numpy.ndim(y) == 1 else numpy.shape(y)[1]), "sigmoid"
        elif loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
            classes = int(numpy.max(y)) + 1 if numpy.ndim(y) == 1 else numpy.shape(y)[1]
            units, out_act = classes, "softmax"
        elif loss in ("mse", "mean_squared_error", "mae", "huber"):
            units, out_act = (1 if numpy.ndim(y) == 1 else numpy.shape(y)[1]), "linear"
    if args.boundary and x.shape[1] != 2:
        raise UsageError(f"--boundary: expected 2-D inputs; got {x.shape[1]} features")
    if args.layers != "auto":
        hidden, how = _parse_layers(args.layers), "--layers"
    elif args.data == "circles":
        hidden, how = list(SEED002_LAYERS), "auto: seed 002's network"
    else:
        hidden, how = default_layers(x.shape[1], units), "auto: from the data's width"
    classification = out_act != "linear"
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=args.test_split, seed=args.seed,
                                              stratify=classification)
    layers = []
    if not args.no_standardize:
        layers.append(dnn.layers.Normalization())
    layers += [dnn.layers.Dense(u, args.activation) for u in hidden]
    layers.append(dnn.layers.Dense(units, out_act))
    model = dnn.Sequential(layers, input_dim=x.shape[1], seed=args.seed, dtype=args.dtype)
    if not args.no_standardize:
        model.layers[0].adapt(x_tr)
    if classification and data.class_names is not None:
        model.class_names = data.class_names
    model.metadata.update({"data": os.path.basename(data.source), "target": data.target_name,
                           "features": data.feature_names})
    opt_kwargs = {} if args.lr is None else {"learning_rate": args.lr}
    metrics = ["accuracy"] if classification else ["mae"]
    strategy = None
    if launched_world_size() > 1:  # started by mpiexec: train data-parallel
        from .distributed import DataParallel

        strategy = _RUN["strategy"] = DataParallel()
    model.compile(loss=loss, optimizer=dnn.optimizers.get(args.optimizer, **opt_kwargs),
                  metrics=metrics, distribute=strategy)
    if strategy is not None and args.verbose:
        print(f"data-parallel: {strategy.world_size} ranks over "
              f"{model.replica.collectives.name.upper()}, batch {args.batch_size} per rank "
              f"({args.batch_size * strategy.world_size} per step)")
    if args.verbose:
        n_train, n_val, _ = _split_sizes(len(x), args.test_split, args.val_split)
        features = f" ({_names_text(data.feature_names)})" if data.feature_names else ""
        print(f"data: {data.source}: {len(x)} samples, {x.shape[1]} features{features}")
        print(f"target: {data.target_name}{data.target_note}")
        print(f"task: {_task_text(loss, units, out_act, data.class_names)}")
        print(f"split: {n_train} train, {n_val} validation, {len(x_te)} test")
        scaling = "" if args.no_standardize else "Normalization, "
        print(f"layers: {scaling}{', '.join(f'{u} {args.activation}' for u in hidden)}, "
              f"{units} {out_act} ({how})")
        model.summary()
    callbacks = []
    recorder = None
    if args.boundary and launched_rank() == 0:  # rank 0 draws it
        from .plot import DecisionBoundaryRecorder

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
    if launched_rank() != 0:
        return 0  # rank 0 writes the plots
    if args.plot:
        from .plot import history as plot_history

        plot_history(history, args.plot)
        print(f"saved curves to {args.plot}")
    if recorder is not None:
        recorder.save(args.boundary)
        print(f"saved decision regions to {args.boundary}")
    return 0


def _model_features(model, data):
    """The data's features in the order the model was trained on: by name when both
    the model and the file know the names, else by count."""
    trained = model.metadata.get("features")
    x = data.x
    if trained and data.feature_names and data.feature_names != trained:
        missing = [n for n in trained if n not in data.feature_names]
        if missing:
            raise UsageError(f"data: expected the feature columns the model was trained on "
                             f"({_names_text(trained)}); {data.source!r} lacks "
                             f"{_names_text(missing)}")
        x = x[:, [data.feature_names.index(n) for n in trained]]
    if x.shape[1] != model.input_dim:
        raise UsageError(f"data: expected {model.input_dim} features per sample, as at "
                         f"training; got {x.shape[1]} in {data.source!r}")
    return x


def _load_for_inference(args, with_target):
    """The saved model and the data. Prediction data may lack the target column; a CSV
    that has it (by the trained target's name, or one column more than the model's
    inputs without a header) has it left out."""
    import dnn

    if args.backend != "auto":
        dnn.set_backend(args.backend)
    model = dnn.load_model(args.model)
    target = args.target
    if target is None and args.data.lower().endswith(".csv") and os.path.isfile(args.data):
        header, width = csv_columns(args.data, args.delimiter)
        trained = model.metadata.get("target")
        if header is not None and trained in header:
            target = trained  # the column the model was trained on
        elif not with_target and header is None and width == model.input_dim + 1:
            target = -1  # the last, as in train
    data = load_data(args.data, target, delimiter=args.delimiter,
                     with_target=with_target or target is not None,
                     class_names=model.class_names)
    return model, data


def cmd_evaluate(args):
    model, data = _load_for_inference(args, with_target=True)
    result = model.evaluate(_model_features(model, data), data.y)
    print(" - ".join(f"{k}: {v:.4f}" for k, v in result.items()))
    return 0


def prediction_table(model, pred):
    """``(header, columns, formats)`` of ``dnn predict``'s CSV: a probability per class
    and the predicted label (by name when the model has class names) for a classifier,
    the outputs for a regression."""
    names = model.class_names
    activation = model.layers[-1].activation if hasattr(model.layers[-1], "activation") \
        else "linear"
    if activation not in ("sigmoid", "softmax"):
        target = model.metadata.get("target")
        header = [target] if pred.shape[1] == 1 and target else \
            [f"output_{i}" for i in range(pred.shape[1])]
        return header, [pred[:, i] for i in range(pred.shape[1])], ["%.6g"] * pred.shape[1]
    if pred.shape[1] == 1:  # one sigmoid unit: the probability of class 1
        codes = (pred[:, 0] > 0.5).astype(int)
        classes = names or ["0", "1"]
        header = [f"p_{classes[1]}"]
    else:
        codes = pred.argmax(1)
        classes = names or [str(i) for i in range(pred.shape[1])]
        header = [f"p_{c}" for c in classes]
    labels = numpy.array(classes, dtype=object)[codes]
    return header + ["label"], [pred[:, i] for i in range(pred.shape[1])] + [labels], \
        ["%.6g"] * pred.shape[1] + ["%s"]


def cmd_predict(args):
    check_output_path(args.out, "--out")
    model, data = _load_for_inference(args, with_target=False)
    pred = model.predict(_model_features(model, data))
    header, columns, formats = prediction_table(model, pred)
    lines = [",".join(header)]
    for row in zip(*columns):
        lines.append(",".join(f % v for f, v in zip(formats, row)))
    text = "\n".join(lines) + "\n"
    atomic_write(args.out, lambda f: f.write(text.encode("utf-8")), "--out")
    print(f"wrote {pred.shape[0]} predictions to {args.out}")
    return 0


def cmd_export(args):
    import dnn

    check_output_path(args.out, "out")
    model = dnn.load_model(args.model)
    model.export(args.out, format="onnx")
    print(f"wrote {args.out} (ONNX: input 'input' [batch, {model.input_dim}], output "
          f"'output' [batch, {model.output_dim}])")
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
            "export": cmd_export, "info": cmd_info, "bench": cmd_bench}


# The data-parallel strategy of the running command, if any: an error after it exists
# must end every rank.
_RUN = {"strategy": None}


def _report(command, message, code):
    """Print a command's error. Under mpiexec, rank 0 prints what every rank hits alike
    (before training: usage, data); once training runs, every rank prints its own and
    the run is aborted, so that no rank waits for one that has stopped."""
    strategy = _RUN["strategy"]
    rank = launched_rank() if launched_world_size() > 1 else 0
    if rank == 0 or strategy is not None:
        where = f" (rank {rank})" if rank else ""
        print(f"dnn {command}{where}: {message}", file=sys.stderr)
    if strategy is not None and strategy.world_size > 1:
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)  # let the launcher forward the line first
        strategy.comm.Abort(code)
    return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    _RUN["strategy"] = None
    if launched_world_size() > 1 and launched_rank() != 0:
        # Under mpiexec every rank runs this command; rank 0 alone prints its output.
        sys.stdout = open(os.devnull, "w")
    parser = _build_parser()
    if argv and argv[0] == "bench":  # everything after 'bench' belongs to the benchmark
        args = argparse.Namespace(command="bench", args=argv[1:])
    else:
        args = parser.parse_args(argv)
        if args.command is None:  # bare dnn: say what there is rather than start a run
            parser.print_help()
            return 0
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, TypeError, FileNotFoundError, ImportError, MemoryError,
            ModelFileError, OutputPathError, backends.BackendUnavailable) as exc:
        if os.environ.get("DNN_DEBUG"):
            raise
        return _report(args.command, f"error: {exc}", 2)
    except NonFiniteLossError as exc:  # training diverged: not a usage error
        return _report(args.command, str(exc), 1)
    except KeyboardInterrupt:
        print(f"dnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
