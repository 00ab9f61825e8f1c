"""Fit time of one scikit-learn estimator on breast_cancer, where grid searches spend it:
dnn.sklearn.DNNClassifier against scikit-learn's MLPClassifier and skorch's
NeuralNetClassifier, at the same network, epochs, batch size and optimizer.

    python -m dnn.bench.sklearn_bench                       # 50 epochs, batch 32, (100,)
    python -m dnn.bench.sklearn_bench --epochs 200 --repeats 7 --out sklearn.json

Every estimator trains 30 standardized features -> ReLU hidden layers -> the output
with Adam (learning rate 1e-3), no weight penalty, reshuffling every epoch, for exactly
``--epochs`` epochs (no early stopping, no tolerance stop, no validation split), on
the same 75% of the rows, in ``--dtype`` (float32 by default: skorch's, and on a GPU
dnn's fast path). MLPClassifier and DNNClassifier end in one logistic unit; skorch's
NeuralNetClassifier, as its documentation builds it, in a 2-unit softmax with its
default NLLLoss. Each row is the median wall time of ``--repeats`` fits of a fresh
clone after one warm-up fit (imports, compilation and caches paid there), then the
accuracy on the held-out 25%, so that the rows are seen to train alike. The ratios are
the other estimator's time over DNNClassifier's: above 1 means dnn is faster.

skorch and PyTorch are not dnn dependencies: ``pip install skorch torch`` to get that
row (it is reported as skipped otherwise). The JSON record is written only with
``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import warnings

import numpy

from .timing import measure


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dnn.bench.sklearn_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=50, help="epochs of every fit (default 50)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per step (default 32)")
    p.add_argument("--hidden", default="100",
                   help="hidden layer widths, comma separated (default 100)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed fits per estimator; the median is kept (default 5)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the data's and the networks' dtype (skorch: float32 only)")
    p.add_argument("--backend", default="numpy",
                   help="DNNClassifier's dnn backend (default numpy; the others run on "
                   "the CPU)")
    p.add_argument("--no-skorch", action="store_true", help="skip the skorch row")
    p.add_argument("--out", help="write the JSON record here (default: none)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer; got "
                    f"{getattr(args, name)}")
    try:
        args.hidden = tuple(int(w) for w in args.hidden.split(","))
    except ValueError:
        p.error(f"--hidden: expected comma-separated widths such as 100 or 64,32; got "
                f"{args.hidden!r}")
    return args


def breast_cancer(dtype):
    """``(x_train, x_test, y_train, y_test)``: standardized on the training rows."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=0)
    scaler = StandardScaler().fit(x_train)
    return (scaler.transform(x_train).astype(dtype), scaler.transform(x_test).astype(dtype),
            y_train, y_test)


def dnn_estimator(args):
    from dnn.sklearn import DNNClassifier

    return DNNClassifier(hidden_layer_sizes=args.hidden, epochs=args.epochs,
                         batch_size=args.batch_size, learning_rate=1e-3, tol=None,
                         backend=args.backend, random_state=0)


def mlp_estimator(args):
    from sklearn.neural_network import MLPClassifier

    # n_iter_no_change above max_iter: its tolerance stop can never end a fit early.
    return MLPClassifier(hidden_layer_sizes=args.hidden, solver="adam",
                         learning_rate_init=1e-3, alpha=0.0, batch_size=args.batch_size,
                         max_iter=args.epochs, n_iter_no_change=args.epochs + 1,
                         shuffle=True, random_state=0)


def skorch_estimator(args):
    """skorch's NeuralNetClassifier over the same stack, or ``(None, why)``."""
    try:
        import torch
        from skorch import NeuralNetClassifier
    except ImportError as exc:
        return None, f"not installed ({exc}); pip install skorch torch"
    torch.set_num_threads(os.cpu_count() or 1)

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layers, width = [], 30
            for units in args.hidden:
                layers += [torch.nn.Linear(width, units), torch.nn.ReLU()]
                width = units
            layers += [torch.nn.Linear(width, 2), torch.nn.Softmax(dim=-1)]
            self.stack = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.stack(x)

    torch.manual_seed(0)
    return NeuralNetClassifier(Stack, max_epochs=args.epochs, batch_size=args.batch_size,
                               optimizer=torch.optim.Adam, lr=1e-3, train_split=None,
                               iterator_train__shuffle=True, verbose=0), None


def time_fit(estimator, data, repeats):
    """``{"fit_s", "fit_s_all", "test_accuracy"}``: the median of ``repeats`` timed fits
    of fresh clones, after one warm-up fit."""
    from sklearn.base import clone

    x_train, x_test, y_train, y_test = data
    fitted = []

    def fit():
        fitted.append(clone(estimator).fit(x_train, y_train))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLPClassifier's ConvergenceWarning at max_iter
        median, times = measure(fit, warmup=1, repeats=repeats)
    accuracy = float(numpy.mean(fitted[-1].predict(x_test) == y_test))
    return {"fit_s": median, "fit_s_all": times, "test_accuracy": accuracy}


def environment():
    import sklearn

    import dnn
    from dnn.utils.environment import thread_settings

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "dnn": dnn.__version__, "numpy": numpy.__version__,
           "scikit-learn": sklearn.__version__,
           "thread_env": thread_settings()}
    for name in ("skorch", "torch"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def run(args):
    """The record: the settings, one row per estimator, and the ratios."""
    data = breast_cancer(args.dtype)
    rows, skipped = {}, {}
    estimators = {"DNNClassifier": dnn_estimator(args), "MLPClassifier": mlp_estimator(args)}
    if args.no_skorch:
        skipped["NeuralNetClassifier"] = "disabled by --no-skorch"
    elif args.dtype != "float32":
        skipped["NeuralNetClassifier"] = "skorch trains float32 data only"
    else:
        net, why = skorch_estimator(args)
        if net is None:
            skipped["NeuralNetClassifier"] = why
        else:
            estimators["NeuralNetClassifier"] = net
    for name, estimator in estimators.items():
        rows[name] = time_fit(estimator, data, args.repeats)
        print(f"{name:20s} fit {rows[name]['fit_s']:8.3f} s   test accuracy "
              f"{rows[name]['test_accuracy']:.3f}", flush=True)
    ours = rows["DNNClassifier"]["fit_s"]
    ratios = {f"{name} / DNNClassifier": row["fit_s"] / ours
              for name, row in rows.items() if name != "DNNClassifier"}
    for name, why in skipped.items():
        print(f"{name:20s} skipped: {why}")
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x ({'dnn faster' if ratio > 1 else 'dnn slower'})")
    settings = {"data": "breast_cancer", "rows_train": int(data[0].shape[0]),
                "epochs": args.epochs, "batch_size": args.batch_size,
                "hidden_layer_sizes": list(args.hidden), "dtype": args.dtype,
                "optimizer": "adam, learning rate 1e-3", "repeats": args.repeats,
                "dnn_backend": args.backend}
    return {"environment": environment(), "settings": settings, "rows": rows,
            "ratios": ratios, "skipped": skipped,
            "command": "python -m dnn.bench.sklearn_bench " + " ".join(sys.argv[1:])}


def write_json(path, record):
    """Write ``record`` to ``path`` atomically (a temporary file beside it, then a
    rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sklearn-bench.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    args = _parse_args(argv)
    settings = (f"breast_cancer, hidden {','.join(map(str, args.hidden))}, {args.epochs} "
                f"epochs, batch {args.batch_size}, {args.dtype}, median of {args.repeats}")
    print(f"sklearn bench - {settings}")
    record = run(args)
    if args.out:
        write_json(args.out, record)
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
