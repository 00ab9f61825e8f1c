"""The scikit-learn fit-time benchmark runs and records what it claims; no timing is
asserted."""
import json

import pytest

pytest.importorskip("sklearn")

from dnn.bench import sklearn_bench  # noqa: E402


def test_sklearn_bench_runs_tiny_and_writes_json(tmp_path, capsys):
    out = tmp_path / "sklearn.json"
    sklearn_bench.main(["--epochs", "1", "--repeats", "1", "--hidden", "8", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["settings"]["epochs"] == 1 and record["settings"]["hidden_layer_sizes"] == [8]
    assert {"DNNClassifier", "MLPClassifier"} <= set(record["rows"])
    # skorch's row is there, or says why not (it is no dnn dependency).
    assert ("NeuralNetClassifier" in record["rows"]) != \
        ("NeuralNetClassifier" in record["skipped"])
    for name, row in record["rows"].items():
        assert row["fit_s"] > 0 and len(row["fit_s_all"]) == 1
        assert 0 <= row["test_accuracy"] <= 1
        if name != "DNNClassifier":
            assert record["ratios"][f"{name} / DNNClassifier"] > 0
    assert "MLPClassifier / DNNClassifier" in capsys.readouterr().out
    assert record["environment"]["scikit-learn"]
    assert [p.name for p in tmp_path.iterdir()] == ["sklearn.json"]  # no temporary left


def test_sklearn_bench_writes_nothing_unless_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    record = sklearn_bench.main(["--epochs", "1", "--repeats", "1", "--hidden", "4",
                                 "--no-skorch"])
    assert record["skipped"] == {"NeuralNetClassifier": "disabled by --no-skorch"}
    assert "disabled by --no-skorch" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_sklearn_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        sklearn_bench.main(["--hidden", "wide"])
    assert "--hidden: expected comma-separated widths" in capsys.readouterr().err
