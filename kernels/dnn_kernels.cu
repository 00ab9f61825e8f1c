// Fused kernels for dnn's CuPy backend. One file, no headers.
//
// Every kernel is a grid-stride loop with no shared memory and no synchronisation,
// so the same source also compiles as host C++ (kernels/host_shim.h maps the CUDA
// keywords away, and one "thread" then runs every iteration). That is how the
// arithmetic of each kernel is checked against its NumPy reference without a GPU.
//
// Kernels come per dtype: <name>_f32 and <name>_f64, instantiated at the bottom; the
// activation and dropout kernels also as <name>_bf16 for mixed precision, where
// values are stored as bfloat16 and computed in float.

#define DNN_LOOP(i, n)                                                               \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);   \
         i += (long long)blockDim.x * gridDim.x)

// ---------------------------------------------------------------- scalar maths
__device__ __forceinline__ float dnn_exp(float x) { return expf(x); }
__device__ __forceinline__ double dnn_exp(double x) { return exp(x); }
__device__ __forceinline__ float dnn_log(float x) { return logf(x); }
__device__ __forceinline__ double dnn_log(double x) { return log(x); }
__device__ __forceinline__ float dnn_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double dnn_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float dnn_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dnn_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float dnn_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dnn_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float dnn_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double dnn_abs(double x) { return fabs(x); }

// ------------------------------------------------------------------ bfloat16
// Storage only: loads widen to float, stores round to nearest even (NaN stays a quiet
// NaN), the same conversion as ml_dtypes' bfloat16 on the host.
struct dnn_bf16 {
    unsigned short bits;
};
template <typename S>
struct dnn_compute {
    typedef S type;
};
template <>
struct dnn_compute<dnn_bf16> {
    typedef float type;
};
__device__ __forceinline__ float dnn_load(float v) { return v; }
__device__ __forceinline__ double dnn_load(double v) { return v; }
__device__ __forceinline__ float dnn_load(dnn_bf16 v) {
    return __uint_as_float(((unsigned int)v.bits) << 16);
}
__device__ __forceinline__ void dnn_store(float& out, float v) { out = v; }
__device__ __forceinline__ void dnn_store(double& out, double v) { out = v; }
__device__ __forceinline__ void dnn_store(dnn_bf16& out, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        out.bits = (unsigned short)((u >> 16) | 0x0040u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    out.bits = (unsigned short)(u >> 16);
}

// Stable logistic: exp of a non-positive number only, relative precision kept
// for tiny probabilities.
template <typename T>
__device__ __forceinline__ T dnn_sigmoid(T x) {
    T e = dnn_exp(-dnn_abs(x));
    return (x >= T(0) ? T(1) : e) / (T(1) + e);
}

// GELU, tanh approximation (PyTorch's approximate='tanh').
template <typename T>
__device__ __forceinline__ T dnn_gelu(T x) {
    const T k = T(0.7978845608028654);  // sqrt(2/pi)
    return T(0.5) * x * (T(1) + dnn_tanh(k * (x + T(0.044715) * x * x * x)));
}

template <typename T>
__device__ __forceinline__ T dnn_gelu_grad(T x) {
    const T k = T(0.7978845608028654);
    T t = dnn_tanh(k * (x + T(0.044715) * x * x * x));
    T dt = k * (T(1) + T(3) * T(0.044715) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dt;
}

// Activation codes shared with kernels/cuda.py.
#define ACT_LINEAR 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_SIGMOID 3
#define ACT_TANH 4
#define ACT_GELU 5

template <typename T, int ACT>
__device__ __forceinline__ T dnn_activate(T x, T alpha) {
    if (ACT == ACT_RELU) return x > T(0) ? x : T(0);
    if (ACT == ACT_LEAKY_RELU) return x > T(0) ? x : alpha * x;
    if (ACT == ACT_SIGMOID) return dnn_sigmoid(x);
    if (ACT == ACT_TANH) return dnn_tanh(x);
    if (ACT == ACT_GELU) return dnn_gelu(x);
    return x;
}

// d(act)/dx from the output y (or the input x for gelu), times the upstream gradient.
template <typename T, int ACT>
__device__ __forceinline__ T dnn_activate_grad(T dy, T x, T y, T alpha) {
    if (ACT == ACT_RELU) return y > T(0) ? dy : T(0);
    if (ACT == ACT_LEAKY_RELU) return y > T(0) ? dy : alpha * dy;
    if (ACT == ACT_SIGMOID) return dy * y * (T(1) - y);
    if (ACT == ACT_TANH) return dy * (T(1) - y * y);
    if (ACT == ACT_GELU) return dy * dnn_gelu_grad(x);
    return dy;
}

// ------------------------------------------------------------ bias + activation
// y[r, c] = act(x[r, c] + bias[c]); x is (n / cols, cols) C-contiguous; y may be x.
// S is the storage type, C = dnn_compute<S>::type the arithmetic type.
template <typename S, int ACT>
__device__ void bias_act(const S* x, const S* bias, S* y, long long n, long long cols,
                         typename dnn_compute<S>::type alpha) {
    typedef typename dnn_compute<S>::type C;
    DNN_LOOP(i, n) {
        dnn_store(y[i], dnn_activate<C, ACT>(dnn_load(x[i]) + dnn_load(bias[i % cols]), alpha));
    }
}

// dx = dy * act'(.); dx may be dy.
template <typename S, int ACT>
__device__ void act_backward(const S* dy, const S* x, const S* y, S* dx, long long n,
                             typename dnn_compute<S>::type alpha) {
    typedef typename dnn_compute<S>::type C;
    DNN_LOOP(i, n) {
        dnn_store(dx[i], dnn_activate_grad<C, ACT>(dnn_load(dy[i]), x ? dnn_load(x[i]) : C(0),
                                                   y ? dnn_load(y[i]) : C(0), alpha));
    }
}


// Row-wise softmax of (x + bias), one thread per row; bias may be null; y may be x.
template <typename T>
__device__ void bias_softmax(const T* x, const T* bias, T* y, long long rows,
                             long long cols) {
    DNN_LOOP(r, rows) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        T m = xr[0] + (bias ? bias[0] : T(0));
        for (long long c = 1; c < cols; ++c) {
            T v = xr[c] + (bias ? bias[c] : T(0));
            m = v > m ? v : m;
        }
        T s = T(0);
        for (long long c = 0; c < cols; ++c) {
            T e = dnn_exp(xr[c] + (bias ? bias[c] : T(0)) - m);
            yr[c] = e;
            s += e;
        }
        T inv = T(1) / s;
        for (long long c = 0; c < cols; ++c) yr[c] *= inv;
    }
}

// dx = y * (dy - sum(dy * y)) per row; dx may be dy.
template <typename T>
__device__ void softmax_backward(const T* dy, const T* y, T* dx, long long rows,
                                 long long cols) {
    DNN_LOOP(r, rows) {
        const T* dyr = dy + r * cols;
        const T* yr = y + r * cols;
        T dot = T(0);
        for (long long c = 0; c < cols; ++c) dot += dyr[c] * yr[c];
        for (long long c = 0; c < cols; ++c) dx[r * cols + c] = yr[c] * (dyr[c] - dot);
    }
}

// ------------------------------------------------------------------------ losses
// The row max m and s = sum(exp(z - m)). The losses below work relative to m:
// lse - z would subtract two large, rounded numbers (at logits of 1e4 float32 then
// loses ~1e-3 of the loss).
template <typename T>
__device__ __forceinline__ void row_max_sum_exp(const T* zr, long long cols, T& m, T& s) {
    m = zr[0];
    for (long long c = 1; c < cols; ++c) m = zr[c] > m ? zr[c] : m;
    s = T(0);
    for (long long c = 0; c < cols; ++c) s += dnn_exp(zr[c] - m);
}

// Softmax cross-entropy from logits, integer labels: per-row loss (already divided by
// the batch size, so their sum is the mean) and the gradient, in one pass per row.
template <typename T>
__device__ void softmax_xent_sparse(const T* z, const long long* labels, T* grad,
                                    T* row_loss, long long rows, long long cols, T inv_n) {
    DNN_LOOP(r, rows) {
        const T* zr = z + r * cols;
        T m, s;
        row_max_sum_exp(zr, cols, m, s);
        T log_s = dnn_log(s), inv_s = T(1) / s;
        long long label = labels[r];
        row_loss[r] = (log_s - (zr[label] - m)) * inv_n;
        for (long long c = 0; c < cols; ++c) {
            T p = dnn_exp(zr[c] - m) * inv_s;
            grad[r * cols + c] = (p - (c == label ? T(1) : T(0))) * inv_n;
        }
    }
}

// The same with target rows t (one-hot or probabilities): d/dz = p * sum(t) - t.
template <typename T>
__device__ void softmax_xent_dense(const T* z, const T* t, T* grad, T* row_loss,
                                   long long rows, long long cols, T inv_n) {
    DNN_LOOP(r, rows) {
        const T* zr = z + r * cols;
        const T* tr = t + r * cols;
        T m, s;
        row_max_sum_exp(zr, cols, m, s);
        T log_s = dnn_log(s), inv_s = T(1) / s;
        T loss = T(0), mass = T(0);
        for (long long c = 0; c < cols; ++c) {
            loss += tr[c] * (log_s - (zr[c] - m));
            mass += tr[c];
        }
        row_loss[r] = loss * inv_n;
        for (long long c = 0; c < cols; ++c) {
            grad[r * cols + c] = (dnn_exp(zr[c] - m) * inv_s * mass - tr[c]) * inv_n;
        }
    }
}

// Binary cross-entropy of sigmoid(z): max(z,0) - z t + log1p(exp(-|z|)).
template <typename T>
__device__ void sigmoid_bce(const T* z, const T* t, T* grad, T* elem_loss, long long n,
                            T inv_n) {
    DNN_LOOP(i, n) {
        T zi = z[i], ti = t[i];
        elem_loss[i] = ((zi > T(0) ? zi : T(0)) - zi * ti + dnn_log1p(dnn_exp(-dnn_abs(zi))))
                       * inv_n;
        grad[i] = (dnn_sigmoid(zi) - ti) * inv_n;
    }
}

template <typename T>
__device__ void mse(const T* p, const T* t, T* grad, T* elem_loss, long long n, T inv_n) {
    DNN_LOOP(i, n) {
        T d = p[i] - t[i];
        elem_loss[i] = d * d * inv_n;
        grad[i] = T(2) * d * inv_n;
    }
}

// -------------------------------------------------------------------- optimizers
// The step count lives on the device: step[0] is the 1-based step of this update
// (advanced by increment_step before it), so a training step never waits for the
// host. When skip[0] is non-zero (a non-finite loss was seen), nothing changes.
template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, const long long* step, const int* skip,
                     long long n, T lr, T beta_1, T beta_2, T eps, T l2, T decay) {
    if (skip && skip[0]) return;
    double t = (double)step[0];
    T alpha = (T)((double)lr * sqrt(1.0 - pow((double)beta_2, t))
                  / (1.0 - pow((double)beta_1, t)));
    DNN_LOOP(i, n) {
        T gi = g[i] + l2 * p[i];
        T mi = m[i] + (T(1) - beta_1) * (gi - m[i]);
        T vi = v[i] + (T(1) - beta_2) * (gi * gi - v[i]);
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - alpha * mi / (dnn_sqrt(vi) + eps);
    }
}

template <typename T>
__device__ void sgd(T* p, const T* g, T* vel, const int* skip, long long n, T lr,
                    T momentum, int nesterov, T wd) {
    if (skip && skip[0]) return;
    DNN_LOOP(i, n) {
        T gi = g[i] + wd * p[i];
        if (momentum != T(0)) {
            T vi = momentum * vel[i] + gi;
            vel[i] = vi;
            gi = nesterov ? gi + momentum * vi : vi;
        }
        p[i] -= lr * gi;
    }
}

template <typename T>
__device__ void rmsprop(T* p, const T* g, T* sq, T* vel, const int* skip, long long n,
                        T lr, T rho, T eps, T momentum, T wd) {
    if (skip && skip[0]) return;
    DNN_LOOP(i, n) {
        T gi = g[i] + wd * p[i];
        T si = rho * sq[i] + (T(1) - rho) * gi * gi;
        sq[i] = si;
        T s = gi / (dnn_sqrt(si) + eps);
        if (momentum != T(0)) {
            T vi = momentum * vel[i] + lr * s;
            vel[i] = vi;
            p[i] -= vi;
        } else {
            p[i] -= lr * s;
        }
    }
}

// ----------------------------------------------------------------------- dropout
// Counter-based RNG: the uniform of element i is a splitmix64 hash of
// (seed, counter, i), so it needs no state beyond two integers on the device and is
// identical on every backend (backends/base.py computes the same hash with NumPy).
__device__ __forceinline__ unsigned long long dnn_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// mask[i] = 0 with probability rate, else 1/(1-rate). The counter (the optimizer's
// step count) is read from device memory, so a replayed CUDA graph draws new masks.
template <typename S>
__device__ void dropout_mask(S* mask, unsigned long long seed, const long long* counter,
                             long long n, typename dnn_compute<S>::type rate) {
    typedef typename dnn_compute<S>::type C;
    unsigned long long base =
        dnn_mix64(seed ^ ((unsigned long long)counter[0] * 0x9E3779B97F4A7C15ULL));
    C scale = C(1) / (C(1) - rate);
    DNN_LOOP(i, n) {
        unsigned long long h = dnn_mix64(base + (unsigned long long)i * 0xD1B54A32D192ED03ULL);
        C u = (C)(h >> 40) * C(5.9604644775390625e-08);  // 24 random bits / 2^24
        dnn_store(mask[i], u >= rate ? scale : C(0));
    }
}

// ---------------------------------------------------------------- reductions
// Sum of x[0:n] into out[0], by ONE block of SUM_THREADS threads: a grid-stride pass,
// then a shared-memory tree. Deterministic (fixed order), no atomics, and no
// temporary allocation, so it can live inside a captured CUDA graph (CuPy's CUB
// reductions allocate temporary storage from the memory pool, which a graph cannot
// own). Launch with exactly one block of SUM_THREADS threads.
#define SUM_THREADS 256
template <typename T>
__device__ void sum_to_scalar(const T* x, long long n, T* out) {
    __shared__ T partial[SUM_THREADS];
    T s = T(0);
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (unsigned int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = partial[0];
}

// acc[0] += value[0] * weight: the epoch's running loss, kept on the device.
template <typename T>
__device__ void accumulate(T* acc, const T* value, T weight) {
    if (blockIdx.x == 0 && threadIdx.x == 0) acc[0] += value[0] * weight;
}

// ------------------------------------------------------------------- bookkeeping
extern "C" __global__ void increment_step(long long* step, const int* skip) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !(skip && skip[0])) step[0] += 1;
}

// Record the first step whose loss is not finite: flag[0] = 1, bad_step[0] = step.
template <typename T>
__device__ void guard_finite(const T* loss, const long long* step, int* flag,
                             long long* bad_step) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !flag[0]) {
        T l = loss[0];
        if (!(l - l == T(0))) {  // NaN or +-inf; needs no isfinite()
            flag[0] = 1;
            bad_step[0] = step[0];
        }
    }
}

// ------------------------------------------------------------ instantiations
#define DNN_BIAS_ACT(NAME, ACT, S, C, SFX)                                              \
    extern "C" __global__ void bias_##NAME##_forward_##SFX(                           \
        const S* x, const S* bias, S* y, long long n, long long cols, C alpha) {       \
        bias_act<S, ACT>(x, bias, y, n, cols, alpha);                                 \
    }
#define DNN_ACT_BWD(NAME, ACT, S, C, SFX)                                               \
    extern "C" __global__ void NAME##_backward_##SFX(                                 \
        const S* dy, const S* x, const S* y, S* dx, long long n, C alpha) {            \
        act_backward<S, ACT>(dy, x, y, dx, n, alpha);                                 \
    }
#define DNN_DROPOUT(S, C, SFX)                                                          \
    extern "C" __global__ void dropout_mask_##SFX(                                     \
        S* mask, unsigned long long seed, const long long* counter, long long n,       \
        C rate) {                                                                      \
        dropout_mask<S>(mask, seed, counter, n, rate);                                 \
    }

// The kernels every storage type has: activations and dropout.
#define DNN_ELEMENTWISE(S, C, SFX)                                                      \
    DNN_BIAS_ACT(linear, ACT_LINEAR, S, C, SFX)                                         \
    DNN_BIAS_ACT(relu, ACT_RELU, S, C, SFX)                                             \
    DNN_BIAS_ACT(leaky_relu, ACT_LEAKY_RELU, S, C, SFX)                                 \
    DNN_BIAS_ACT(sigmoid, ACT_SIGMOID, S, C, SFX)                                       \
    DNN_BIAS_ACT(tanh, ACT_TANH, S, C, SFX)                                             \
    DNN_BIAS_ACT(gelu, ACT_GELU, S, C, SFX)                                             \
    DNN_ACT_BWD(relu, ACT_RELU, S, C, SFX)                                              \
    DNN_ACT_BWD(leaky_relu, ACT_LEAKY_RELU, S, C, SFX)                                  \
    DNN_ACT_BWD(sigmoid, ACT_SIGMOID, S, C, SFX)                                        \
    DNN_ACT_BWD(tanh, ACT_TANH, S, C, SFX)                                              \
    DNN_ACT_BWD(gelu, ACT_GELU, S, C, SFX)                                              \
    DNN_DROPOUT(S, C, SFX)

#define DNN_ALL(T, SFX)                                                                 \
    DNN_ELEMENTWISE(T, T, SFX)                                                          \
    extern "C" __global__ void bias_softmax_forward_##SFX(                             \
        const T* x, const T* bias, T* y, long long rows, long long cols) {             \
        bias_softmax<T>(x, bias, y, rows, cols);                                       \
    }                                                                                   \
    extern "C" __global__ void softmax_backward_##SFX(                                 \
        const T* dy, const T* y, T* dx, long long rows, long long cols) {              \
        softmax_backward<T>(dy, y, dx, rows, cols);                                    \
    }                                                                                   \
    extern "C" __global__ void softmax_xent_sparse_##SFX(                              \
        const T* z, const long long* labels, T* grad, T* row_loss, long long rows,     \
        long long cols, T inv_n) {                                                     \
        softmax_xent_sparse<T>(z, labels, grad, row_loss, rows, cols, inv_n);          \
    }                                                                                   \
    extern "C" __global__ void softmax_xent_dense_##SFX(                               \
        const T* z, const T* t, T* grad, T* row_loss, long long rows, long long cols,  \
        T inv_n) {                                                                     \
        softmax_xent_dense<T>(z, t, grad, row_loss, rows, cols, inv_n);                \
    }                                                                                   \
    extern "C" __global__ void sigmoid_bce_##SFX(                                      \
        const T* z, const T* t, T* grad, T* elem_loss, long long n, T inv_n) {         \
        sigmoid_bce<T>(z, t, grad, elem_loss, n, inv_n);                               \
    }                                                                                   \
    extern "C" __global__ void mse_##SFX(                                              \
        const T* p, const T* t, T* grad, T* elem_loss, long long n, T inv_n) {         \
        mse<T>(p, t, grad, elem_loss, n, inv_n);                                       \
    }                                                                                   \
    extern "C" __global__ void adam_##SFX(                                             \
        T* p, const T* g, T* m, T* v, const long long* step, const int* skip,          \
        long long n, T lr, T beta_1, T beta_2, T eps, T l2, T decay) {                 \
        adam<T>(p, g, m, v, step, skip, n, lr, beta_1, beta_2, eps, l2, decay);        \
    }                                                                                   \
    extern "C" __global__ void sgd_##SFX(                                              \
        T* p, const T* g, T* vel, const int* skip, long long n, T lr, T momentum,      \
        int nesterov, T wd) {                                                          \
        sgd<T>(p, g, vel, skip, n, lr, momentum, nesterov, wd);                        \
    }                                                                                   \
    extern "C" __global__ void rmsprop_##SFX(                                          \
        T* p, const T* g, T* sq, T* vel, const int* skip, long long n, T lr, T rho,    \
        T eps, T momentum, T wd) {                                                     \
        rmsprop<T>(p, g, sq, vel, skip, n, lr, rho, eps, momentum, wd);                \
    }                                                                                   \
    extern "C" __global__ void sum_to_scalar_##SFX(const T* x, long long n, T* out) {    \
        sum_to_scalar<T>(x, n, out);                                                   \
    }                                                                                   \
    extern "C" __global__ void accumulate_##SFX(T* acc, const T* value, T weight) {      \
        accumulate<T>(acc, value, weight);                                             \
    }                                                                                   \
    extern "C" __global__ void guard_finite_##SFX(                                     \
        const T* loss, const long long* step, int* flag, long long* bad_step) {        \
        guard_finite<T>(loss, step, flag, bad_step);                                   \
    }

DNN_ALL(float, f32)
DNN_ALL(double, f64)
DNN_ELEMENTWISE(dnn_bf16, float, bf16)

// Precision casts for mixed precision: the weights' bfloat16 copy, and the output.
extern "C" __global__ void cast_f32_bf16(const float* x, dnn_bf16* y, long long n) {
    DNN_LOOP(i, n) { dnn_store(y[i], x[i]); }
}
extern "C" __global__ void cast_bf16_f32(const dnn_bf16* x, float* y, long long n) {
    DNN_LOOP(i, n) { y[i] = dnn_load(x[i]); }
}
