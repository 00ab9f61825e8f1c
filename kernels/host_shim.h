// Compiles dnn_kernels.cu as host C++ (see kernels/host.py): the CUDA keywords go away
// and a launch becomes one "thread" (blockDim = gridDim = 1) whose grid-stride loops
// visit every element, in order. The arithmetic is then exactly the kernel's, on the
// host, where it can be checked against the NumPy references without a GPU.
#include <math.h>
#include <cmath>
#include <cstring>
using std::exp;
using std::log;
using std::log1p;
using std::pow;
using std::sqrt;
using std::tanh;
using std::fabs;

#define __global__
#define __device__
#define __forceinline__ inline
// One thread runs the block: shared memory is a plain array, barriers are no-ops.
#define __shared__ static
#define __syncthreads()

struct dnn_dim3 {
    unsigned int x, y, z;
};
static const dnn_dim3 blockIdx = {0, 0, 0};
static const dnn_dim3 threadIdx = {0, 0, 0};
static const dnn_dim3 blockDim = {1, 1, 1};
static const dnn_dim3 gridDim = {1, 1, 1};

static inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
