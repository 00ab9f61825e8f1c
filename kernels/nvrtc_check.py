"""Compile every kernel with NVRTC for real GPU architectures, with no GPU and no driver
(``cupy.cuda.nvrtc`` needs only libnvrtc, which the nvidia-cuda-nvrtc wheel ships)."""
from __future__ import annotations

from .source import all_kernel_names, read_source

ARCHS = ("sm_80", "sm_90")


class KernelCompileError(RuntimeError):
    """NVRTC rejected the source; the message holds its log, with line numbers."""


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
    except Exception as exc:
        raise RuntimeError(f"the NVRTC check needs CuPy and NVRTC: pip install '.[test]' "
                           f"(cupy-cuda13x and nvidia-cuda-nvrtc); import failed: {exc}") from exc
    return nvrtc


def compile_source(source, arch, name="dnn_kernels.cu"):
    """Compile ``source`` for ``arch`` (e.g. "sm_90"); returns the cubin bytes."""
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", "--std=c++14",
                                        "--fmad=false"])
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise KernelCompileError(f"NVRTC failed for {arch}:\n{log}") from exc
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)


def check(source=None, archs=ARCHS, names=None):
    """Compile for every arch and confirm every catalogued kernel is in each binary.

    Returns the number of kernels compiled per architecture."""
    source = read_source() if source is None else source
    names = all_kernel_names() if names is None else names
    for arch in archs:
        cubin = compile_source(source, arch)
        missing = [n for n in names if (b".text." + n.encode()) not in cubin]
        if missing:
            raise KernelCompileError(f"{arch}: kernels missing from the binary: {missing}")
    return len(names)
