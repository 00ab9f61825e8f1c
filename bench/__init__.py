"""Throughput benchmarks: dnn bench (or python -m dnn.bench)."""
