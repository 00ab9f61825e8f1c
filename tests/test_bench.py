"""The benchmark runs and records what it claims; no timing is asserted."""
import json

from dnn.bench.models import MODELS
from support import python


def test_gemm_flop_count_matches_the_issue():
    medium = MODELS["medium"]
    # The issue: "at batch 256 the GEMMs alone are 2.86 GFLOP per step" (three GEMMs a
    # layer); dnn skips the first layer's input gradient.
    assert round(medium.gemm_flops_with_input_grad(256) / 1e9, 2) == 2.86
    assert medium.gemm_flops(256) == \
        medium.gemm_flops_with_input_grad(256) - 2 * 256 * 784 * 1024
    assert len(medium.gemm_calls(256)) == 3 + 3 + 2
    assert MODELS["tiny"].params() == 12 + 30 + 42 + 28 + 5


def test_bench_smoke_writes_json(tmp_path):
    out = tmp_path / "b.json"
    proc = python("-m", "dnn.bench", "--models", "tiny,small",
                           "--batches", "32", "--precisions", "float32", "--repeats", "1",
                           "--no-torch", "--out", str(out), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert {r["model"] for r in record["rows"]} == {"tiny", "small"}
    for row in record["rows"]:
        assert row["samples_per_s"] > 0 and row["gemm_peak_GFps"] > 0
        assert row["first_epoch_s"] > 0 and len(row["epoch_s"]) == 2  # 1 + --repeats
        # Measured, not compared: how two timings relate is the benchmark's to say.
        assert row["gemm_only_s"] > 0 and row["floor_s"] > 0 and row["fraction_of_floor"] > 0
        # The floor is sampled after every epoch timed, and the least sample kept.
        assert len(row["floor_samples_s"]) == len(row["epoch_s"]) == 2
        assert row["floor_s"] == min(row["floor_samples_s"])
        assert row["gemm_only_s"] == min(row["gemm_only_samples_s"])
    ops = {k["op"] for k in record["kernels"]}
    assert "adam_update" in ops and all(k["fused_GBps"] > 0 for k in record["kernels"])
    assert record["limits"]["numpy"]["copy_GBps"] > 0
    assert record["environment"]["numpy"] and "blas" in record["environment"]
    assert "of floor" in proc.stdout and "copy bandwidth" in proc.stdout


def test_bench_writes_its_json_only_where_asked(tmp_path):
    proc = python("-m", "dnn.bench", "--models", "tiny", "--batches", "32", "--precisions",
                  "float32", "--repeats", "1", "--no-torch", "--no-kernels", "--no-accuracy",
                  cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "of floor" in proc.stdout and "wrote" not in proc.stdout
    assert list(tmp_path.iterdir()) == []
    proc = python("-m", "dnn.bench", "--models", "tiny", "--no-torch", "--out",
                  str(tmp_path / "b.txt"), cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and "bench: --out: expected a file name ending in .json" \
        in proc.stderr and "samples/s" not in proc.stdout


def test_bench_rejects_unknown_model():
    proc = python("-m", "dnn.bench", "--models", "huge", "--no-torch", timeout=120)
    assert proc.returncode != 0 and "expected names from tiny" in proc.stderr


def test_bench_plot_draws_every_model_from_a_record(tmp_path):
    """``dnn bench --plot``: one panel per model, dnn and PyTorch eager against the
    batch size, written as a real PNG (this path once imported a helper that was gone)."""
    import pytest

    pytest.importorskip("matplotlib")
    from dnn.bench.__main__ import plot_record

    rows = [{"model": m, "backend": "numpy", "precision": "float32", "batch": b,
             "samples_per_s": 1000.0 * b, "torch": {"eager": {"samples_per_s": 900.0 * b}}}
            for m in ("tiny", "medium") for b in (32, 256)]
    out = tmp_path / "bench.png"
    plot_record({"rows": rows}, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_path_is_checked_before_the_benchmark_runs(tmp_path):
    proc = python("-m", "dnn.bench", "--models", "tiny", "--batches", "32", "--no-torch",
                  "--plot", str(tmp_path / "curves.txt"), cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "bench: --plot: expected a file name ending in .png, .svg or .pdf" in proc.stderr
    assert "samples/s" not in proc.stdout  # nothing was measured
