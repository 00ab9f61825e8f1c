"""What several test modules share: the repository root, and subprocesses that run the
installed dnn (never the checkout)."""
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A working directory outside the checkout: ``python -m`` and ``python -c`` put their
# working directory first on sys.path, where the checkout's dnn/ would shadow the
# installed package (and lacks dnn.backends, which only the install maps in).
NEUTRAL_DIR = tempfile.gettempdir()


def python(*args, cwd=None, env=None, **kwargs):
    """Run ``python *args`` on the installed package; returns the CompletedProcess."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(env or {})
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run([sys.executable, *args], cwd=cwd or NEUTRAL_DIR, env=environ,
                          **kwargs)


def popen(*args, cwd=None, env=None, **kwargs):
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(env or {})
    return subprocess.Popen([sys.executable, *args], cwd=cwd or NEUTRAL_DIR, env=environ,
                            **kwargs)


def editable_install():
    """Whether dnn is installed in editable mode (pip install -e): the checkout's files
    are then the installed ones."""
    # Look past the working directory, whose build leftovers (dnn.egg-info) would answer.
    here = {"", os.getcwd(), str(ROOT)}
    for dist in importlib.metadata.distributions(
            name="dnn", path=[p for p in sys.path if p not in here]):
        text = dist.read_text("direct_url.json") or "{}"
        return bool(json.loads(text).get("dir_info", {}).get("editable"))
    return False
