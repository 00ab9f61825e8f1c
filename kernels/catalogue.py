"""The kernel catalogue, read from ``dnn_kernels.cu`` itself.

Every kernel in the source is a ``__device__`` template under a ``// dnn:kernel DTYPES``
line. This module parses those signatures and derives from them what other code would
otherwise keep by hand: the instantiations and their entry-point names, the
``extern "C"`` entry points (generated, for NVRTC and for the host compiler alike), and
each parameter's type, by which the runtimes (``kernels.cuda.CudaRuntime`` and
``kernels.host.HostRuntime``) convert the arguments that the launchers in
``kernels.launch`` pass. It also writes the prelude of constants that the source shares
with Python, and holds the NVRTC options: what the CUDA runtime passes and what CuPy
adds, in one place, so the NVRTC check compiles what runs.

Imports nothing beyond the standard library, NumPy and ``kernels.reference``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import re

import numpy

from . import reference

SOURCE_PATH = pathlib.Path(__file__).with_name("dnn_kernels.cu")
HOST_SHIM_PATH = pathlib.Path(__file__).with_name("host_shim.h")

# Threads per block of every launch, and the shared-memory reduction width, on a GPU.
# The host build takes it as a parameter (the tests build 32, 256 and 1024).
THREADS = 256
MAX_BLOCKS = 65535  # grid-stride loops cover the rest; more blocks only add launch work
# Partial sums a reduction's first launch may write (one per block): its grid's cap.
# 1024 blocks of 256 threads fill an H100 (132 SMs x 2048 threads) about twice over.
REDUCE_BLOCKS = 1024
# What kernels.cuda passes to CuPy's RawModule. --fmad=false: no fused multiply-adds,
# as the host build (-ffp-contract=off), so both round each product and each sum.
NVRTC_OPTIONS = ("--std=c++14", "--fmad=false")
# What CuPy (14) appends to them, in this order (cupy/cuda/compiler.py:
# _compile_with_cache_cuda and _compile_using_nvrtc_no_warning), around the
# -arch=sm_XX of the device (nvrtc_options puts it in its place). Before them it adds
# only include paths (-I, core.assemble_cupy_compiler_options), which a source that
# includes nothing does not see. tests/test_kernels.py records what CuPy really passes.
#
# -ftz=true flushes float32 denormals (|x| < 2^-126) to zero on the GPU, in the
# arithmetic and in bfloat16's float32 compute; float64 keeps them. The host build keeps
# them in every type, so where a float32 result or operand is denormal the two differ
# by less than 2^-126 (no kernel divides by a value that could be denormal: softmax's
# sum is >= 1, the normalizations add epsilon or clamp at it). Passing -ftz=false
# ourselves would not change that: CuPy appends -ftz=true after the caller's options,
# and NVRTC takes the later one, with a warning (cupy/cupy#9576).
CUPY_OPTIONS = ("-ftz=true",)
CUPY_OPTIONS_AFTER_ARCH = ("--device-as-default-execution-space",)
# ...and --pch last, when CUPY_NVRTC_USE_PCH=1 and NVRTC >= 12.8 (compile time only).
CUPY_PCH_OPTION = "--pch"


def nvrtc_options(arch, pch=False):
    """Every NVRTC option a kernel is compiled with on a device of ``arch`` ("sm_90"),
    in CuPy's order, include paths aside."""
    return (NVRTC_OPTIONS + CUPY_OPTIONS + (f"-arch={arch}",) + CUPY_OPTIONS_AFTER_ARCH
            + ((CUPY_PCH_OPTION,) if pch else ()))


DTYPE_SUFFIX = {"float32": "f32", "float64": "f64", "bfloat16": "bf16", "int64": "i64"}
C_TYPE = {"float32": "float", "float64": "double", "bfloat16": "dnn_bf16", "int64": "long long"}
FLOAT_DTYPES = ("float32", "float64", "bfloat16")  # what the arithmetic kernels are built for
_FIXED_TYPES = {"long long": "int64", "unsigned long long": "uint64", "int": "int32",
                "float": "float32", "double": "float64", "dnn_bf16": "bfloat16"}
ENTRY_PREFIX = "dnn_"

_KERNEL = re.compile(
    r"^// dnn:kernel(?P<dtypes>[^\n]*)\n"
    r"(?:template\s*<(?P<tparams>[^>]*)>\s*)?"
    r"__device__\s+void\s+(?P<name>\w+)\s*\((?P<params>[^)]*)\)", re.M)
_PARAM = re.compile(r"(?P<const>const\s+)?(?P<type>[\w<> ]+?)\s*(?P<ptr>\*)?\s*(?P<name>\w+)")


class CatalogueError(ValueError):
    """The kernel source breaks the conventions this module parses."""


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # as written: "S", "long long", "dnn_compute_t<S>", ...
    pointer: bool
    text: str  # the declaration as written, for the generated entry points

    def element_dtype(self, type_param, dtype):
        """The NumPy dtype name of this scalar, or of what this pointer points at."""
        if self.ctype == type_param:
            return dtype
        if type_param and self.ctype == f"dnn_compute_t<{type_param}>":
            return "float32" if dtype == "bfloat16" else dtype
        if self.ctype in _FIXED_TYPES:
            return _FIXED_TYPES[self.ctype]
        raise CatalogueError(f"parameter {self.text!r}: unsupported type {self.ctype!r}")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One ``// dnn:kernel`` template of the source."""

    name: str
    dtypes: tuple  # NumPy dtype names; () for an untyped kernel
    type_param: str | None  # the template's storage-type parameter ("S" or "T")
    per_activation: bool  # has an "int ACT" template parameter
    params: tuple

    def instantiations(self):
        """``[(dtype or None, activation or None)]``, one per entry point."""
        dtypes = self.dtypes or (None,)
        acts = reference.ELEMENTWISE_ACTIVATIONS if self.per_activation else (None,)
        return [(d, a) for d in dtypes for a in acts]

    def entry_name(self, dtype=None, activation=None):
        parts = [ENTRY_PREFIX + self.name]
        if activation is not None:
            parts.append(activation)
        if dtype is not None:
            parts.append(DTYPE_SUFFIX[dtype])
        return "_".join(parts)

    def signature(self, dtype=None):
        """``[(kind, numpy dtype name)]`` per parameter: kind "array" or "scalar"."""
        return [("array" if p.pointer else "scalar", p.element_dtype(self.type_param, dtype))
                for p in self.params]

    def entry_source(self, dtype=None, activation=None, host=False):
        """The ``extern "C" __global__`` entry point of one instantiation; with ``host``,
        the host build's, which runs the call once per thread of the configured grid
        (``host_shim.h``)."""
        ctype = C_TYPE[dtype] if dtype else None
        decls = [re.sub(rf"\b{self.type_param}\b", ctype, p.text) if ctype else p.text
                 for p in self.params]
        targs = [a for a in (ctype, activation and f"DNN_ACT_{activation.upper()}") if a]
        call = (self.name + (f"<{', '.join(targs)}>" if targs else "")
                + f"({', '.join(p.name for p in self.params)})")
        name = self.entry_name(dtype, activation)
        if host:
            call = f'dnn_host_run("{name}", [&] {{ {call}; }})'
        return f'extern "C" __global__ void {name}({", ".join(decls)}) {{\n    {call};\n}}\n'


def _parse_params(text, kernel):
    params = []
    for decl in (p.strip() for p in text.split(",")):
        match = _PARAM.fullmatch(" ".join(decl.split()))
        if match is None:
            raise CatalogueError(f"kernel {kernel}: cannot parse parameter {decl!r}")
        params.append(Param(match["name"], match["type"].strip(), bool(match["ptr"]),
                            " ".join(decl.split())))
    return tuple(params)


def parse(source):
    """``{name: Kernel}`` for every ``// dnn:kernel`` template in ``source``."""
    kernels = {}
    for match in _KERNEL.finditer(source):
        name = match["name"]
        dtypes = tuple(match["dtypes"].split())
        unknown = [d for d in dtypes if d not in DTYPE_SUFFIX]
        if unknown:
            raise CatalogueError(f"kernel {name}: unknown dtypes {unknown}; expected names "
                                 f"from {', '.join(DTYPE_SUFFIX)}")
        tparams = [t.split() for t in (match["tparams"] or "").split(",") if t.strip()]
        type_params = [t[1] for t in tparams if t[0] == "typename"]
        acts = [t[1] for t in tparams if t[0] == "int"]
        if len(type_params) != bool(dtypes) or acts not in ([], ["ACT"]) or \
                len(tparams) != len(type_params) + len(acts):
            raise CatalogueError(f"kernel {name}: expected one typename parameter when dtypes "
                                 f"are listed (and optionally int ACT); got template "
                                 f"<{match['tparams']}> with dtypes {list(dtypes)}")
        if name in kernels:
            raise CatalogueError(f"kernel {name}: defined twice")
        kernels[name] = Kernel(name, dtypes, type_params[0] if type_params else None,
                               bool(acts), _parse_params(match["params"], name))
        for dtype in dtypes or (None,):
            kernels[name].signature(dtype)  # every type must be one we can marshal
    if not kernels:
        raise CatalogueError("no '// dnn:kernel' lines found in the kernel source")
    return kernels


def read_source():
    return SOURCE_PATH.read_text()


@functools.lru_cache(maxsize=None)
def kernels():
    """The catalogue of the installed source: ``{name: Kernel}``."""
    return parse(read_source())


def prelude(threads=THREADS):
    """``#define``s of the constants the source shares with Python, each defined once
    here or in ``reference``; ``threads`` per block (the host build's parameter)."""
    lines = [f"#define DNN_THREADS {int(threads)}",
             f"#define DNN_REDUCE_BLOCKS {REDUCE_BLOCKS}",
             f"#define DNN_GELU_K {reference.GELU_K!r}",
             f"#define DNN_GELU_C {reference.GELU_C!r}",
             f"#define DNN_GELU_SQRT2 {reference.GELU_SQRT2!r}",
             f"#define DNN_GELU_SQRT_2PI {reference.GELU_SQRT_2PI!r}",
             f"#define DNN_AUC_EPSILON {reference.AUC_EPSILON!r}",
             f"#define DNN_TOP_K_FILL {reference.TOP_K_FILL!r}",
             f"#define DNN_PI {math.pi!r}",
             f"#define DNN_SCHEDULE_EXPONENTIAL {reference.SCHEDULE_EXPONENTIAL}",
             f"#define DNN_SCHEDULE_PIECEWISE {reference.SCHEDULE_PIECEWISE}",
             f"#define DNN_SCHEDULE_COSINE {reference.SCHEDULE_COSINE}",
             f"#define DNN_SCHEDULE_POLYNOMIAL {reference.SCHEDULE_POLYNOMIAL}",
             f"#define DNN_SCHEDULE_INVERSE_TIME {reference.SCHEDULE_INVERSE_TIME}",
             f"#define DNN_SCHEDULE_COSINE_RESTARTS {reference.SCHEDULE_COSINE_RESTARTS}",
             f"#define DNN_SEGMENT_GROUP {reference.SEGMENT_GROUP}",
             f"#define DNN_NADAM_DECAY {reference.NADAM_DECAY!r}",
             f"#define DNN_ACTIVATION_COUNT {len(reference.ELEMENTWISE_ACTIVATIONS)}"]
    lines += [f"#define DNN_ACT_{name.upper()} {code}"
              for code, name in enumerate(reference.ELEMENTWISE_ACTIVATIONS)]
    return "\n".join(lines) + "\n"


def compile_unit(source=None, name=SOURCE_PATH.name, only=None, host=False, threads=THREADS):
    """The text that is compiled: prelude, the source (its errors keep their own line
    numbers through ``#line``), then the generated entry points: all of them, or
    ``only`` one ``(kernel name, dtype, activation)``. With ``host``, the host build's
    unit: ``host_shim.h`` after the prelude, entry points that run every thread, and
    ``threads`` (at most) per block."""
    source = read_source() if source is None else source
    catalogue = parse(source)
    if only is None:
        entries = "".join(k.entry_source(d, a, host) for k in catalogue.values()
                          for d, a in k.instantiations())
    else:
        kernel, dtype, activation = only
        entries = catalogue[kernel].entry_source(dtype, activation, host)
    shim = (f'#line 1 "{HOST_SHIM_PATH.name}"\n' + HOST_SHIM_PATH.read_text()) if host else ""
    return (prelude(threads if host else THREADS) + shim + f'#line 1 "{name}"\n' + source
            + '\n#line 1 "dnn_kernels_entries.cu"\n' + entries)


def entry_names(source=None):
    """Every entry point's name, in catalogue order."""
    catalogue = kernels() if source is None else parse(source)
    return [k.entry_name(d, a) for k in catalogue.values() for d, a in k.instantiations()]


def numpy_dtype(name):
    """``numpy.dtype`` for a catalogue dtype name (bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return numpy.dtype(ml_dtypes.bfloat16)
    return numpy.dtype(name)
