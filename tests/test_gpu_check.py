"""bench/gpu_check.sh runs the GPU tests first, each stage under its own time budget:
checked with stand-ins for python3, timeout and nvidia-smi that record their calls."""
import os
import shutil
import subprocess

import pytest
from support import ROOT

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

RECORD = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$GPU_CHECK_LOG"
"""
TIMEOUT = RECORD + 'shift\nexec "$@"\n'


def _run(tmp_path, *args):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("python3", RECORD), ("nvidia-smi", RECORD), ("timeout", TIMEOUT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", GPU_CHECK_LOG=str(log))
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out"),
                           *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in log.read_text().splitlines() if line.startswith("timeout")], \
        proc.stdout


def test_the_gpu_tests_run_first_each_stage_under_its_own_budget(tmp_path):
    stages, stdout = _run(tmp_path)
    assert [line.split()[:2] for line in stages] == [
        ["timeout", "240"], ["timeout", "120"], ["timeout", "120"], ["timeout", "240"],
        ["timeout", "300"]]
    gpu, parity, mpi, bench, rest = stages
    assert '-m gpu and not mpi --deselect' in gpu and "test_gpu.py::test_new_layers" in gpu
    assert parity.endswith("no:cacheprovider " + str(ROOT) + "/tests/test_gpu.py::"
                           "test_new_layers_losses_metrics_and_schedules_agree_across_backends")
    assert mpi.endswith("tests/test_distributed.py -m gpu and mpi")
    assert "-m dnn.bench --backends cupy" in bench
    assert rest.endswith("-m not gpu and not slow")
    assert [line.split(":")[0] for line in stdout.splitlines()] == [
        "kernels", "gpu", "parity", "mpi", "bench", "rest"]


def test_stages_can_be_chosen(tmp_path):
    stages, stdout = _run(tmp_path, "quick", "bench")
    assert len(stages) == 1 and stages[0].startswith("timeout 120 python3 -m dnn.bench")
    assert "--models medium" in stages[0]
