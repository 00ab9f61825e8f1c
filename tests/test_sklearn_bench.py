"""The scikit-learn fit-time benchmark runs and records what it claims; no timing is
asserted."""
import json

import pytest
from support import python

pytest.importorskip("sklearn")


def test_sklearn_bench_runs_tiny_and_writes_json(tmp_path):
    out = tmp_path / "sklearn.json"
    proc = python("-m", "dnn.bench.sklearn_bench", "--epochs", "1", "--repeats", "1",
                  "--hidden", "8", "--out", str(out), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
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
    assert "MLPClassifier / DNNClassifier" in proc.stdout
    assert record["environment"]["scikit-learn"]


def test_sklearn_bench_writes_nothing_unless_asked(tmp_path):
    proc = python("-m", "dnn.bench.sklearn_bench", "--epochs", "1", "--repeats", "1",
                  "--hidden", "4", "--no-skorch", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "disabled by --no-skorch" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_sklearn_bench_rejects_bad_arguments():
    proc = python("-m", "dnn.bench.sklearn_bench", "--hidden", "wide", timeout=120)
    assert proc.returncode != 0 and "--hidden: expected comma-separated widths" in proc.stderr
