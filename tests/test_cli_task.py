"""What ``dnn train`` infers from a target, why it says it chose so, and splits that
keep every row: the regression a new user wrote as whole numbers, the classes a
stratified split cannot place."""
import numpy
import pytest

from dnn.cli import main
from dnn.cli.errors import UsageError
from dnn.cli.task import choose_task
from dnn.data import train_test_split


def header(capsys, *args):
    """``dnn train ARGS`` in this process for one epoch: (status, the lines printed
    before the first epoch, stdout, stderr)."""
    code = main(["train", *args, "--epochs", "1", "--verbose", "2", "--backend", "numpy"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("Model:")), len(lines))
    return code, lines[:first], out, err


def flat(lines):
    """The lines as one, as they read before wrapping."""
    return " ".join(" ".join(lines).split())


def diabetes_like(n=442, seed=0):
    """A target measured in whole numbers, as scikit-learn's diabetes progression:
    25..346, about half of the 442 values distinct."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = numpy.round(150 + 60 * x[:, 0] + 20 * x[:, 1] + 10 * rng.normal(size=n))
    return x, numpy.clip(y, 25, 346)


@pytest.mark.parametrize("y,kind,why", [
    (diabetes_like()[1].astype(numpy.float64), "regression",
     "distinct whole numbers in 442 rows (over 10%): a quantity, not labels"),
    (diabetes_like()[1].astype(numpy.int64), "regression", "(over 10%): a quantity"),
    (numpy.arange(1797) % 10, "classification",
     "10 distinct whole numbers in 1797 rows (at most 5%): class labels"),
    (numpy.arange(30) % 3, "classification", "3 distinct whole numbers in 30 rows (at most 10%)"),
    (numpy.arange(20) % 3, "regression", "3 distinct whole numbers in 20 rows (over 10%)"),
    (numpy.arange(200_000) % 1500, "regression", "(more than 1000): a quantity"),
    (numpy.linspace(0, 1, 50), "regression", "values that are not whole numbers, such as 0.0204"),
    (numpy.array([-1, 1] * 50), "regression", "negative values, such as -1"),
    (numpy.array([0.0, 1.0] * 5), "binary", "the target holds only 0 and 1"),
    (numpy.ones((40, 3)), "regression", "the target has 3 columns"),
])
def test_the_rule_and_why(y, kind, why):
    task = choose_task(y)
    assert why in task.why, task.why
    if kind == "binary":
        assert (task.loss, task.units, task.activation) == ("binary_crossentropy", 1, "sigmoid")
    elif kind == "classification":
        assert task.loss == "sparse_categorical_crossentropy" and task.activation == "softmax"
        assert task.units == int(y.max()) + 1
    else:
        assert task.loss == "mse" and task.activation == "linear" and not task.classification


def test_task_and_loss_override_the_rule_and_say_so():
    _, y = diabetes_like()
    forced = choose_task(y, task="classification")
    assert forced.classification and forced.units == int(y.max()) + 1
    assert forced.why == "--task classification"
    assert choose_task(numpy.arange(100) % 2, task="regression").loss == "mse"
    assert choose_task(y, loss="mae").why == "--loss mae"
    with pytest.raises(UsageError, match=r"--task classification: expected class labels .*"
                                         r"got values that are not whole numbers, such as 0.5"):
        choose_task(numpy.array([0.5, 1.0, 2.0]), task="classification")
    with pytest.raises(UsageError, match="--task regression: expected a regression loss; "
                                         "--loss binary_crossentropy is for classification"):
        choose_task(y, loss="binary_crossentropy", task="regression")
    with pytest.raises(UsageError, match="--task regression: expected numeric targets"):
        choose_task(numpy.arange(10) % 2, task="regression", text_labels=True)


def test_a_whole_number_regression_csv_trains_as_regression_on_every_row(tmp_path, capsys):
    """The issue's case: scikit-learn's diabetes written by pandas (target 151.0 ...,
    and pandas' index as the first column) was a 347-class problem with 5 test rows."""
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("sklearn.datasets")
    path = tmp_path / "diabetes.csv"
    datasets.load_diabetes(as_frame=True).frame.to_csv(path)  # index and all
    code, chosen, out, _ = header(capsys, str(path))
    assert code == 0
    text = flat(chosen)
    assert "data: " in text and "442 samples, 10 features (age, sex, bmi" in text
    assert "task: regression of 1 value, loss mse, linear output" in text
    assert "why: 214 distinct whole numbers in 442 rows (over 10%): a quantity" in text
    assert "split: 397 train, 0 validation, 45 test" in text
    assert "the index pandas writes" in text
    assert "test loss (mse): " in out and "45 samples" in out
    # Asked to classify, the split says why it cannot rather than dropping rows.
    code, _, _, err = header(capsys, str(path), "--task", "classification")
    assert code == 2
    assert "dnn train: error: --test-split 0.1: class 25 (and 83 other classes) has only 1 " \
           "sample; a stratified split needs at least 2 of each class" in err
    assert "merge or drop the rarest classes, or --test-split 0" in err
    assert pd is not None


def test_the_split_line_counts_the_rows_each_part_really_has(capsys):
    pytest.importorskip("sklearn")
    code, chosen, out, _ = header(capsys, "digits", "--val-split", "0.2")
    assert code == 0
    # 1797 rows: 180 for the test (10%, rounded up), 1617 left, 323 of them validation.
    assert "split: 1294 train, 323 validation, 180 test" in chosen
    assert "180 samples)" in out
    assert "why: 10 distinct whole numbers in 1797 rows (at most 5%): class labels " \
           "(--task overrides)" in flat(chosen)  # wrapped to 80 columns


def test_test_split_zero_trains_on_every_row_and_prints_no_test(capsys):
    code, chosen, out, _ = header(capsys, "moons", "--test-split", "0")
    assert code == 0
    assert "split: 1000 train, 0 validation, no test (--test-split 0)" in chosen
    assert "test accuracy" not in out and "test loss" not in out


def test_stratified_split_keeps_exactly_the_rows_asked_and_every_class_in_both_parts():
    rng = numpy.random.default_rng(0)
    y = rng.choice(7, size=503, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.04, 0.01])
    x = numpy.arange(503)
    for test_size in (0.1, 0.25, 60):
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, seed=1, stratify=True)
        want = int(numpy.ceil(503 * test_size)) if isinstance(test_size, float) else test_size
        assert len(xte) == want and len(xtr) == 503 - want
        assert sorted(numpy.concatenate([xtr, xte]).tolist()) == list(range(503))
        assert set(yte.tolist()) == set(ytr.tolist()) == set(y.tolist())
        share = numpy.bincount(yte, minlength=7) / len(yte)
        numpy.testing.assert_allclose(share, numpy.bincount(y) / 503, atol=0.02 + 1 / want)


def test_a_stratified_split_that_cannot_place_every_class_says_so():
    x = numpy.arange(40)
    with pytest.raises(ValueError, match=r"stratify: class 9 has only 1 sample; a stratified "
                                         r"split needs at least 2 of each class"):
        train_test_split(x, numpy.r_[numpy.arange(39) % 3, 9], test_size=0.2, stratify=True)
    with pytest.raises(ValueError, match=r"stratify: 20 classes cannot each have a place in a "
                                         r"test part of 4 of the 40 samples \(test_size 0.1\)"):
        train_test_split(x, numpy.arange(40) % 20, test_size=0.1, stratify=True)


def test_a_one_class_target_says_so_plainly(tmp_path, capsys):
    path = tmp_path / "one.csv"
    path.write_text("a,b,kind\n" + "".join(f"{i},{i * 2},big\n" for i in range(30)))
    code, _, _, err = header(capsys, str(path))
    assert code == 2
    assert err.strip() == ("dnn train: error: target: expected at least two classes to tell "
                           "apart; the column 'kind' holds one, 'big', in all 30 rows")


def test_one_target_column_as_n_by_1_is_the_same_task():
    """An npz's y of shape (n, 1) once crashed the rule (values of a 2-D target)."""
    y = numpy.arange(200) % 2
    assert tuple(choose_task(y[:, None])) == tuple(choose_task(y)) == \
        ("binary_crossentropy", 1, "sigmoid")
    real = numpy.linspace(0, 1, 200)[:, None]
    assert tuple(choose_task(real)) == ("mse", 1, "linear")
    assert tuple(choose_task(numpy.stack([real[:, 0], real[:, 0]], 1))) == ("mse", 2, "linear")


def test_dnn_train_on_an_npz_with_a_column_of_labels(tmp_path):
    from dnn.cli import main

    x = numpy.random.default_rng(0).normal(size=(200, 2))
    numpy.savez(tmp_path / "d.npz", x=x, y=(x[:, :1] > 0).astype(float))
    assert main(["train", str(tmp_path / "d.npz"), "--epochs", "2", "--verbose", "0"]) == 0
