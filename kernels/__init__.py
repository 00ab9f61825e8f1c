"""Fused CUDA kernels for the CuPy backend, each with a NumPy reference beside it.

Importing this package compiles nothing and needs neither CuPy nor a GPU.
"""
