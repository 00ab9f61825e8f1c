// Fused kernels for dnn's CuPy backend. One file, no headers.
//
// Each kernel is a __device__ template whose signature is preceded by the line
//     // dnn:kernel <the dtypes it is built for>
// and that line with the signature under it is the kernel's only definition:
// dnn/kernels/catalogue.py parses both, generates one extern "C" entry point per
// instantiation, <kernel>[_<activation>]_<f32|f64|bf16> (a kernel with a template
// parameter "int ACT" is built once per activation), and marshals every launch's
// arguments from the parsed parameter types. Constants that Python knows too (the block
// size, GELU's coefficients, the activation codes) arrive in a generated prelude of
// #defines (catalogue.prelude), so each is written once. Leaky ReLU's slope is a runtime
// argument (``slope``) of every kernel that applies an activation.
//
// The same source also compiles as host C++: kernels/host_shim.h maps the CUDA
// keywords away and runs each block as its blockDim.x threads, one fiber each, that
// switch at __syncthreads and share the block's shared memory, in several orders.
// That is how the arithmetic of each kernel, and its use of the block's threads, is
// checked against kernels/reference.py without a GPU.
//
// Every grid scales with its work (the launchers in kernels/launch.py size it). A
// reduction over n values runs in two launches and needs no temporary allocation, so
// it can live inside a captured CUDA graph: each block writes one partial sum into a
// preallocated buffer of DNN_REDUCE_BLOCKS slots (zeroing the slots a smaller grid
// leaves), then reduce_partials adds the slots in a fixed order. Row-wise kernels give
// each row a group of threads, sized to the row by the launcher.
//
// bfloat16 is a storage type: values load as float, are computed in float, and store
// rounded to nearest even. dnn_compute_t<S> names the arithmetic type of storage S.

#if DNN_ACTIVATION_COUNT != 7
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
__device__ __forceinline__ float dnn_erf(float x) { return erff(x); }
__device__ __forceinline__ double dnn_erf(double x) { return erf(x); }

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

// GELU, exact: x (erf(x / sqrt 2) + 1) / 2, in Keras's order of operations.
template <typename T>
__device__ __forceinline__ T dnn_gelu(T x) {
    return x * (dnn_erf(x / T(DNN_GELU_SQRT2)) + T(1)) / T(2);
}

// Its derivative: the normal CDF plus x times the normal density.
template <typename T>
__device__ __forceinline__ T dnn_gelu_grad(T x) {
    T cdf = (dnn_erf(x / T(DNN_GELU_SQRT2)) + T(1)) / T(2);
    return cdf + x * dnn_exp(-x * x / T(2)) / T(DNN_GELU_SQRT_2PI);
}

// GELU, tanh approximation (Keras's approximate=True, PyTorch's approximate='tanh').
template <typename T>
__device__ __forceinline__ T dnn_gelu_tanh(T x) {
    const T k = T(DNN_GELU_K);
    return T(0.5) * x * (T(1) + dnn_tanh(k * (x + T(DNN_GELU_C) * x * x * x)));
}

template <typename T>
__device__ __forceinline__ T dnn_gelu_tanh_grad(T x) {
    const T k = T(DNN_GELU_K);
    T t = dnn_tanh(k * (x + T(DNN_GELU_C) * x * x * x));
    T dt = k * (T(1) + T(3) * T(DNN_GELU_C) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dt;
}

// ``slope``: leaky ReLU's negative slope (>= 0); the other activations ignore it.
template <typename T, int ACT>
__device__ __forceinline__ T dnn_activate(T x, T slope) {
    if (ACT == DNN_ACT_RELU) return x > T(0) ? x : T(0);
    if (ACT == DNN_ACT_LEAKY_RELU) return x > T(0) ? x : slope * x;
    if (ACT == DNN_ACT_SIGMOID) return dnn_sigmoid(x);
    if (ACT == DNN_ACT_TANH) return dnn_tanh(x);
    if (ACT == DNN_ACT_GELU) return dnn_gelu(x);
    if (ACT == DNN_ACT_GELU_TANH) return dnn_gelu_tanh(x);
    return x;
}

// d(act)/dx from the output y (or the input x for gelu), times the upstream gradient.
template <typename T, int ACT>
__device__ __forceinline__ T dnn_activate_grad(T dy, T x, T y, T slope) {
    if (ACT == DNN_ACT_RELU) return y > T(0) ? dy : T(0);
    if (ACT == DNN_ACT_LEAKY_RELU) return y > T(0) ? dy : slope * dy;
    if (ACT == DNN_ACT_SIGMOID) return dy * y * (T(1) - y);
    if (ACT == DNN_ACT_TANH) return dy * (T(1) - y * y);
    if (ACT == DNN_ACT_GELU) return dy * dnn_gelu_grad(x);
    if (ACT == DNN_ACT_GELU_TANH) return dy * dnn_gelu_tanh_grad(x);
    return dy;
}

// ------------------------------------------------------------ block reductions
// Sum or max over the g consecutive threads of a group (g a power of two dividing
// blockDim.x); every thread of the block must call it, the same number of times, and
// every thread of a group gets its group's result. Fixed order: deterministic.
template <typename T, bool MAX>
__device__ __forceinline__ T dnn_group_reduce(T v, int g) {
    __shared__ T buf[DNN_THREADS];
    buf[threadIdx.x] = v;
    __syncthreads();
    const int lane = threadIdx.x % g;
    for (int s = g / 2; s > 0; s >>= 1) {
        if (lane < s) {
            T other = buf[threadIdx.x + s], mine = buf[threadIdx.x];
            buf[threadIdx.x] = MAX ? (other > mine ? other : mine) : mine + other;
        }
        __syncthreads();
    }
    T result = buf[threadIdx.x - lane];
    __syncthreads();  // buf is reused by the next call
    return result;
}

template <typename T>
__device__ __forceinline__ T dnn_group_sum(T v, int g) { return dnn_group_reduce<T, false>(v, g); }

template <typename T>
__device__ __forceinline__ T dnn_group_max(T v, int g) { return dnn_group_reduce<T, true>(v, g); }

// This block's partial sum into partials[blockIdx.x]; the slots past the grid are
// zeroed so that reduce_partials may add all DNN_REDUCE_BLOCKS of them. Call with the
// block's total (every thread holds it, from dnn_group_sum over the block).
template <typename T>
__device__ __forceinline__ void dnn_store_partial(T* partials, T total) {
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = total;
        for (long long s = blockIdx.x + gridDim.x; s < DNN_REDUCE_BLOCKS; s += gridDim.x) {
            partials[s] = T(0);
        }
    }
}

// Threads per row in a row-wise kernel: the launcher's choice, at most the block.
__device__ __forceinline__ int dnn_row_group(long long group) {
    return (int)(group < (long long)blockDim.x ? group : (long long)blockDim.x);
}

// The row-wise kernels give each row a group of g threads: a block holds
// blockDim.x / g rows at a time and strides over the rows with a trip count that is
// the same for every thread of the block (a thread past the last row is inactive but
// still takes part in the group reductions).

// ------------------------------------------------------------ bias + activation
// y[r, c] = act(x[r, c] + bias[c]); x is (n / cols, cols) C-contiguous; y may be x.
// dnn:kernel float32 float64 bfloat16
template <typename S, int ACT>
__device__ void bias_act(const S* x, const S* bias, S* y, long long n, long long cols,
                         dnn_compute_t<S> slope) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(i, n) {
        dnn_store(y[i], dnn_activate<C, ACT>(dnn_load(x[i]) + dnn_load(bias[i % cols]),
                                             slope));
    }
}

// dx = dy * act'(.); x (the input) is read only by gelu and may be null otherwise,
// y (the output) is read by the others; dx may be dy.
// dnn:kernel float32 float64 bfloat16
template <typename S, int ACT>
__device__ void act_backward(const S* dy, const S* x, const S* y, S* dx, long long n,
                             dnn_compute_t<S> slope) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(i, n) {
        dnn_store(dx[i], dnn_activate_grad<C, ACT>(dnn_load(dy[i]), x ? dnn_load(x[i]) : C(0),
                                                   y ? dnn_load(y[i]) : C(0), slope));
    }
}

// Row-wise softmax of (x + bias), a group of threads per row; bias may be null; y may
// be x.
// dnn:kernel float32 float64
template <typename T>
__device__ void bias_softmax(const T* x, const T* bias, T* y, long long rows, long long cols,
                             long long group) {
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        T m = active ? xr[0] + (bias ? bias[0] : T(0)) : T(0);
        for (long long c = lane; active && c < cols; c += g) {
            T v = xr[c] + (bias ? bias[c] : T(0));
            m = v > m ? v : m;
        }
        m = dnn_group_max(m, g);
        T s = T(0);
        for (long long c = lane; active && c < cols; c += g) {
            T e = dnn_exp(xr[c] + (bias ? bias[c] : T(0)) - m);
            yr[c] = e;
            s += e;
        }
        T inv = T(1) / dnn_group_sum(s, g);
        for (long long c = lane; active && c < cols; c += g) yr[c] *= inv;
    }
}

// dx = y * (dy - sum(dy * y)) per row; dx may be dy.
// dnn:kernel float32 float64
template <typename T>
__device__ void softmax_backward(const T* dy, const T* y, T* dx, long long rows,
                                 long long cols, long long group) {
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        const T* dyr = dy + r * cols;
        const T* yr = y + r * cols;
        T dot = T(0);
        for (long long c = lane; active && c < cols; c += g) dot += dyr[c] * yr[c];
        dot = dnn_group_sum(dot, g);
        for (long long c = lane; active && c < cols; c += g) {
            dx[r * cols + c] = yr[c] * (dyr[c] - dot);
        }
    }
}

// ------------------------------------------------------------------ normalization
// BatchNormalization's batch statistics come from column sums (cuBLAS GEMVs with a
// ones vector, issued by the backend) and the small kernels below; LayerNormalization
// is row-wise, a group of threads per row. Statistics are kept in the compute type C.

// out = (x - colsum / rows)^2, in C: the squared deviations whose column sums give the
// biased batch variance.
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void center_square(const S* x, const dnn_compute_t<S>* colsum,
                              dnn_compute_t<S>* out, long long rows, long long cols) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(i, rows * cols) {
        C d = dnn_load(x[i]) - colsum[i % cols] / C(rows);
        out[i] = d * d;
    }
}

// out = a * b in the compute type (the products whose column sums give dgamma).
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void product(const S* a, const S* b, dnn_compute_t<S>* out, long long n) {
    DNN_LOOP(i, n) out[i] = dnn_load(a[i]) * dnn_load(b[i]);
}

// Per column: mean = sum1 / rows, var = sum2 / rows (biased, as Keras), and when
// ``momentum`` >= 0 the moving statistics move towards them.
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void batch_stats(const dnn_compute_t<S>* sum1, const dnn_compute_t<S>* sum2,
                            dnn_compute_t<S>* mean, dnn_compute_t<S>* var,
                            dnn_compute_t<S>* moving_mean, dnn_compute_t<S>* moving_var,
                            long long rows, long long cols, dnn_compute_t<S> momentum) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(c, cols) {
        C m = sum1[c] / C(rows), v = sum2[c] / C(rows);
        mean[c] = m;
        var[c] = v;
        if (momentum >= C(0)) {
            moving_mean[c] = moving_mean[c] * momentum + m * (C(1) - momentum);
            moving_var[c] = moving_var[c] * momentum + v * (C(1) - momentum);
        }
    }
}

// y = gamma * (x - mean) / d + beta per column, d = sqrt(var + eps), or with ``clamp``
// d = max(sqrt(var), eps) (Keras' Normalization); mean, gamma, beta may be null (0, 1,
// 0); xhat (the normalized x, for the backward pass) may be null. With ``invert`` (Keras'
// Normalization(invert=True)) the map is undone instead: y = x * d + mean. y may be x.
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void column_affine(const S* x, const dnn_compute_t<S>* mean,
                              const dnn_compute_t<S>* var, const S* gamma, const S* beta,
                              S* y, S* xhat, long long rows, long long cols,
                              dnn_compute_t<S> eps, int clamp, int invert) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(i, rows * cols) {
        long long c = i % cols;
        C sd = clamp ? dnn_sqrt(var[c]) : dnn_sqrt(var[c] + eps);
        if (clamp && sd < eps) sd = eps;
        if (invert) {
            dnn_store(y[i], (mean ? mean[c] : C(0)) + dnn_load(x[i]) * sd);
            continue;
        }
        C xh = (dnn_load(x[i]) - (mean ? mean[c] : C(0))) / sd;
        if (xhat) dnn_store(xhat[i], xh);
        C scale = gamma ? dnn_load(gamma[c]) : C(1), shift = beta ? dnn_load(beta[c]) : C(0);
        dnn_store(y[i], scale * xh + shift);
    }
}

// BatchNormalization's input gradient. With ``batch`` (training: the statistics were
// the batch's), from the column sums dbeta = sum(dy) and dgamma = sum(dy * xhat):
// dx = gamma / sqrt(var + eps) / rows * (rows dy - dbeta - xhat dgamma); otherwise (the
// moving statistics, an affine map) dx = gamma / sqrt(var + eps) dy. gamma may be null
// (scale=False: 1).
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void batch_norm_backward(const S* dy, const S* xhat, const S* gamma,
                                    const dnn_compute_t<S>* var,
                                    const dnn_compute_t<S>* dgamma,
                                    const dnn_compute_t<S>* dbeta, S* dx, long long rows,
                                    long long cols, dnn_compute_t<S> eps, int batch) {
    typedef dnn_compute_t<S> C;
    DNN_LOOP(i, rows * cols) {
        long long c = i % cols;
        C scale = (gamma ? dnn_load(gamma[c]) : C(1)) / dnn_sqrt(var[c] + eps);
        C g = dnn_load(dy[i]);
        if (batch) g = (C(rows) * g - dbeta[c] - dnn_load(xhat[i]) * dgamma[c]) / C(rows);
        dnn_store(dx[i], scale * g);
    }
}

// LayerNormalization of each row over its columns: y = gamma * xhat + beta with
// xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps); gamma and beta may be null (1,
// 0). With ``rms`` (Keras' rms_scaling) the input is scaled without centring:
// xhat = x * rstd and y = gamma * xhat, and shift (null otherwise) keeps each row's
// mean * rstd. xhat and rstd are kept for the backward pass. y may be x.
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void layer_norm(const S* x, const S* gamma, const S* beta, S* y, S* xhat,
                           dnn_compute_t<S>* rstd, dnn_compute_t<S>* shift, long long rows,
                           long long cols, dnn_compute_t<S> eps, int rms, long long group) {
    typedef dnn_compute_t<S> C;
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        const S* xr = x + r * cols;
        C s = C(0);
        for (long long c = lane; active && c < cols; c += g) s += dnn_load(xr[c]);
        const C mean = dnn_group_sum(s, g) / C(cols);
        C q = C(0);
        for (long long c = lane; active && c < cols; c += g) {
            C d = dnn_load(xr[c]) - mean;
            q += d * d;
        }
        const C inv = C(1) / dnn_sqrt(dnn_group_sum(q, g) / C(cols) + eps);
        if (!active) continue;
        if (lane == 0) rstd[r] = inv;
        if (lane == 0 && shift) shift[r] = mean * inv;
        const C centre = rms ? C(0) : mean;
        for (long long c = lane; c < cols; c += g) {
            C xh = (dnn_load(xr[c]) - centre) * inv;
            dnn_store(xhat[r * cols + c], xh);
            C scaled = gamma ? dnn_load(gamma[c]) * xh : xh;
            dnn_store(y[r * cols + c], beta ? scaled + dnn_load(beta[c]) : scaled);
        }
    }
}

// dx = rstd / cols * (cols g - sum(g) - (xhat - shift) sum(g xhat)) per row, g = dy *
// gamma (gamma may be null: 1). With ``rms`` the sum(g) term is absent and shift holds
// the rows' mean * rstd (null otherwise: 0). dx may be dy.
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void layer_norm_backward(const S* dy, const S* xhat, const S* gamma,
                                    const dnn_compute_t<S>* rstd,
                                    const dnn_compute_t<S>* shift, S* dx, long long rows,
                                    long long cols, int rms, long long group) {
    typedef dnn_compute_t<S> C;
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        C s1 = C(0), s2 = C(0);
        for (long long c = lane; active && c < cols; c += g) {
            C gi = dnn_load(dy[r * cols + c]) * (gamma ? dnn_load(gamma[c]) : C(1));
            s1 += gi;
            s2 += gi * dnn_load(xhat[r * cols + c]);
        }
        s1 = dnn_group_sum(s1, g);
        s2 = dnn_group_sum(s2, g);
        if (!active) continue;
        const C k = C(cols), scale = rstd[r] / k, sum_g = rms ? C(0) : s1;
        const C sh = shift ? shift[r] : C(0);
        for (long long c = lane; c < cols; c += g) {
            C gi = dnn_load(dy[r * cols + c]) * (gamma ? dnn_load(gamma[c]) : C(1));
            C xh = dnn_load(xhat[r * cols + c]);
            dnn_store(dx[r * cols + c], scale * (k * gi - sum_g - (xh - sh) * s2));
        }
    }
}

// ------------------------------------------------------------------------ losses
// Each loss kernel writes the gradient and one partial sum of the mean loss per block
// (see dnn_store_partial); reduce_partials then gives the loss.
//
// The row max m and s = sum(exp(z - m)) over the group's row: the losses work relative
// to m, since lse - z would subtract two large, rounded numbers (at logits of 1e4
// float32 then loses ~1e-3 of the loss).
template <typename T>
__device__ __forceinline__ void row_max_sum_exp(const T* zr, long long cols, bool active,
                                                int lane, int g, T& m, T& s) {
    m = active ? zr[0] : T(0);
    for (long long c = lane; active && c < cols; c += g) m = zr[c] > m ? zr[c] : m;
    m = dnn_group_max(m, g);
    s = T(0);
    for (long long c = lane; active && c < cols; c += g) s += dnn_exp(zr[c] - m);
    s = dnn_group_sum(s, g);
}

// Softmax cross-entropy from logits, integer labels: the gradient, and the rows' shares
// of the mean loss summed per block. Each row's loss and gradient are scaled by its
// weight (weights may be null: all 1). With label smoothing ls the target row is
// (1 - ls) one_hot + ls / cols. Rows labelled ``ignore`` (Keras's ignore_class; -1, which
// no valid label is, when there is none) add nothing and get a zero gradient, and the
// mean is then over the other rows: ``valid`` (null without ignore_class) holds their
// count, and the sum is divided by it (by 1 / inv_n rows otherwise); none valid gives 0.
// dnn:kernel float32 float64
template <typename T>
__device__ void softmax_xent_sparse(const T* z, const long long* labels, const T* weights,
                                    T* grad, T* partials, long long rows, long long cols,
                                    T inv_n, T smoothing, long long group, long long ignore,
                                    const T* valid) {
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    const T off = smoothing / T(cols), on = T(1) - smoothing + off;
    if (valid) inv_n = valid[0] > T(0) ? T(1) / valid[0] : T(0);
    T total = T(0);
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        const T* zr = z + r * cols;
        T m, s;
        row_max_sum_exp(zr, cols, active, lane, g, m, s);
        T shifted = T(0);  // sum of (z - m) over the row, for the smoothed part
        for (long long c = lane; active && smoothing != T(0) && c < cols; c += g) {
            shifted += zr[c] - m;
        }
        shifted = dnn_group_sum(shifted, g);
        if (!active) continue;
        const long long label = labels[r];
        if (label == ignore) {
            for (long long c = lane; c < cols; c += g) grad[r * cols + c] = T(0);
            continue;
        }
        const T log_s = dnn_log(s), inv_s = T(1) / s, w = weights ? weights[r] : T(1);
        const T row_loss = (T(1) - smoothing) * (log_s - (zr[label] - m))
                           + off * (T(cols) * log_s - shifted);
        if (lane == 0) total += w * row_loss * inv_n;
        for (long long c = lane; c < cols; c += g) {
            T p = dnn_exp(zr[c] - m) * inv_s;
            grad[r * cols + c] = w * (p - (c == label ? on : off)) * inv_n;
        }
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// The labels other than ``ignore``, counted as partial sums: the rows a sparse
// cross-entropy with ignore_class averages over.
// dnn:kernel float32 float64
template <typename T>
__device__ void count_labels_other_than(const long long* labels, T* partials, long long n,
                                        long long ignore) {
    T total = T(0);
    DNN_LOOP(i, n) total += labels[i] != ignore ? T(1) : T(0);
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// The same with target rows t (one-hot or probabilities): d/dz = p * sum(t) - t, the
// target smoothed as t (1 - ls) + ls / cols.
// dnn:kernel float32 float64
template <typename T>
__device__ void softmax_xent_dense(const T* z, const T* t, const T* weights, T* grad,
                                   T* partials, long long rows, long long cols, T inv_n,
                                   T smoothing, long long group) {
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    const T keep = T(1) - smoothing, off = smoothing / T(cols);
    T total = T(0);
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        const T* zr = z + r * cols;
        const T* tr = t + r * cols;
        T m, s;
        row_max_sum_exp(zr, cols, active, lane, g, m, s);
        T log_s = active ? dnn_log(s) : T(0), loss = T(0), mass = T(0);
        for (long long c = lane; active && c < cols; c += g) {
            T tc = tr[c] * keep + off;
            loss += tc * (log_s - (zr[c] - m));
            mass += tc;
        }
        loss = dnn_group_sum(loss, g);
        mass = dnn_group_sum(mass, g);
        if (!active) continue;
        const T w = weights ? weights[r] : T(1), inv_s = T(1) / s;
        if (lane == 0) total += w * loss * inv_n;
        for (long long c = lane; c < cols; c += g) {
            T tc = tr[c] * keep + off;
            grad[r * cols + c] = w * (dnn_exp(zr[c] - m) * inv_s * mass - tc) * inv_n;
        }
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// The elementwise losses: each element's share of the mean (inv_n = 1 / elements) times
// its row's weight (weights may be null; rows have cols elements), summed per block,
// and its gradient. ``element(i, w)`` writes grad[i] and returns that share.
template <typename T, typename F>
__device__ __forceinline__ void dnn_elementwise_loss(long long n, long long cols,
                                                     const T* weights, T* partials,
                                                     F element) {
    T total = T(0);
    DNN_LOOP(i, n) total += element(i, weights ? weights[i / cols] : T(1));
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// Binary cross-entropy of sigmoid(z): max(z,0) - z t + log1p(exp(-|z|)), the target
// smoothed towards 1/2 as t (1 - ls) + ls / 2.
// dnn:kernel float32 float64
template <typename T>
__device__ void sigmoid_bce(const T* z, const T* t, const T* weights, T* grad, T* partials,
                            long long n, long long cols, T inv_n, T smoothing) {
    dnn_elementwise_loss(n, cols, weights, partials, [&](long long i, T w) {
        T zi = z[i], ti = t[i] * (T(1) - smoothing) + T(0.5) * smoothing;
        grad[i] = w * (dnn_sigmoid(zi) - ti) * inv_n;
        return w * ((zi > T(0) ? zi : T(0)) - zi * ti + dnn_log1p(dnn_exp(-dnn_abs(zi))))
               * inv_n;
    });
}

// dnn:kernel float32 float64
template <typename T>
__device__ void mse(const T* p, const T* t, const T* weights, T* grad, T* partials,
                    long long n, long long cols, T inv_n) {
    dnn_elementwise_loss(n, cols, weights, partials, [&](long long i, T w) {
        T d = p[i] - t[i];
        grad[i] = w * T(2) * d * inv_n;
        return w * d * d * inv_n;
    });
}

// Mean absolute error; the gradient of |d| at 0 is 0.
// dnn:kernel float32 float64
template <typename T>
__device__ void mae(const T* p, const T* t, const T* weights, T* grad, T* partials,
                    long long n, long long cols, T inv_n) {
    dnn_elementwise_loss(n, cols, weights, partials, [&](long long i, T w) {
        T d = p[i] - t[i];
        grad[i] = w * (d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0))) * inv_n;
        return w * dnn_abs(d) * inv_n;
    });
}

// Huber: d^2 / 2 where |d| <= delta, delta (|d| - delta / 2) beyond (as Keras).
// dnn:kernel float32 float64
template <typename T>
__device__ void huber(const T* p, const T* t, const T* weights, T* grad, T* partials,
                      long long n, long long cols, T inv_n, T delta) {
    dnn_elementwise_loss(n, cols, weights, partials, [&](long long i, T w) {
        T d = p[i] - t[i], a = dnn_abs(d);
        bool small = a <= delta;
        grad[i] = w * (small ? d : (d > T(0) ? delta : -delta)) * inv_n;
        return w * (small ? T(0.5) * d * d : delta * (a - T(0.5) * delta)) * inv_n;
    });
}

// A weight penalty l1 sum|w| + l2 sum w^2 as partial sums, and its gradient
// l1 sign(w) + 2 l2 w added to g (when g is not null).
// dnn:kernel float32 float64
template <typename T>
__device__ void regularize(const T* w, T* g, T* partials, long long n, T l1, T l2) {
    T total = T(0);
    DNN_LOOP(i, n) {
        T wi = w[i], sign = wi > T(0) ? T(1) : (wi < T(0) ? T(-1) : T(0));
        total += l1 * dnn_abs(wi) + l2 * wi * wi;
        if (g) g[i] += l1 * sign + T(2) * l2 * wi;
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// -------------------------------------------------------------------- optimizers
// The step count lives on the device: step[0] is the 1-based step of this update
// (advanced by increment_step before it), so a training step never waits for the
// host. When skip[0] is non-zero (a non-finite loss was seen), nothing changes.
//
// The updates stream over flat buffers: when every buffer is 16-byte aligned (the
// model's flat buffers are) each thread moves 16 bytes per load and store (a float4 or
// a double2), W = 16 / sizeof(T) elements; a tail, or unaligned buffers, go one element
// at a time. Each element's arithmetic is one function, used by both paths.
template <typename T>
struct dnn_pack;  // 16 bytes of T, loaded and stored by one instruction
template <>
struct dnn_pack<float> {
    typedef float4 type;
};
template <>
struct dnn_pack<double> {
    typedef double2 type;
};
template <typename T>
union dnn_packed {
    typename dnn_pack<T>::type vec;
    T s[16 / sizeof(T)];
};

__device__ __forceinline__ bool dnn_aligned16(const void* a, const void* b, const void* c,
                                              const void* d) {
    return (((unsigned long long)a | (unsigned long long)b | (unsigned long long)c |
             (unsigned long long)d) & 15ULL) == 0;
}

// Visits the elements of [0, n): ``vector(j)`` for the j-th pack of W elements when
// ``aligned``, then ``scalar(i)`` for what is left (everything when not aligned).
#define DNN_STREAM(T, n, aligned, vector, scalar)                                        \
    {                                                                                     \
        const long long W_ = 16 / sizeof(T);                                              \
        const long long packs_ = (aligned) ? (n) / W_ : 0;                                \
        DNN_LOOP(j_, packs_) { vector(j_); }                                              \
        DNN_LOOP(i_, (n) - packs_ * W_) { scalar(packs_ * W_ + i_); }                     \
    }

template <typename T>
__device__ __forceinline__ void adam_element(T& p, T g, T& m, T& v, T alpha, T beta_1,
                                             T beta_2, T eps, T l2, T decay) {
    T gi = g + l2 * p;
    m = m + (T(1) - beta_1) * (gi - m);
    v = v + (T(1) - beta_2) * (gi * gi - v);
    p = p * decay - alpha * m / (dnn_sqrt(v) + eps);
}

// The learning rate is read from device memory (lr[0]), so a schedule or a new rate
// changes it without capturing the step again. With ``decoupled`` the weight decay is
// AdamW's (p *= 1 - lr wd), otherwise L2 added to the gradient.
// dnn:kernel float32 float64
template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, const long long* step, const int* skip,
                     long long n, const T* lr, T beta_1, T beta_2, T eps, T wd,
                     int decoupled) {
    if (skip && skip[0]) return;
    const double t = (double)step[0];
    const T rate = lr[0], l2 = decoupled ? T(0) : wd;
    const T decay = decoupled ? T(1) - rate * wd : T(1);
    T alpha = (T)((double)rate * sqrt(1.0 - pow((double)beta_2, t))
                  / (1.0 - pow((double)beta_1, t)));
    typedef typename dnn_pack<T>::type V;
    auto vector = [&](long long j) {
        dnn_packed<T> pp, gp, mp, vp;
        pp.vec = ((const V*)p)[j];
        gp.vec = ((const V*)g)[j];
        mp.vec = ((const V*)m)[j];
        vp.vec = ((const V*)v)[j];
        for (int k = 0; k < (int)(16 / sizeof(T)); ++k) {
            adam_element(pp.s[k], gp.s[k], mp.s[k], vp.s[k], alpha, beta_1, beta_2, eps, l2,
                         decay);
        }
        ((V*)p)[j] = pp.vec;
        ((V*)m)[j] = mp.vec;
        ((V*)v)[j] = vp.vec;
    };
    auto scalar = [&](long long i) {
        adam_element(p[i], g[i], m[i], v[i], alpha, beta_1, beta_2, eps, l2, decay);
    };
    DNN_STREAM(T, n, dnn_aligned16(p, g, m, v), vector, scalar)
}

// The two updates below keep the formulas of files written before Keras 3 parity
// (formula "legacy" in an optimizer's config) only so that such files resume as they
// trained: PyTorch's momentum SGD and RMSprop with epsilon outside the root, both with
// L2 weight decay added to the gradient (reference.sgd_legacy, rmsprop_legacy).
template <typename T>
__device__ __forceinline__ void sgd_legacy_element(T& p, T g, T& vel, T lr, T momentum,
                                                   int nesterov, T wd) {
    T gi = g + wd * p;
    if (momentum != T(0)) {
        vel = momentum * vel + gi;
        gi = nesterov ? gi + momentum * vel : vel;
    }
    p -= lr * gi;
}

// vel is read only with momentum != 0 and may be null otherwise.
// dnn:kernel float32 float64
template <typename T>
__device__ void sgd_legacy(T* p, const T* g, T* vel, const int* skip, long long n,
                           const T* rate, T momentum, int nesterov, T wd) {
    if (skip && skip[0]) return;
    const T lr = rate[0];
    typedef typename dnn_pack<T>::type V;
    const bool moving = momentum != T(0);
    auto vector = [&](long long j) {
        dnn_packed<T> pp, gp, vp;
        pp.vec = ((const V*)p)[j];
        gp.vec = ((const V*)g)[j];
        if (moving) vp.vec = ((const V*)vel)[j];
        for (int k = 0; k < (int)(16 / sizeof(T)); ++k) {
            sgd_legacy_element(pp.s[k], gp.s[k], vp.s[k], lr, momentum, nesterov, wd);
        }
        ((V*)p)[j] = pp.vec;
        if (moving) ((V*)vel)[j] = vp.vec;
    };
    auto scalar = [&](long long i) {
        T unused = T(0);
        sgd_legacy_element(p[i], g[i], moving ? vel[i] : unused, lr, momentum, nesterov, wd);
    };
    DNN_STREAM(T, n, dnn_aligned16(p, g, vel, p), vector, scalar)
}

template <typename T>
__device__ __forceinline__ void rmsprop_legacy_element(T& p, T g, T& sq, T& vel, T lr, T rho,
                                                       T eps, T momentum, T wd) {
    T gi = g + wd * p;
    sq = rho * sq + (T(1) - rho) * gi * gi;
    T s = gi / (dnn_sqrt(sq) + eps);
    if (momentum != T(0)) {
        vel = momentum * vel + lr * s;
        p -= vel;
    } else {
        p -= lr * s;
    }
}

// vel is read only with momentum != 0 and may be null otherwise.
// dnn:kernel float32 float64
template <typename T>
__device__ void rmsprop_legacy(T* p, const T* g, T* sq, T* vel, const int* skip, long long n,
                               const T* rate, T rho, T eps, T momentum, T wd) {
    if (skip && skip[0]) return;
    const T lr = rate[0];
    typedef typename dnn_pack<T>::type V;
    const bool moving = momentum != T(0);
    auto vector = [&](long long j) {
        dnn_packed<T> pp, gp, sp, vp;
        pp.vec = ((const V*)p)[j];
        gp.vec = ((const V*)g)[j];
        sp.vec = ((const V*)sq)[j];
        if (moving) vp.vec = ((const V*)vel)[j];
        for (int k = 0; k < (int)(16 / sizeof(T)); ++k) {
            rmsprop_legacy_element(pp.s[k], gp.s[k], sp.s[k], vp.s[k], lr, rho, eps, momentum,
                                   wd);
        }
        ((V*)p)[j] = pp.vec;
        ((V*)sq)[j] = sp.vec;
        if (moving) ((V*)vel)[j] = vp.vec;
    };
    auto scalar = [&](long long i) {
        T unused = T(0);
        rmsprop_legacy_element(p[i], g[i], sq[i], moving ? vel[i] : unused, lr, rho, eps,
                               momentum, wd);
    };
    DNN_STREAM(T, n, dnn_aligned16(p, g, sq, vel), vector, scalar)
}

// ------------------------------------------------ Keras 3's apply around each rule
// The *_apply updates do, in their one pass, what Keras 3's BaseOptimizer.apply does
// around an optimizer's update_step (reference.apply is the definition):
//   accumulation: with accumulate = k > 1, a step whose number is not a multiple of k
//     only adds g to grad_acc; the k-th uses (g + grad_acc) / k and empties it, and the
//     rule counts updates, not steps;
//   clipping: clipvalue > 0 clamps g; clip_scale (per segment, segment_clip_scales'
//     output) scales it;
//   weight decay: p *= 1 - lr wd[segment] before the rule (wd null: none);
//   the weights' moving average: ema follows p at every step (momentum 0 while Keras'
//     iteration count is 0), and every ema_every iterations p takes its value (0: never).
// groups holds the segment of each DNN_SEGMENT_GROUP consecutive elements (null: one
// segment, 0), so a per-weight value costs one small load per pack. A null array is a
// feature switched off; every branch on one is the same for the whole grid.
template <typename T>
struct dnn_apply {
    T* grad_acc;
    T k;
    bool update;
    T clipvalue;
    const T* clip_scale;
    const int* groups;
    const T* wd;
    T rate;
    T* ema;
    T ema_momentum;
    bool overwrite;
};

// The apply of the step numbered step[0] (1-based, every accumulation step counted).
template <typename T>
__device__ __forceinline__ dnn_apply<T> dnn_make_apply(const long long* step, const T* lr,
                                                       T* grad_acc, long long accumulate,
                                                       T clipvalue, const T* clip_scale,
                                                       const int* groups, const T* wd, T* ema,
                                                       T ema_momentum, long long ema_every) {
    const long long s = step[0], k = accumulate > 1 ? accumulate : 1;
    const long long done = (s - 1) / k;  // Keras' optimizer.iterations before this step
    dnn_apply<T> a;
    a.grad_acc = k > 1 ? grad_acc : nullptr;
    a.k = T(k);
    a.update = s % k == 0;
    a.clipvalue = clipvalue;
    a.clip_scale = clip_scale;
    a.groups = groups;
    a.wd = wd;
    a.rate = lr[0];
    a.ema = ema;
    a.ema_momentum = done != 0 ? ema_momentum : T(0);
    a.overwrite = ema_every > 0 && (done + 1) % ema_every == 0;
    return a;
}

// The 1-based number of this update as a rule counts it (accumulation steps aside).
__device__ __forceinline__ long long dnn_update_count(const long long* step,
                                                      long long accumulate) {
    return accumulate > 1 ? step[0] / accumulate : step[0];
}

template <typename T, typename Rule>
__device__ __forceinline__ void dnn_apply_element(const dnn_apply<T>& a, long long seg, T& p,
                                                  T g, T& s0, T& s1, T& s2, T& acc, T& ema,
                                                  const Rule& rule) {
    if (a.grad_acc && !a.update) {
        acc += g;
    } else {
        if (a.grad_acc) {
            g = (g + acc) / a.k;
            acc = T(0);
        }
        if (a.clipvalue > T(0)) {
            g = g < -a.clipvalue ? -a.clipvalue : (g > a.clipvalue ? a.clipvalue : g);
        }
        if (a.clip_scale) g *= a.clip_scale[seg];
        if (a.wd) p *= T(1) - a.rate * a.wd[seg];
        rule(p, g, s0, s1, s2);
    }
    if (a.ema) {
        ema = a.ema_momentum * ema + (T(1) - a.ema_momentum) * p;
        if (a.overwrite) p = ema;
    }
}

// One pass over p, g, the rule's state s0..s2 (null where it has fewer) and the apply's
// buffers, 16 bytes per load where every buffer is aligned (see DNN_STREAM).
// ``rule(p, g, s0, s1, s2)`` updates one element.
template <typename T, typename Rule>
__device__ __forceinline__ void dnn_apply_stream(T* p, const T* g, T* s0, T* s1, T* s2,
                                                 long long n, const dnn_apply<T>& a,
                                                 const Rule& rule) {
    typedef typename dnn_pack<T>::type V;
    const long long W = 16 / sizeof(T);
    auto vector = [&](long long j) {
        dnn_packed<T> pp, gp, p0, p1, p2, pa, pe;
        pp.vec = ((const V*)p)[j];
        gp.vec = ((const V*)g)[j];
        if (s0) p0.vec = ((const V*)s0)[j];
        if (s1) p1.vec = ((const V*)s1)[j];
        if (s2) p2.vec = ((const V*)s2)[j];
        if (a.grad_acc) pa.vec = ((const V*)a.grad_acc)[j];
        if (a.ema) pe.vec = ((const V*)a.ema)[j];
        const long long seg = a.groups ? a.groups[j * W / DNN_SEGMENT_GROUP] : 0;
        for (int k = 0; k < (int)W; ++k) {
            dnn_apply_element(a, seg, pp.s[k], gp.s[k], p0.s[k], p1.s[k], p2.s[k], pa.s[k],
                              pe.s[k], rule);
        }
        ((V*)p)[j] = pp.vec;
        if (s0) ((V*)s0)[j] = p0.vec;
        if (s1) ((V*)s1)[j] = p1.vec;
        if (s2) ((V*)s2)[j] = p2.vec;
        if (a.grad_acc) ((V*)a.grad_acc)[j] = pa.vec;
        if (a.ema) ((V*)a.ema)[j] = pe.vec;
    };
    auto scalar = [&](long long i) {  // values in registers, stored where there are arrays
        T pi = p[i], v0 = s0 ? s0[i] : T(0), v1 = s1 ? s1[i] : T(0), v2 = s2 ? s2[i] : T(0);
        T va = a.grad_acc ? a.grad_acc[i] : T(0), ve = a.ema ? a.ema[i] : T(0);
        dnn_apply_element(a, a.groups ? (long long)a.groups[i / DNN_SEGMENT_GROUP] : 0LL, pi,
                          g[i], v0, v1, v2, va, ve, rule);
        p[i] = pi;
        if (s0) s0[i] = v0;
        if (s1) s1[i] = v1;
        if (s2) s2[i] = v2;
        if (a.grad_acc) a.grad_acc[i] = va;
        if (a.ema) a.ema[i] = ve;
    };
    DNN_STREAM(T, n, dnn_aligned16(p, g, s0, s1) && dnn_aligned16(s2, a.grad_acc, a.ema, p),
               vector, scalar)
}

// Each *_apply kernel ends with the same parameters, Keras 3's apply (see above):
//   T* grad_acc, long long accumulate, T clipvalue, const T* clip_scale,
//   const int* groups, const T* wd, T* ema, T ema_momentum, long long ema_every
// and returns at once when skip[0] is set. The learning rate is read from lr[0].

// SGD: b = m b - lr g; p += b (Nesterov: p += m b - lr g); without momentum p -= lr g.
// b is read only with momentum != 0 and may be null otherwise.
// dnn:kernel float32 float64
template <typename T>
__device__ void sgd_apply(T* p, const T* g, T* b, const long long* step, const int* skip,
                          long long n, const T* lr, T momentum, int nesterov, T* grad_acc,
                          long long accumulate, T clipvalue, const T* clip_scale,
                          const int* groups, const T* wd, T* ema, T ema_momentum,
                          long long ema_every) {
    if (skip && skip[0]) return;
    const dnn_apply<T> a = dnn_make_apply(step, lr, grad_acc, accumulate, clipvalue, clip_scale,
                                          groups, wd, ema, ema_momentum, ema_every);
    const T rate = lr[0];
    const bool moving = momentum != T(0);
    auto rule = [&](T& pi, T gi, T& bi, T&, T&) {
        if (moving) {
            bi = bi * momentum - gi * rate;
            pi += nesterov ? bi * momentum - gi * rate : bi;
        } else {
            pi -= gi * rate;
        }
    };
    dnn_apply_stream(p, g, moving ? b : (T*)nullptr, (T*)nullptr, (T*)nullptr, n, a, rule);
}

// RMSprop: sq = rho sq + (1 - rho) g^2; centered (avg not null) avg = rho avg + (1 - rho) g
// and d = sq - avg^2 + eps, else d = sq + eps; the increment lr g / sqrt(d) is taken
// directly or, with momentum, through vel = momentum vel + increment (vel may be null
// without momentum).
// dnn:kernel float32 float64
template <typename T>
__device__ void rmsprop_apply(T* p, const T* g, T* sq, T* vel, T* avg, const long long* step,
                              const int* skip, long long n, const T* lr, T rho, T eps,
                              T momentum, T* grad_acc, long long accumulate, T clipvalue,
                              const T* clip_scale, const int* groups, const T* wd, T* ema,
                              T ema_momentum, long long ema_every) {
    if (skip && skip[0]) return;
    const dnn_apply<T> a = dnn_make_apply(step, lr, grad_acc, accumulate, clipvalue, clip_scale,
                                          groups, wd, ema, ema_momentum, ema_every);
    const T rate = lr[0];
    const bool moving = momentum != T(0), centered = avg != nullptr;
    auto rule = [&](T& pi, T gi, T& si, T& vi, T& ai) {
        si = rho * si + (T(1) - rho) * (gi * gi);
        T d = si + eps;
        if (centered) {
            ai = rho * ai + (T(1) - rho) * gi;
            d = si - ai * ai + eps;
        }
        const T increment = rate * gi / dnn_sqrt(d);
        if (moving) {
            vi = momentum * vi + increment;
            pi -= vi;
        } else {
            pi -= increment;
        }
    };
    dnn_apply_stream(p, g, sq, moving ? vel : (T*)nullptr, avg, n, a, rule);
}

// Adam at the update's 1-based number t: m += (g - m)(1 - beta_1), v += (g^2 - v)(1 -
// beta_2), p -= alpha m / (sqrt(v) + eps) with alpha = lr sqrt(1 - beta_2^t) / (1 -
// beta_1^t); AMSGrad (vhat not null) takes the root of vhat = max(vhat, v). The plain
// update (no AMSGrad, nothing of the apply but a uniform decay) is the adam kernel.
// dnn:kernel float32 float64
template <typename T>
__device__ void adam_apply(T* p, const T* g, T* m, T* v, T* vhat, const long long* step,
                           const int* skip, long long n, const T* lr, T beta_1, T beta_2,
                           T eps, T* grad_acc, long long accumulate, T clipvalue,
                           const T* clip_scale, const int* groups, const T* wd, T* ema,
                           T ema_momentum, long long ema_every) {
    if (skip && skip[0]) return;
    const dnn_apply<T> a = dnn_make_apply(step, lr, grad_acc, accumulate, clipvalue, clip_scale,
                                          groups, wd, ema, ema_momentum, ema_every);
    const double t = (double)dnn_update_count(step, accumulate);
    const T alpha = (T)((double)lr[0] * sqrt(1.0 - pow((double)beta_2, t))
                        / (1.0 - pow((double)beta_1, t)));
    const bool amsgrad = vhat != nullptr;
    auto rule = [&](T& pi, T gi, T& mi, T& vi, T& hi) {
        mi = mi + (gi - mi) * (T(1) - beta_1);
        vi = vi + (gi * gi - vi) * (T(1) - beta_2);
        T d = vi;
        if (amsgrad) {
            hi = hi > vi ? hi : vi;
            d = hi;
        }
        pi -= mi * alpha / (dnn_sqrt(d) + eps);
    };
    dnn_apply_stream(p, g, m, v, vhat, n, a, rule);
}

// Nadam (Keras 3): the momentum schedule u_i = beta_1 (1 - 0.5 DNN_NADAM_DECAY^i) and its
// running product, which update t reads from u_product[(t - 1) % 2] and writes (one
// thread) to u_product[t % 2]: every thread reads the slot no thread writes.
// dnn:kernel float32 float64
template <typename T>
__device__ void nadam_apply(T* p, const T* g, T* m, T* v, double* u_product,
                            const long long* step, const int* skip, long long n, const T* lr,
                            T beta_1, T beta_2, T eps, T* grad_acc, long long accumulate,
                            T clipvalue, const T* clip_scale, const int* groups, const T* wd,
                            T* ema, T ema_momentum, long long ema_every) {
    if (skip && skip[0]) return;
    const dnn_apply<T> a = dnn_make_apply(step, lr, grad_acc, accumulate, clipvalue, clip_scale,
                                          groups, wd, ema, ema_momentum, ema_every);
    const long long t = dnn_update_count(step, accumulate);
    const double b1 = (double)beta_1, decay_t = pow(DNN_NADAM_DECAY, (double)t);
    const double u_t = b1 * (1.0 - 0.5 * decay_t);
    const double u_next = b1 * (1.0 - 0.5 * pow(DNN_NADAM_DECAY, (double)(t + 1)));
    const double product = u_product[(t - 1) & 1] * b1 * (1.0 - 0.5 * decay_t);
    if (a.update && blockIdx.x == 0 && threadIdx.x == 0) u_product[t & 1] = product;
    const T c_next = (T)u_next, d_next = (T)(1.0 - product * u_next);
    const T c_now = (T)(1.0 - u_t), d_now = (T)(1.0 - product);
    const T v_correction = (T)(1.0 - pow((double)beta_2, (double)t)), rate = lr[0];
    auto rule = [&](T& pi, T gi, T& mi, T& vi, T&) {
        mi = mi + (gi - mi) * (T(1) - beta_1);
        vi = vi + (gi * gi - vi) * (T(1) - beta_2);
        const T m_hat = c_next * mi / d_next + c_now * gi / d_now;
        pi -= m_hat * rate / (dnn_sqrt(vi / v_correction) + eps);
    };
    dnn_apply_stream(p, g, m, v, (T*)nullptr, n, a, rule);
}

// Adagrad: accumulator += g^2; p -= lr g / sqrt(accumulator + eps).
// dnn:kernel float32 float64
template <typename T>
__device__ void adagrad_apply(T* p, const T* g, T* accumulator, const long long* step,
                              const int* skip, long long n, const T* lr, T eps, T* grad_acc,
                              long long accumulate, T clipvalue, const T* clip_scale,
                              const int* groups, const T* wd, T* ema, T ema_momentum,
                              long long ema_every) {
    if (skip && skip[0]) return;
    const dnn_apply<T> a = dnn_make_apply(step, lr, grad_acc, accumulate, clipvalue, clip_scale,
                                          groups, wd, ema, ema_momentum, ema_every);
    const T rate = lr[0];
    auto rule = [&](T& pi, T gi, T& si, T&, T&) {
        si = si + gi * gi;
        pi -= rate * gi / dnn_sqrt(si + eps);
    };
    dnn_apply_stream(p, g, accumulator, (T*)nullptr, (T*)nullptr, n, a, rule);
}

// Adamax: m += (g - m)(1 - beta_1), u = max(beta_2 u, |g|),
// p -= lr m / ((1 - beta_1^t)(u + eps)).
// dnn:kernel float32 float64
template <typename T>
__device__ void adamax_apply(T* p, const T* g, T* m, T* u, const long long* step,
                             const int* skip, long long n, const T* lr, T beta_1, T beta_2,
                             T eps, T* grad_acc, long long accumulate, T clipvalue,
                             const T* clip_scale, const int* groups, const T* wd, T* ema,
                             T ema_momentum, long long ema_every) {
    if (skip && skip[0]) return;
    const dnn_apply<T> a = dnn_make_apply(step, lr, grad_acc, accumulate, clipvalue, clip_scale,
                                          groups, wd, ema, ema_momentum, ema_every);
    const double t = (double)dnn_update_count(step, accumulate);
    const T correction = (T)(1.0 - pow((double)beta_1, t)), rate = lr[0];
    auto rule = [&](T& pi, T gi, T& mi, T& ui, T&) {
        mi = mi + (gi - mi) * (T(1) - beta_1);
        const T decayed = beta_2 * ui, size = dnn_abs(gi);
        ui = decayed > size ? decayed : size;
        pi -= rate * mi / (correction * (ui + eps));
    };
    dnn_apply_stream(p, g, m, u, (T*)nullptr, n, a, rule);
}

// Lion: p -= lr sign(beta_1 m + (1 - beta_1) g), then m = beta_2 m + (1 - beta_2) g.
// dnn:kernel float32 float64
template <typename T>
__device__ void lion_apply(T* p, const T* g, T* m, const long long* step, const int* skip,
                           long long n, const T* lr, T beta_1, T beta_2, T* grad_acc,
                           long long accumulate, T clipvalue, const T* clip_scale,
                           const int* groups, const T* wd, T* ema, T ema_momentum,
                           long long ema_every) {
    if (skip && skip[0]) return;
    const dnn_apply<T> a = dnn_make_apply(step, lr, grad_acc, accumulate, clipvalue, clip_scale,
                                          groups, wd, ema, ema_momentum, ema_every);
    const T rate = lr[0];
    auto rule = [&](T& pi, T gi, T& mi, T&, T&) {
        const T c = mi * beta_1 + gi * (T(1) - beta_1);
        pi -= rate * (c > T(0) ? T(1) : (c < T(0) ? T(-1) : c));  // sign; 0 and NaN kept
        mi = mi * beta_2 + gi * (T(1) - beta_2);
    };
    dnn_apply_stream(p, g, m, (T*)nullptr, (T*)nullptr, n, a, rule);
}

// ------------------------------------------------------------------- clip norms
// Keras' clipnorm scales each weight's gradient by its own norm, global_clipnorm all of
// them by their joint norm. Either is a reduction in two launches with no temporary
// storage (so a captured graph may hold it): segment_square_sums writes the sum of
// squares of each chunk (chunk c covers [bounds[c], bounds[c + 1]), inside one segment;
// one block per chunk), then segment_clip_scales adds each segment's chunks (those of
// segment s are [first[s], first[s + 1])) in a fixed order into its factor. The
// gradient measured is the one the rule will see: (g + grad_acc) / k on an update step
// of gradient accumulation (a step that only accumulates sums nothing).
// dnn:kernel float32 float64
template <typename T>
__device__ void segment_square_sums(const T* g, const T* grad_acc, long long accumulate,
                                    const long long* step, const long long* bounds,
                                    long long chunks, T* sums) {
    const bool accumulating = accumulate > 1 && grad_acc != nullptr;
    if (accumulating && step[0] % accumulate != 0) return;
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
        T total = T(0);
        for (long long i = bounds[c] + threadIdx.x; i < bounds[c + 1]; i += blockDim.x) {
            const T v = accumulating ? (g[i] + grad_acc[i]) / T(accumulate) : g[i];
            total += v * v;
        }
        total = dnn_group_sum(total, (int)blockDim.x);
        if (threadIdx.x == 0) sums[c] = total;
    }
}

// scale[s] = clipnorm / max(norm_s, clipnorm) for each segment; with ``joint`` every
// slot gets clipnorm min(1 / norm, 1 / clipnorm) of the joint norm (Keras'
// clip_by_global_norm: NaN when the norm is not finite), from one block.
// dnn:kernel float32 float64
template <typename T>
__device__ void segment_clip_scales(const T* sums, const long long* first, long long segments,
                                    T clipnorm, int joint, T* scale) {
    if (joint) {
        if (blockIdx.x != 0) return;
        T total = T(0);
        for (long long c = threadIdx.x; c < first[segments]; c += blockDim.x) total += sums[c];
        const T norm = dnn_sqrt(dnn_group_sum(total, (int)blockDim.x));
        const T inverse = T(1) / norm, least = T(1) / clipnorm;
        const T factor = clipnorm * (inverse < least ? inverse : least) + (norm - norm);
        for (long long s = threadIdx.x; s < segments; s += blockDim.x) scale[s] = factor;
        return;
    }
    for (long long s = blockIdx.x; s < segments; s += gridDim.x) {
        T total = T(0);
        for (long long c = first[s] + threadIdx.x; c < first[s + 1]; c += blockDim.x) {
            total += sums[c];
        }
        const T norm = dnn_sqrt(dnn_group_sum(total, (int)blockDim.x));
        const bool above = norm > clipnorm || norm != norm;  // NaN propagates, as Keras
        if (threadIdx.x == 0) scale[s] = clipnorm / (above ? norm : clipnorm);
    }
}

// The learning rate of the update whose 1-based number is step[0], from a schedule
// encoded as doubles (see reference.scheduled_rate, the definition): evaluated at the
// steps taken before this one, as Keras evaluates a schedule at optimizer.iterations.
// dnn:kernel float32 float64
template <typename T>
__device__ void scheduled_rate(const double* schedule, const long long* step, T* lr) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const double s = (double)(step[0] - 1);
    const int kind = (int)schedule[0];
    double rate = schedule[1];
    if (kind == DNN_SCHEDULE_EXPONENTIAL) {  // lr0, decay_steps, decay_rate, staircase
        double exponent = s / schedule[2];
        if (schedule[4] != 0.0) exponent = floor(exponent);
        rate = schedule[1] * pow(schedule[3], exponent);
    } else if (kind == DNN_SCHEDULE_PIECEWISE) {  // n, boundaries[n], values[n + 1]
        const long long n = (long long)schedule[1];
        long long i = 0;
        while (i < n && s > schedule[2 + i]) ++i;
        rate = schedule[2 + n + i];
    } else if (kind == DNN_SCHEDULE_COSINE) {
        // lr0, decay_steps, alpha, warmup (0/1), warmup_target, warmup_steps
        const double lr0 = schedule[1], steps = schedule[2], alpha = schedule[3];
        const double target = schedule[4] != 0.0 ? schedule[5] : lr0;
        const double warm = schedule[4] != 0.0 ? schedule[6] : 0.0;
        const double at = s < steps + warm ? s : steps + warm;
        if (at < warm) {
            rate = lr0 + (target - lr0) * (at / warm);
        } else {
            const double cosine = 0.5 * (1.0 + cos(DNN_PI * (at - warm) / steps));
            rate = target * ((1.0 - alpha) * cosine + alpha);
        }
    } else if (kind == DNN_SCHEDULE_POLYNOMIAL) {  // lr0, decay_steps, end, power, cycle
        double steps = schedule[2], at = s;
        if (schedule[5] != 0.0) {
            steps = steps * (s == 0.0 ? 1.0 : ceil(s / steps));
        } else if (at > steps) {
            at = steps;
        }
        rate = (schedule[1] - schedule[3]) * pow(1.0 - at / steps, schedule[4]) + schedule[3];
    } else if (kind == DNN_SCHEDULE_INVERSE_TIME) {  // lr0, decay_steps, decay_rate, staircase
        double p = s / schedule[2];
        if (schedule[4] != 0.0) p = floor(p);
        rate = schedule[1] / (1.0 + schedule[3] * p);
    } else if (kind == DNN_SCHEDULE_COSINE_RESTARTS) {
        // lr0, first_decay_steps, t_mul, m_mul, alpha
        const double t_mul = schedule[3], m_mul = schedule[4], alpha = schedule[5];
        double fraction = s / schedule[2], restart;
        if (t_mul == 1.0) {
            restart = floor(fraction);
            fraction -= restart;
        } else {
            restart = floor(log(1.0 - fraction * (1.0 - t_mul)) / log(t_mul));
            const double done = (1.0 - pow(t_mul, restart)) / (1.0 - t_mul);
            fraction = (fraction - done) / pow(t_mul, restart);
        }
        const double cosine = 0.5 * pow(m_mul, restart) * (1.0 + cos(DNN_PI * fraction));
        rate = schedule[1] * ((1.0 - alpha) * cosine + alpha);
    }
    lr[0] = (T)rate;
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

// mask[i] = 0 with probability rate, else 1/(1-rate), from the hash of element
// offset + i. The counter (the optimizer's step count) is read from device memory, so a
// replayed CUDA graph draws new masks; the offset places a data-parallel rank's rows
// within the global batch, so N ranks draw the mask one rank would.
// dnn:kernel float32 float64 bfloat16
template <typename S>
__device__ void dropout_mask(S* mask, unsigned long long seed, const long long* counter,
                             long long offset, long long n, dnn_compute_t<S> rate) {
    typedef dnn_compute_t<S> C;
    unsigned long long base =
        dnn_mix64(seed ^ ((unsigned long long)counter[0] * 0x9E3779B97F4A7C15ULL));
    C scale = C(1) / (C(1) - rate);
    DNN_LOOP(i, n) {
        unsigned long long h =
            dnn_mix64(base + (unsigned long long)(offset + i) * 0xD1B54A32D192ED03ULL);
        C u = (C)(h >> 40) * C(5.9604644775390625e-08);  // 24 random bits / 2^24
        dnn_store(mask[i], u >= rate ? scale : C(0));
    }
}

// ---------------------------------------------------------------- reductions
// Partial sums of x[0:n], one per block (the first of a sum's two launches).
// dnn:kernel float32 float64
template <typename T>
__device__ void block_sums(const T* x, long long n, T* partials) {
    T total = T(0);
    DNN_LOOP(i, n) total += x[i];
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// out[0] = the sum of all DNN_REDUCE_BLOCKS partials (plus out[0] itself when ``add``),
// by one block, in a fixed order.
// dnn:kernel float32 float64
template <typename T>
__device__ void reduce_partials(const T* partials, T* out, int add) {
    T total = T(0);
    for (long long i = threadIdx.x; i < DNN_REDUCE_BLOCKS; i += blockDim.x) total += partials[i];
    total = dnn_group_sum(total, (int)blockDim.x);
    if (threadIdx.x == 0) out[0] = add ? out[0] + total : total;
}

// ----------------------------------------------------------------------- metrics
// Each metric kernel writes this batch's count or sum as partials; reduce_partials with
// add = 1 then adds it to the metric's running total in device memory, so metrics run
// inside a captured step and are read back once per epoch.

// The index of the row's largest value (the first on ties, as numpy.argmax), for the
// group; cols when no value compares equal to the maximum (a NaN row).
template <typename T>
__device__ __forceinline__ long long row_argmax(const T* xr, long long cols, bool active,
                                                int lane, int g) {
    T m = active ? xr[0] : T(0);
    for (long long c = lane; active && c < cols; c += g) m = xr[c] > m ? xr[c] : m;
    m = dnn_group_max(m, g);
    long long first = cols;
    for (long long c = lane; active && c < cols; c += g) {
        if (xr[c] == m && c < first) first = c;
    }
    return -dnn_group_max(-first, g);
}

// The metric kernels take per-row weights (weights may be null: all 1), which Keras's
// weighted_metrics give each sample's contribution; an element of row r is weighted by
// weights[r].
template <typename T>
__device__ __forceinline__ T dnn_row_weight(const T* weights, long long row) {
    return weights ? weights[row] : T(1);
}

// Rows whose argmax is the label: labels holds int64 ids, or is null with target rows
// (one-hot or probabilities) whose argmax is the label, as top_k_matches takes them. A
// target row with no maximum (NaN) has no label and matches nothing.
// dnn:kernel float32 float64
template <typename T>
__device__ void argmax_matches(const T* scores, const long long* labels, const T* targets,
                               const T* weights, T* partials, long long rows, long long cols,
                               long long group) {
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    T total = T(0);
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        long long best = row_argmax(scores + r * cols, cols, active, lane, g);
        long long label = labels ? (active ? labels[r] : 0)
                                 : row_argmax(targets + r * cols, cols, active, lane, g);
        if (active && lane == 0 && best == label && label < cols) {
            total += dnn_row_weight(weights, r);
        }
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// Elements where scores > threshold agrees with targets > 0.5 (binary accuracy); rows
// have cols elements.
// dnn:kernel float32 float64
template <typename T>
__device__ void threshold_matches(const T* scores, const T* targets, const T* weights,
                                  T* partials, long long n, long long cols, T threshold) {
    T total = T(0);
    DNN_LOOP(i, n) {
        if ((scores[i] > threshold) == (targets[i] > T(0.5))) {
            total += dnn_row_weight(weights, i / cols);
        }
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// The sum of |act(pred) - target|: the output activation is applied here when the
// model's output holds logits.
// dnn:kernel float32 float64
template <typename T, int ACT>
__device__ void abs_error(const T* pred, const T* target, const T* weights, T* partials,
                          long long n, long long cols, T slope) {
    T total = T(0);
    DNN_LOOP(i, n) {
        total += dnn_row_weight(weights, i / cols)
                 * dnn_abs(dnn_activate<T, ACT>(pred[i], slope) - target[i]);
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// acc[0] += value[0] * weight: the epoch's running loss, kept on the device.
// dnn:kernel float32 float64
template <typename T>
__device__ void accumulate(T* acc, const T* value, T weight) {
    if (blockIdx.x == 0 && threadIdx.x == 0) acc[0] += value[0] * weight;
}

// Rows whose label is among the k highest scores: fewer than k scores exceed the label's
// (ties at the boundary count as in, as TensorFlow's in_top_k). labels: int64 ids, or
// null with target rows whose argmax is the label; a target row with no maximum (NaN)
// has no label and matches nothing (its score "sr[label]" would be past the row).
// dnn:kernel float32 float64
template <typename T>
__device__ void top_k_matches(const T* scores, const long long* labels, const T* targets,
                              const T* weights, T* partials, long long rows, long long cols,
                              long long k, long long group) {
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    T total = T(0);
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        long long label = labels ? (active ? labels[r] : 0)
                                 : row_argmax(targets + r * cols, cols, active, lane, g);
        const T* sr = scores + r * cols;
        const bool labelled = active && label >= 0 && label < cols;
        T above = T(0);
        for (long long c = lane; labelled && c < cols; c += g) {
            if (sr[c] > sr[label]) above += T(1);
        }
        above = dnn_group_sum(above, g);
        if (labelled && lane == 0 && above < T(k)) total += dnn_row_weight(weights, r);
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// Binary counts at a threshold, as Keras's confusion metrics count them (a target is
// positive when it is not 0): which = 0 counts true positives (score > threshold and a
// positive target), 1 predicted positives, 2 actual positives.
// dnn:kernel float32 float64
template <typename T>
__device__ void binary_counts(const T* scores, const T* targets, const T* weights,
                              T* partials, long long n, long long cols, T threshold,
                              int which) {
    T total = T(0);
    DNN_LOOP(i, n) {
        bool predicted = scores[i] > threshold, actual = targets[i] != T(0);
        bool counted = which == 0 ? (predicted && actual) : (which == 1 ? predicted : actual);
        if (counted) total += dnn_row_weight(weights, i / cols);
    }
    dnn_store_partial(partials, dnn_group_sum(total, (int)blockDim.x));
}

// What precision and recall with top_k or class_id count, as Keras filters it: each
// row's probabilities (softmax of the row when ``softmax``, the sigmoid of each score
// when ``sigmoid``, else the scores), those outside the row's k highest (top_k > 0; ties
// to the lower index) replaced by Keras's -1e10, then only column class_id kept (class_id >= 0;
// out and out_targets are then (rows, 1)) or every column.
// dnn:kernel float32 float64
template <typename T>
__device__ void select_scores(const T* scores, const T* targets, T* out, T* out_targets,
                              long long rows, long long cols, long long top_k,
                              long long class_id, int softmax, int sigmoid, long long group) {
    const int g = dnn_row_group(group), lane = threadIdx.x % g;
    const long long per_block = blockDim.x / g;
    const long long width = class_id >= 0 ? 1 : cols;
    for (long long base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
        const long long r = base + threadIdx.x / g;
        const bool active = r < rows;
        const T* sr = scores + r * cols;
        T m = T(0), s = T(1);
        if (softmax) row_max_sum_exp(sr, cols, active, lane, g, m, s);
        for (long long c = lane; active && c < cols; c += g) {
            if (class_id >= 0 && c != class_id) continue;
            T p = softmax ? dnn_exp(sr[c] - m) / s : (sigmoid ? dnn_sigmoid(sr[c]) : sr[c]);
            if (top_k > 0) {
                long long rank = 0;  // scores ahead of this one
                for (long long j = 0; j < cols; ++j) {
                    if (sr[j] > sr[c] || (sr[j] == sr[c] && j < c)) ++rank;
                }
                if (rank >= top_k) p = T(DNN_TOP_K_FILL);
            }
            const long long at = r * width + (class_id >= 0 ? 0 : c);
            out[at] = p;
            out_targets[at] = targets[r * cols + c];
        }
    }
}

// The histogram behind AUC: for each score p = act(score) the number b of the
// thresholds [-eps, 1/(m-1), ..., (m-2)/(m-1), 1+eps] (m of them, as Keras) lying below
// it; its weight (its row's, or 1) is counted into counts[b] when its target is positive
// (not 0, as Keras) and into counts[m + 1 + b] otherwise (2 (m + 1) running counts in
// device memory). Unweighted counts are whole numbers, exact in the counts' type up to
// 2^24 (16,777,216) per slot in float32 and 2^53 in float64 (past that, adding 1 is
// lost), so up to there the atomic additions are exact and the totals do not depend on
// their order; weighted sums may differ in the last bit from run to run on a GPU. The
// metric totals of the kernels above (reduce_partials adding a batch's count to a
// running total) are exact up to the same bounds.
// dnn:kernel float32 float64
template <typename T, int ACT>
__device__ void threshold_histogram(const T* scores, const T* targets, const T* weights,
                                    T* counts, long long n, long long cols, long long m,
                                    T slope) {
    DNN_LOOP(i, n) {
        T p = dnn_activate<T, ACT>(scores[i], slope);
        long long b;
        if (p > T(1) + T(DNN_AUC_EPSILON)) {
            b = m;
        } else if (p <= T(-DNN_AUC_EPSILON)) {
            b = 0;
        } else {
            long long inner = (long long)ceil((double)p * (double)(m - 1)) - 1;
            b = 1 + (inner < 0 ? 0 : (inner > m - 2 ? m - 2 : inner));
        }
        atomicAdd(&counts[(targets[i] != T(0) ? 0 : m + 1) + b],
                  dnn_row_weight(weights, i / cols));
    }
}

// ------------------------------------------------------------------ batch gather
// out[i, :] = src[order[cursor[0] + i], :] for the rows of out: the batch gather of a
// captured multi-step graph, which reads its place in the epoch's order from device
// memory (advance moves it on), so a replay needs nothing from the host.
// dnn:kernel float32 float64 bfloat16 int64
template <typename S>
__device__ void gather_rows(const S* src, const long long* order, const long long* cursor,
                            S* out, long long rows, long long cols) {
    const long long first = cursor[0];
    DNN_LOOP(i, rows * cols) { out[i] = src[order[first + i / cols] * cols + i % cols]; }
}

// counter[0] += amount.
// dnn:kernel
__device__ void advance(long long* counter, long long amount) {
    if (blockIdx.x == 0 && threadIdx.x == 0) counter[0] += amount;
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
