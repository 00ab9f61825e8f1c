"""Compile every kernel with NVRTC for real GPU architectures, with no GPU and no driver
(``cupy.cuda.nvrtc`` needs only libnvrtc, which the nvidia-cuda-nvrtc wheel ships), with
the options a kernel is compiled with at run time (``catalogue.nvrtc_options``: ours
and CuPy's)."""
from __future__ import annotations

import os

from . import catalogue

ARCHS = ("sm_80", "sm_90")


class KernelCompileError(RuntimeError):
    """NVRTC rejected the source; the message holds its log, with line numbers."""


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
    except Exception as exc:
        raise RuntimeError(f"the NVRTC check needs CuPy and NVRTC: pip install cupy-cuda13x "
                           f"nvidia-cuda-nvrtc (or pip install '.[nvrtc]' in the dnn checkout); "
                           f"import failed: {exc}") from exc
    return nvrtc


def uses_pch(nvrtc):
    """Whether CuPy adds --pch: CUPY_NVRTC_USE_PCH=1 and NVRTC 12.8 or later (as
    cupy/cuda/compiler.py decides)."""
    try:
        wanted = int(os.environ.get("CUPY_NVRTC_USE_PCH", "0")) == 1
    except ValueError:
        wanted = False
    return wanted and tuple(nvrtc.getVersion()) >= (12, 8)


def compile_unit(unit, arch, name=catalogue.SOURCE_PATH.name):
    """Compile a compile unit (``catalogue.compile_unit``) for ``arch`` (e.g. "sm_90")
    with the run-time options; returns the cubin bytes."""
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(unit, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, list(catalogue.nvrtc_options(arch, uses_pch(nvrtc))))
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise KernelCompileError(f"NVRTC failed for {arch}:\n{log}") from exc
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)


def check(source=None, archs=ARCHS, names=None):
    """Compile for every arch and confirm every catalogued entry point is in each binary.

    Returns the number of entry points compiled per architecture."""
    unit = catalogue.compile_unit(source)
    names = catalogue.entry_names(source) if names is None else names
    for arch in archs:
        cubin = compile_unit(unit, arch)
        missing = [n for n in names if (b".text." + n.encode()) not in cubin]
        if missing:
            raise KernelCompileError(f"{arch}: kernels missing from the binary: {missing}")
    return len(names)
