"""``python -m dnn.kernels --check``: compile every CUDA kernel with NVRTC (sm_80, sm_90)
and confirm each catalogued entry point is in the binary. (The host-compiled check of
each kernel's arithmetic against its reference is in the test suite.)"""
import argparse
import sys

from .nvrtc_check import ARCHS, KernelCompileError, check


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dnn.kernels")
    parser.add_argument("--check", action="store_true", help="compile every kernel with NVRTC")
    parser.add_argument("--arch", action="append", help=f"architectures (default {ARCHS})")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 0
    archs = tuple(args.arch) if args.arch else ARCHS
    try:
        n = check(archs=archs)
    except (KernelCompileError, RuntimeError) as exc:
        print(f"kernels: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {n} kernels for {', '.join(archs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
