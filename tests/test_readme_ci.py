"""The README's two commands are what a new user runs; CI must run the same test command."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md must open with a code block holding the two commands"
    return [line for line in block.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_readme_opens_with_exactly_two_commands():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert commands[0].startswith("pip install ") and commands[0].endswith("dnn train")
    assert commands[1].startswith("pip install ") and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def extras():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


CUDA_WHEELS = ("cupy", "nvidia-", "torch", "jax")


def test_the_test_extra_installs_no_cuda_wheels():
    """A newcomer's `pip install '.[test]'` on a machine without a GPU: no CuPy, no
    NVRTC, no PyTorch (1.1 GB and a quarter of an hour on a loaded machine, once)."""
    test = extras()["test"]
    assert not [r for r in test if r.lower().startswith(CUDA_WHEELS)], test
    assert any(r.startswith("cupy-cuda") for r in extras()["nvrtc"])
    assert any(r.startswith("nvidia-cuda-nvrtc") for r in extras()["nvrtc"])
    assert any(r.startswith("torch") for r in extras()["bench"])


def test_ci_still_runs_the_nvrtc_checks_after_the_readme_command():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    readme = ci.index(readme_commands()[1])
    nvrtc = next(i for i, line in enumerate(ci) if "'.[nvrtc]'" in line)
    assert nvrtc > readme and "tests/test_kernels.py" in ci[nvrtc]


def test_the_readme_says_how_long_the_suite_takes():
    text = (ROOT / "README.md").read_text()
    intro = text[:text.index("\n## ")]
    assert re.search(r"takes about \d+ minutes", intro), intro
