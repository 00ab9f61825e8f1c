"""The kernel catalogue, read from ``dnn_kernels.cu`` itself.

Every kernel in the source is a ``__device__`` template under a ``// dnn:kernel DTYPES``
line. This module parses those signatures and derives from them what other code would
otherwise keep by hand: the instantiations and their entry-point names, the
``extern "C"`` entry points (generated, for NVRTC and for the host compiler alike), and
each parameter's type, which the launchers in ``kernels.runtime`` marshal arguments by.
It also writes the prelude of constants that the source shares with Python.

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

THREADS = 256  # threads per block of every launch, and the shared-memory reduction width
MAX_BLOCKS = 65535  # grid-stride loops cover the rest; more blocks only add launch work
# Partial sums a reduction's first launch may write (one per block): its grid's cap.
# 1024 blocks of 256 threads fill an H100 (132 SMs x 2048 threads) about twice over.
REDUCE_BLOCKS = 1024
# --fmad=false keeps the arithmetic identical to the host build that the tests check
# (-ffp-contract=off there).
NVRTC_OPTIONS = ("--std=c++14", "--fmad=false")

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

    def entry_source(self, dtype=None, activation=None):
        """The ``extern "C" __global__`` entry point of one instantiation."""
        ctype = C_TYPE[dtype] if dtype else None
        decls = [re.sub(rf"\b{self.type_param}\b", ctype, p.text) if ctype else p.text
                 for p in self.params]
        targs = [a for a in (ctype, activation and f"DNN_ACT_{activation.upper()}") if a]
        call = self.name + (f"<{', '.join(targs)}>" if targs else "")
        return (f'extern "C" __global__ void {self.entry_name(dtype, activation)}('
                f'{", ".join(decls)}) {{\n    {call}({", ".join(p.name for p in self.params)});'
                f"\n}}\n")


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


def prelude():
    """``#define``s of the constants the source shares with Python, each defined once
    here or in ``reference``."""
    lines = [f"#define DNN_THREADS {THREADS}",
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
             f"#define DNN_ACTIVATION_COUNT {len(reference.ELEMENTWISE_ACTIVATIONS)}"]
    lines += [f"#define DNN_ACT_{name.upper()} {code}"
              for code, name in enumerate(reference.ELEMENTWISE_ACTIVATIONS)]
    return "\n".join(lines) + "\n"


def compile_unit(source=None, name=SOURCE_PATH.name, only=None):
    """The text that is compiled: prelude, the source (its errors keep their own line
    numbers through ``#line``), then the generated entry points: all of them, or
    ``only`` one ``(kernel name, dtype, activation)``."""
    source = read_source() if source is None else source
    catalogue = parse(source)
    if only is None:
        entries = "".join(k.entry_source(d, a) for k in catalogue.values()
                          for d, a in k.instantiations())
    else:
        kernel, dtype, activation = only
        entries = catalogue[kernel].entry_source(dtype, activation)
    return (prelude() + f'#line 1 "{name}"\n' + source
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
