// Fused kernels for dnn's CuPy backend. One file, no headers.
//
// Each kernel is a __device__ template whose signature is preceded by the line
//     // dnn:kernel <the dtypes it is built for>
// and that line with the signature under it is the kernel's only definition:
// dnn/kernels/catalogue.py parses both, generates one extern "C" entry point per
// instantiation, <kernel>[_<activation>]_<f32|f64|bf16> (a kernel with a template
// parameter "int ACT" is built once per activation), and marshals every launch's
// arguments from the parsed parameter types. Constants that Python knows too (the block
// size, GELU's and leaky ReLU's coefficients, the activation codes) arrive in a
// generated prelude of #defines (catalogue.prelude), so each is written once.
//
// Kernels are grid-stride loops, so the same source also compiles as host C++:
// kernels/host_shim.h maps the CUDA keywords away and one "thread" runs every
// iteration. The one block-wide reduction (sum_to_scalar) uses shared memory and
// __syncthreads, which the shim turns into a static array and no-ops. That is how
// the arithmetic of each kernel is checked against kernels/reference.py without a GPU.
//
// bfloat16 is a storage type: values load as float, are computed in float, and store
// rounded to nearest even. dnn_compute_t<S> names the arithmetic type of storage S.

#if DNN_ACTIVATION_COUNT != 6
#error "reference.ELEMENTWISE_ACTIVATIONS changed: teach dnn_activate and its gradient"
#endif

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
// Loads widen to float, stores round to nearest even (NaN stays a quiet NaN): the same
// conversion as ml_dtypes' bfloat16 on the host.
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
template <typename S>
using dnn_compute_t = typename dnn_compute<S>::type;

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
    const T k = T(DNN_GELU_K);
    return T(0.5) * x * (T(1) + dnn_tanh(k * (x + T(DNN_GELU_C) * x * x * x)));
}

template <typename T>
__device__ __forceinline__ T dnn_gelu_grad(T x) {
    const T k = T(DNN_GELU_K);
    T t = dnn_tanh(k * (x + T(DNN_GELU_C) * x * x * x));
    T dt = k * (T(1) + T(3) * T(DNN_GELU_C) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dt;
}

template <typename T, int ACT>
__device__ __forceinline__ T dnn_activate(T x) {
    if (ACT == DNN_ACT_RELU) return x > T(0) ? x : T(0);
    if (ACT == DNN_ACT_LEAKY_RELU) return x > T(0) ? x : T(DNN_LEAKY_RELU_ALPHA) * x;
    if (ACT == DNN_ACT_SIGMOID) return dnn_sigmoid(x);
    if (ACT == DNN_ACT_TANH) return dnn_tanh(x);
    if (ACT == DNN_ACT_GELU) return dnn_gelu(x);
    return x;
}

// d(act)/dx from the output y (or the input x for gelu), times the upstream gradient.
template <typename T, int ACT>
__device__ __forceinline__ T dnn_activate_grad(T dy, T x, T y) {
    if (ACT == DNN_ACT_RELU) return y > T(0) ? dy : T(0);
    if (ACT == DNN_ACT_LEAKY_RELU) return y > T(0) ? dy : T(DNN_LEAKY_RELU_ALPHA) * dy;
    if (ACT == DNN_ACT_SIGMOID) return dy * y * (T(1) - y);
    if (ACT == DNN_ACT_TANH) return dy * (T(1) - y * y);
    if (ACT == DNN_ACT_GELU) return dy * dnn_gelu_grad(x);
    return dy;
}

// ------------------------------------------------------------ bias + activation
// y[r, c] = act(x[r, c] + bias[c]); x is (n / cols, cols) C-contiguous; y may be x.
// dnn:kernel float32 float64 bfloat16
template <typename S, int ACT>
__device__ void bias_act(const S* x, const S* bias, S* y, long long n, long long cols) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(i, n) {
        dnn_store(y[i], dnn_activate<C, ACT>(dnn_load(x[i]) + dnn_load(bias[i % cols])));
    }
}

// dx = dy * act'(.); x (the input) is read only by gelu and may be null otherwise,
// y (the output) is read by the others; dx may be dy.
// dnn:kernel float32 float64 bfloat16
template <typename S, int ACT>
__device__ void act_backward(const S* dy, const S* x, const S* y, S* dx, long long n) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(i, n) {
        dnn_store(dx[i], dnn_activate_grad<C, ACT>(dnn_load(dy[i]), x ? dnn_load(x[i]) : C(0),
                                                   y ? dnn_load(y[i]) : C(0)));
    }
}

// Row-wise softmax of (x + bias), one thread per row; bias may be null; y may be x.
// dnn:kernel float32 float64
template <typename T>
__device__ void bias_softmax(const T* x, const T* bias, T* y, long long rows, long long cols) {
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
// dnn:kernel float32 float64
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
// dnn:kernel float32 float64
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
// dnn:kernel float32 float64
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

// Binary cross-entropy of sigmoid(z): max(z,0) - z t + log1p(exp(-|z|)); each element's
// share of the mean, and the gradient.
// dnn:kernel float32 float64
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

// dnn:kernel float32 float64
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
// dnn:kernel float32 float64
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

// vel is read only with momentum != 0 and may be null otherwise.
// dnn:kernel float32 float64
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

// vel is read only with momentum != 0 and may be null otherwise.
// dnn:kernel float32 float64
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
// identical on every backend (reference.counter_uniform computes the same hash).
__device__ __forceinline__ unsigned long long dnn_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// mask[i] = 0 with probability rate, else 1/(1-rate). The counter (the optimizer's
// step count) is read from device memory, so a replayed CUDA graph draws new masks.
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void dropout_mask(S* mask, unsigned long long seed, const long long* counter,
                             long long n, dnn_compute_t<S> rate) {
    typedef dnn_compute_t<S> C;
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
// Sum of x[0:n] into out[0], by ONE block of DNN_THREADS threads: a grid-stride pass,
// then a shared-memory tree. Deterministic (fixed order), no atomics, and no
// temporary allocation, so it can live inside a captured CUDA graph (CuPy's CUB
// reductions allocate temporary storage from the memory pool, which a graph cannot
// own). Launch with exactly one block of DNN_THREADS threads.
// dnn:kernel float32 float64
template <typename T>
__device__ void sum_to_scalar(const T* x, long long n, T* out) {
    __shared__ T partial[DNN_THREADS];
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
// dnn:kernel float32 float64
template <typename T>
__device__ void accumulate(T* acc, const T* value, T weight) {
    if (blockIdx.x == 0 && threadIdx.x == 0) acc[0] += value[0] * weight;
}

// ------------------------------------------------------------------- bookkeeping
// step[0] += 1 unless skip[0] is set; skip may be null.
// dnn:kernel
__device__ void increment_step(long long* step, const int* skip) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !(skip && skip[0])) step[0] += 1;
}

// Record the first step whose loss is not finite: flag[0] = 1, bad_step[0] = step.
// dnn:kernel float32 float64
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

// Precision casts for mixed precision: the weights' bfloat16 copy, and the output.
// dnn:kernel
__device__ void cast_f32_bf16(const float* x, dnn_bf16* y, long long n) {
    DNN_LOOP(i, n) { dnn_store(y[i], x[i]); }
}

// dnn:kernel
__device__ void cast_bf16_f32(const dnn_bf16* x, float* y, long long n) {
    DNN_LOOP(i, n) { y[i] = dnn_load(x[i]); }
}
