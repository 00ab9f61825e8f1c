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
        # the floor is the step's own GEMMs and update: a step cannot beat it (noise aside)
        assert row["gemm_only_s"] < row["floor_s"] and 0 < row["fraction_of_floor"] <= 1.25
    ops = {k["op"] for k in record["kernels"]}
    assert "adam_update" in ops and all(k["fused_GBps"] > 0 for k in record["kernels"])
    assert record["limits"]["numpy"]["copy_GBps"] > 0
    assert record["environment"]["numpy"] and "blas" in record["environment"]
    assert "of floor" in proc.stdout and "copy bandwidth" in proc.stdout


def test_bench_rejects_unknown_model():
    proc = python("-m", "dnn.bench", "--models", "huge", "--no-torch", timeout=120)
    assert proc.returncode != 0 and "expected names from tiny" in proc.stderr
