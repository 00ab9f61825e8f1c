"""cuBLAS GEMMs through ctypes, usable inside CUDA stream capture.

CuPy 14.2's cuBLAS wrapper refuses calls during stream capture ("calling cuBLAS API
during stream capture is currently unsupported", cupy_backends' cublas.pyx), so a
captured training step cannot use it. This module calls the same libcublas that CuPy
loaded, with its own handle whose stream is set to the caller's current stream on
every call, and a fixed workspace so cuBLAS never allocates while a graph is being
captured. cublasSetStream resets the workspace to cuBLAS's default pool (the cuBLAS
docs, cublasSetStream: "unconditionally resets the cuBLAS library workspace back to the
default workspace pool"), so the workspace is set again after every stream switch.

Importing this module loads nothing; ``CublasHandle`` does the work on first use.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

import numpy

CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH = 0, 3
# cudaDataType and cublasComputeType_t values used by cublasGemmEx.
CUDA_R_32F, CUDA_R_16BF = 0, 14
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1
WORKSPACE_BYTES = 32 << 20


class CublasError(RuntimeError):
    pass


def _loaded_library_path(fragment):
    """The path of an already loaded shared library whose name contains ``fragment``."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.strip() else ""
                name = os.path.basename(path)
                if fragment in name and "Lt" not in name:
                    return path
    except OSError:
        pass
    return None


def load_libcublas(cupy):
    """The libcublas CuPy uses (so handles and streams agree), else the system one."""
    # CuPy may load libcublas lazily: creating its handle makes sure it is mapped.
    cupy.cuda.device.get_cublas_handle()
    path = _loaded_library_path("libcublas.so") or ctypes.util.find_library("cublas")
    if path is None:
        raise CublasError("libcublas not found: neither loaded by CuPy nor on the library path")
    return ctypes.CDLL(path)


class CublasHandle:
    """One cuBLAS handle on the current device with s/dgemm callable in capture."""

    def __init__(self, cupy):
        self.cupy = cupy
        self.lib = lib = load_libcublas(cupy)
        vp, i = ctypes.c_void_p, ctypes.c_int
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
        lib.cublasSetStream_v2.argtypes = [vp, vp]
        lib.cublasSetMathMode.argtypes = [vp, i]
        lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
        gemm_args = [vp, i, i, i, i, i, vp, vp, i, vp, i, vp, vp, i]
        lib.cublasSgemm_v2.argtypes = gemm_args
        lib.cublasDgemm_v2.argtypes = gemm_args
        lib.cublasGemmEx.argtypes = [vp, i, i, i, i, i, vp, vp, i, i, vp, i, i, vp, vp, i, i,
                                     i, i]
        for name in ("cublasCreate_v2", "cublasSetStream_v2", "cublasSetMathMode",
                     "cublasSetWorkspace_v2", "cublasSgemm_v2", "cublasDgemm_v2",
                     "cublasGemmEx"):
            getattr(lib, name).restype = i
        handle = vp()
        self._check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.handle = handle
        # A workspace of our own: cuBLAS must not allocate inside a captured graph.
        self.workspace = cupy.empty((WORKSPACE_BYTES,), dtype=numpy.uint8)
        self._set_workspace()
        self._stream = None
        self._mode = None
        # alpha = 1, beta = 0 in host memory (host pointer mode, the handle's default).
        self._f32 = numpy.array([1.0, 0.0], numpy.float32)
        self._f64 = numpy.array([1.0, 0.0], numpy.float64)

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise CublasError(f"{what} failed with cuBLAS status {status}")

    def _set_workspace(self):
        self._check(self.lib.cublasSetWorkspace_v2(self.handle, self.workspace.data.ptr,
                                                   WORKSPACE_BYTES), "cublasSetWorkspace")

    def _prepare(self, tf32):
        stream = self.cupy.cuda.get_current_stream().ptr
        if stream != self._stream:
            self._check(self.lib.cublasSetStream_v2(self.handle, stream), "cublasSetStream")
            self._set_workspace()  # cublasSetStream dropped it
            self._stream = stream
        mode = CUBLAS_TF32_TENSOR_OP_MATH if tf32 else CUBLAS_DEFAULT_MATH
        if mode != self._mode:
            self._check(self.lib.cublasSetMathMode(self.handle, mode), "cublasSetMathMode")
            self._mode = mode

    def gemm_row_major(self, a, b, out, trans_a, trans_b, tf32=False):
        """``out = op(a) @ op(b)`` for C-contiguous float32/float64 arrays, or bfloat16
        inputs with a bfloat16 or float32 output (float32 accumulation, tensor cores).

        Row-major C is column-major C^T = op(b)^T op(a)^T: the operands go in swapped,
        each with its own transpose flag, and nothing is copied.
        """
        m, n = out.shape
        k = a.shape[0] if trans_a else a.shape[1]
        if a.dtype.name == "bfloat16":
            return self._gemm_ex(a, b, out, trans_a, trans_b, m, n, k)
        double = a.dtype == numpy.float64
        self._prepare(tf32 and not double)
        scalars = self._f64 if double else self._f32
        alpha = scalars.ctypes.data
        beta = alpha + scalars.itemsize
        fn = self.lib.cublasDgemm_v2 if double else self.lib.cublasSgemm_v2
        status = fn(self.handle, CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
                    CUBLAS_OP_T if trans_a else CUBLAS_OP_N, n, m, k, alpha, b.data.ptr,
                    b.shape[1], a.data.ptr, a.shape[1], beta, out.data.ptr, n)
        self._check(status, "cublasSgemm" if not double else "cublasDgemm")
        return out

    def _gemm_ex(self, a, b, out, trans_a, trans_b, m, n, k):
        self._prepare(False)
        out_type = CUDA_R_16BF if out.dtype.name == "bfloat16" else CUDA_R_32F
        alpha = self._f32.ctypes.data  # compute type 32F: float scalars
        beta = alpha + self._f32.itemsize
        status = self.lib.cublasGemmEx(
            self.handle, CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
            CUBLAS_OP_T if trans_a else CUBLAS_OP_N, n, m, k, alpha, b.data.ptr, CUDA_R_16BF,
            b.shape[1], a.data.ptr, CUDA_R_16BF, a.shape[1], beta, out.data.ptr, out_type, n,
            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
        self._check(status, "cublasGemmEx")
        return out
