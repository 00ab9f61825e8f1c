"""The benchmark grid's models and their GEMM work per training step."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    sizes: tuple  # input width, then each Dense layer's units
    hidden: str  # hidden activation
    output: str  # output activation
    loss: str
    description: str

    @property
    def layer_shapes(self):
        return list(zip(self.sizes[:-1], self.sizes[1:]))

    def gemm_calls(self, batch):
        """Every GEMM of one training step as dnn issues it, in order:
        ``(a_shape, b_shape, trans_a, trans_b)``. Forward x@W per layer; backward
        x^T@dz (dW) per layer and dz@W^T (dx) for every layer but the first (nobody
        needs the gradient of the input)."""
        calls = [((batch, k), (k, n), False, False) for k, n in self.layer_shapes]
        for i, (k, n) in reversed(list(enumerate(self.layer_shapes))):
            calls.append(((batch, k), (batch, n), True, False))
            if i > 0:
                calls.append(((batch, n), (k, n), False, True))
        return calls

    def gemm_flops(self, batch):
        """FLOPs of the GEMMs dnn runs per step (2 per multiply-add)."""
        total = 0
        for a, b, ta, tb in self.gemm_calls(batch):
            m, k = (a[1], a[0]) if ta else a
            n = b[0] if tb else b[1]
            total += 2 * m * k * n
        return total

    def gemm_flops_with_input_grad(self, batch):
        """As ``gemm_flops`` plus the first layer's dx GEMM: three GEMMs per layer, the
        count the issue's "GEMM-bound time" uses."""
        k, n = self.layer_shapes[0]
        return self.gemm_flops(batch) + 2 * batch * k * n

    def params(self):
        return sum(k * n + n for k, n in self.layer_shapes)


MODELS = {
    "tiny": ModelSpec("tiny", (2, 4, 6, 6, 4, 1), "relu", "sigmoid", "binary_crossentropy",
                      "seed 002's 2-4-6-6-4-1 circles network"),
    "small": ModelSpec("small", (784, 256, 10), "relu", "softmax",
                       "sparse_categorical_crossentropy", "784-256-10 MLP"),
    "medium": ModelSpec("medium", (784, 1024, 1024, 10), "relu", "softmax",
                        "sparse_categorical_crossentropy", "784-1024-1024-10 MLP"),
    "wide": ModelSpec("wide", (4096, 4096, 4096, 4096, 4096), "relu", "linear", "mse",
                      "4 layers 4096 wide"),
}
