// Compiles dnn_kernels.cu as host C++ (see kernels/host.py): the CUDA keywords go away
// and a block becomes one "thread" (blockDim = 1). A launch of a grid of N blocks runs
// the blocks one after another (kernels/host.py sets blockIdx and gridDim through
// dnn_host_grid), so each block's grid-stride loop visits its share of the elements and
// the multi-block reductions write and add their partial sums as on a GPU. The
// arithmetic is then exactly the kernel's, on the host, where it can be checked against
// the NumPy references without a GPU.
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
static dnn_dim3 blockIdx = {0, 0, 0};
static const dnn_dim3 threadIdx = {0, 0, 0};
static const dnn_dim3 blockDim = {1, 1, 1};
static dnn_dim3 gridDim = {1, 1, 1};

// The block that the next call runs, of a grid of grid_size blocks.
extern "C" void dnn_host_grid(unsigned int block_index, unsigned int grid_size) {
    blockIdx.x = block_index;
    gridDim.x = grid_size;
}

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

// CUDA's 16-byte vector types, for the packed loads of the optimizer updates.
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) double2 {
    double x, y;
};

// One thread at a time on the host: an atomic addition is a plain one.
template <typename T>
static inline T atomicAdd(T* address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}
