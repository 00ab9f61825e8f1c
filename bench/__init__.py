"""Throughput benchmarks: python -m bench (or dnn bench)."""
