"""The ``dnn`` commands: train, evaluate, predict, export, info and bench. Each takes
the parsed arguments and the run's ``Session`` and returns the exit status."""
from __future__ import annotations

import csv
import io
import os
import sys

import numpy

from .. import backends
from ..data import csv_columns
from ..utils.environment import launched_world_size, local_rank
from ..saving.saving_lib import is_keras_path
from ..utils.files import atomic_write, check_output_path
from .data_sources import CSV_SUFFIXES, Reading, load_data
from .errors import UsageError
from .header import Header, memmap_notes, names_text, task_text
from .parser import parse_layers
from .streaming import adapt_data, is_streamed, split
from .task import CIRCLES_LAYERS, check_classes, choose_task, default_layers


class Session:
    """What one run of the command line holds: under mpiexec, the data-parallel
    strategy once training has made one (an error after that must end every rank)."""

    def __init__(self):
        self.strategy = None
        self.is_chief = True


# What --save writes: dnn's own model file, the one predict, evaluate and export read.
# A Keras archive is written from Python (model.save("m.keras")), where ModelCheckpoint
# writes either.
SAVE_SUFFIXES = (".npz",)


def _check_outputs(args):
    """Fail before training on an output that could not be written: its suffix, and a
    file really created and removed in its directory (and matplotlib for plots)."""
    if args.save is not None:
        if is_keras_path(args.save):
            raise UsageError(f"--save: expected a file name ending in .npz, dnn's model file "
                             f"(which dnn predict, evaluate and export read); got "
                             f"{args.save!r}: a Keras archive is written from Python, "
                             f"model.save(\"m.keras\")")
        check_output_path(args.save, "--save", SAVE_SUFFIXES)
    if args.plot is not None or args.boundary is not None:
        from ..plot import check_figure_path

        if args.plot is not None:
            check_figure_path(args.plot, "--plot")
        if args.boundary is not None:
            check_figure_path(args.boundary, "--boundary", animated=True)


def _check_fractions(args):
    if args.epochs < 1:
        raise UsageError(f"--epochs: expected a positive integer; got {args.epochs}")
    for option, value in (("--test-split", args.test_split), ("--val-split", args.val_split)):
        if not 0 <= value < 1:
            raise UsageError(f"{option}: expected a fraction in [0, 1); got {value}")


def _rank_batch(batch_size):
    """Each rank's rows per step: ``--batch-size`` is the global batch, split evenly
    across the ranks mpiexec started (fit's batch_size is per rank), so that N ranks
    train as one process does."""
    world = launched_world_size()
    if batch_size % world:
        raise UsageError(f"--batch-size: expected a multiple of the {world} ranks (the "
                         f"global batch is split evenly across them); got {batch_size}")
    return batch_size // world


def _backend_for_rank(name):
    """Under mpiexec, each rank on a machine takes its own GPU (by its local rank), as
    NCCL wants; elsewhere the backend as asked."""
    if launched_world_size() == 1 or name not in ("auto", "cupy"):
        return name
    gpus = backends.gpu_count()
    return f"cupy:{local_rank() % gpus}" if gpus else name


class _Plan:
    """What ``dnn train`` chose from the data and the flags, before any training."""

    def __init__(self, args, data):
        self.task = choose_task(data.y, args.loss, args.task,
                                text_labels=data.class_names is not None)
        self.loss, self.units, self.out_act = self.task
        self.classification = self.task.classification
        if self.classification:
            check_classes(data.y, data.target_name, data.class_names)
        if args.layers != "auto":
            self.hidden, self.how = parse_layers(args.layers), "--layers"
        elif args.data == "circles":
            self.hidden, self.how = list(CIRCLES_LAYERS), "auto: the circles example"
        else:
            self.hidden = default_layers(data.x.shape[1], self.units)
            self.how = "auto: from the data's width"


def _split(args, data, plan):
    """``(x_train, x_test, y_train, y_test)``; the test parts are None with
    ``--test-split 0``."""
    if args.test_split == 0:
        return data.x, None, data.y, None
    try:
        return split(data.x, data.y, args.test_split, args.seed, plan.classification)
    except ValueError as exc:
        if not str(exc).startswith("stratify: "):
            raise
        hint = "--task regression if the target is a quantity" if \
            plan.task.why.endswith("class labels") else "merge or drop the rarest classes"
        raise UsageError(f"--test-split {args.test_split}: {str(exc)[len('stratify: '):]}; "
                         f"{hint}, or --test-split 0 to train on all rows") from None


def _build_model(args, data, plan, x_train):
    import dnn

    layers = [] if args.no_standardize else [dnn.layers.Normalization()]
    layers += [dnn.layers.Dense(u, args.activation) for u in plan.hidden]
    layers.append(dnn.layers.Dense(plan.units, plan.out_act))
    model = dnn.Sequential(layers, input_dim=data.x.shape[1], seed=args.seed,
                           dtype=args.dtype)
    if not args.no_standardize:
        model.layers[0].adapt(adapt_data(x_train))
    if plan.classification and data.class_names is not None:
        model.class_names = data.class_names
    model.metadata.update({"data": os.path.basename(data.source), "target": data.target_name,
                           "features": data.feature_names})
    return model


def _compile(args, model, plan, session):
    import dnn

    opt_kwargs = {} if args.lr is None else {"learning_rate": args.lr}
    if launched_world_size() > 1:  # started by mpiexec: train data-parallel
        session.strategy = dnn.distributed.DataParallel()
    model.compile(loss=plan.loss, optimizer=dnn.optimizers.get(args.optimizer, **opt_kwargs),
                  metrics=["accuracy"] if plan.classification else ["mae"],
                  distribute=session.strategy)


def _print_choices(args, data, plan, model, parts, session):
    say = Header()
    strategy = session.strategy
    if strategy is not None:
        say(f"data-parallel: {strategy.world_size} ranks over "
            f"{model.replica.communicator_name.upper()}, batch {args.batch_size} "
            f"({_rank_batch(args.batch_size)} per rank)")
    x = data.x
    say.data_line(data.source, len(x), x.shape[1], data.feature_names)
    for note in data.notes + memmap_notes(x, model):
        say(f"note: {note}")
    say(f"target: {data.target_name}{data.target_note}")
    say(f"task: {task_text(plan.loss, plan.units, plan.out_act, data.class_names)}")
    guessed = args.task == args.loss == "auto" and data.class_names is None
    say(f"  why: {plan.task.why}" + (" (--task overrides)" if guessed else ""))
    x_tr, x_te = parts[0], parts[1]
    n_val = len(x_tr) - int(round(len(x_tr) * (1 - args.val_split))) if args.val_split else 0
    test = f"{len(x_te)} test" if x_te is not None else "no test (--test-split 0)"
    say(f"split: {len(x_tr) - n_val} train, {n_val} validation, {test}")
    scaling = "" if args.no_standardize else "Normalization, "
    hidden = "-".join(str(u) for u in plan.hidden)
    say(f"layers: {scaling}{hidden} {args.activation}, {plan.units} {plan.out_act} "
        f"({plan.how})")
    model.summary()


def cmd_train(args, session):
    import dnn

    _check_fractions(args)
    _check_outputs(args)
    backend = _backend_for_rank(args.backend)
    if backend != "auto":
        dnn.set_backend(backend)
    data = load_data(args.data, args.target, seed=args.seed, reading=Reading.from_args(args))
    plan = _Plan(args, data)
    if args.boundary and data.x.shape[1] != 2:
        raise UsageError(f"--boundary: expected 2-D inputs; got {data.x.shape[1]} features")
    if args.boundary and is_streamed(data.x):
        raise UsageError(f"--boundary: expected data held in memory; {data.source!r} is "
                         f"streamed from disk (it is larger than DNN_STREAM_MB)")
    batch_size = _rank_batch(args.batch_size)
    parts = _split(args, data, plan)
    x_tr, x_te, y_tr, y_te = parts
    model = _build_model(args, data, plan, x_tr)
    _compile(args, model, plan, session)
    if args.verbose:
        _print_choices(args, data, plan, model, parts, session)
    recorder = None
    if args.boundary and session.is_chief:  # one rank draws it
        from ..plot import DecisionBoundaryRecorder

        recorder = DecisionBoundaryRecorder(x_tr, y_tr, every=max(1, args.epochs // 25),
                                            animate=args.boundary.lower().endswith(".gif"))
    history = model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=batch_size,
                        validation_split=args.val_split, verbose=args.verbose,
                        callbacks=[recorder] if recorder else [])
    if x_te is not None:
        _report_test(model, x_te, y_te, plan.loss)
    _write_outputs(args, model, history, recorder, session)
    if getattr(history, "interrupted", False):
        # Stopped by Ctrl-C, what was trained written out: the status that shells and
        # schedulers read as "ended by SIGINT", 128 + 2.
        done = len(history.history.get("loss", []))
        print(f"dnn train: interrupted after {done} of {args.epochs} epochs"
              + ("; the model so far is saved" if args.save else ""), file=sys.stderr)
        return 130
    return 0


def _report_test(model, x_test, y_test, loss):
    result = model.evaluate(x_test, y_test, return_dict=True)
    if "accuracy" in result:
        print(f"test accuracy: {result['accuracy']:.4f} (test loss {result['loss']:.4f}, "
              f"{len(x_test)} samples)")
    else:
        print(f"test loss ({loss}): {result['loss']:.4f} (mae {result['mae']:.4f}, "
              f"{len(x_test)} samples)")


def _write_outputs(args, model, history, recorder, session):
    if args.save:
        model.save(args.save)
        print(f"saved model to {args.save}")
    if not session.is_chief:
        return  # one rank writes the plots
    if args.plot:
        from ..plot import history as plot_history

        plot_history(history, args.plot)
        print(f"saved curves to {args.plot}")
    if recorder is not None:
        recorder.save(args.boundary)
        print(f"saved decision regions to {args.boundary}")


def _model_features(model, data):
    """The data's features in the order the model was trained on: by name when both
    the model and the file know the names, else by count."""
    trained = model.metadata.get("features")
    x = data.x
    if trained and data.feature_names and data.feature_names != trained:
        missing = [n for n in trained if n not in data.feature_names]
        if missing:
            raise UsageError(f"data: expected the feature columns the model was trained on "
                             f"({names_text(trained)}); {data.source!r} lacks "
                             f"{names_text(missing)}")
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
    target, reading = args.target, Reading.from_args(args)
    if target is None and args.data.lower().endswith(CSV_SUFFIXES) and \
            os.path.isfile(args.data):
        header, width = csv_columns(args.data, reading.csv_delimiter(args.data),
                                    reading.encoding)
        trained = model.metadata.get("target")
        if header is not None and trained in header:
            target = trained  # the column the model was trained on
        elif not with_target and header is None and width == model.input_dim + 1:
            target = -1  # the last, as in train
    data = load_data(args.data, target, reading=reading,
                     with_target=with_target or target is not None,
                     class_names=model.class_names)
    return model, data


def cmd_evaluate(args, session):
    model, data = _load_for_inference(args, with_target=True)
    result = model.evaluate(_model_features(model, data), data.y, return_dict=True)
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


PREDICTION_SUFFIXES = (".csv", ".tsv")


def prediction_text(model, pred, delimiter=","):
    """``dnn predict``'s table as CSV text (``prediction_table``'s columns)."""
    header, columns, formats = prediction_table(model, pred)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([f % v for f, v in zip(formats, row)] for row in zip(*columns))
    return out.getvalue()


def cmd_predict(args, session):
    to_stdout = args.out == "-"
    if not to_stdout:
        check_output_path(args.out, "--out", PREDICTION_SUFFIXES)
    model, data = _load_for_inference(args, with_target=False)
    pred = model.predict(_model_features(model, data))
    text = prediction_text(model, pred, "\t" if args.out.lower().endswith(".tsv") else ",")
    if to_stdout:  # the table alone on standard output, for a pipe
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    atomic_write(args.out, lambda f: f.write(text.encode("utf-8")), "--out")
    print(f"wrote {pred.shape[0]} predictions to {args.out}")
    return 0


def cmd_export(args, session):
    import dnn

    check_output_path(args.out, "out", (".onnx",))
    model = dnn.load_model(args.model)
    model.export(args.out, format="onnx")
    print(f"wrote {args.out} (ONNX: input 'input' [batch, {model.input_dim}], output "
          f"'output' [batch, {model.output_dim}])")
    return 0


def cmd_info(args, session):
    from ..utils.info import info_text

    print(info_text())
    return 0


def cmd_bench(args, session):
    try:
        from ..bench.__main__ import main as bench_main
    except ImportError as exc:
        raise UsageError(f"bench: the benchmark package is not installed ({exc})") from exc
    return bench_main(args.args)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "export": cmd_export, "info": cmd_info, "bench": cmd_bench}
