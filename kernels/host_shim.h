// Compiles dnn_kernels.cu as host C++ (see kernels/host.py) with real thread blocks: a
// launch runs the grid's blocks one after another, and each block as blockDim.x fibers,
// one per CUDA thread, on one OS thread. A fiber runs until it reaches __syncthreads()
// (or returns), then the next one runs; when every thread of the block is at the
// barrier, they all go on. The order in which the fibers of a block run between two
// barriers is the launch's choice (forward, reverse or a seeded shuffle), so a kernel
// whose result depends on that order, because a barrier is missing or a thread reads
// what another writes without one, gives different results in different orders.
//
// Shared memory is a static array: the fibers of a block share it, and the blocks,
// which run in turn, reuse it (it is not cleared between blocks, as on a GPU). An
// atomic operation is a plain one: a fiber is never interrupted inside it.
//
// A block whose threads do not all reach the same barrier (one returned while another
// waits at a __syncthreads) is an error, as it is undefined on a GPU: the launch stops
// and dnn_host_error() says which kernel thread did what.
//
// The context switch is a few instructions of assembly on x86-64 (ucontext's
// swapcontext makes a system call at each switch, ~0.4 us here, and a test launch
// makes millions of them); elsewhere, or with DNN_HOST_UCONTEXT defined, it is
// ucontext.
#include <math.h>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <sys/mman.h>
#include <unistd.h>
using std::exp;
using std::log;
using std::log1p;
using std::pow;
using std::sqrt;
using std::tanh;
using std::fabs;

#if !defined(__x86_64__) && !defined(DNN_HOST_UCONTEXT)
#define DNN_HOST_UCONTEXT 1
#endif
#ifdef DNN_HOST_UCONTEXT
#include <ucontext.h>
#endif

// Device functions get internal linkage: a static local of a template with external
// linkage (a __shared__ array) would be a GNU "unique" symbol, which the dynamic linker
// merges across every library loaded, so two host builds (say of 32 and of 1024
// threads) would share one array of the first one's size.
#define __global__
#define __device__ static
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() dnn_host_barrier()

struct dnn_dim3 {
    unsigned int x, y, z;
};
// Set by the scheduler before it resumes a fiber. They have external linkage, so the
// compiler reloads them after every barrier (a call it cannot see into); hidden, so
// each host build has its own.
#define DNN_HIDDEN __attribute__((visibility("hidden")))
DNN_HIDDEN dnn_dim3 threadIdx = {0, 0, 0};
DNN_HIDDEN dnn_dim3 blockIdx = {0, 0, 0};
DNN_HIDDEN dnn_dim3 blockDim = {1, 1, 1};
DNN_HIDDEN dnn_dim3 gridDim = {1, 1, 1};

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

// Fibers never interrupt one another between barriers: a plain addition is atomic.
template <typename T>
static inline T atomicAdd(T* address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}

// ------------------------------------------------------------------ fibers
#ifndef DNN_HOST_UCONTEXT
// dnn_fiber_switch(&save, load): saves the callee-saved registers on this stack, stores
// its pointer in *save, and continues on the stack ``load`` (from where it was saved,
// or from a new fiber's first frame, which "returns" into dnn_fiber_main).
asm(R"(
    .text
    .p2align 4
    .type dnn_fiber_switch, @function
dnn_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size dnn_fiber_switch, .-dnn_fiber_switch
)");
extern "C" void dnn_fiber_switch(void** save, void* load);
#endif

enum { DNN_FIBER_RUNNING, DNN_FIBER_AT_BARRIER, DNN_FIBER_DONE };
enum { DNN_ORDER_FORWARD, DNN_ORDER_REVERSE, DNN_ORDER_SHUFFLE };

struct dnn_fiber {
#ifdef DNN_HOST_UCONTEXT
    ucontext_t context;
#else
    void* sp;
#endif
    char* stack;  // its lowest usable byte
    int state;
    long long barriers;  // __syncthreads() calls so far
};

static const size_t DNN_STACK_BYTES = 64 * 1024;
static struct {
    unsigned grid, block;
    int order;
    unsigned long long seed;
    const char* kernel;
    void (*body)(void*);
    void* closure;
    dnn_fiber* fibers;
    unsigned capacity;  // fibers (and stacks) allocated
    unsigned* run_order;
    unsigned current;
    char error[512];
#ifdef DNN_HOST_UCONTEXT
    ucontext_t scheduler;
#else
    void* scheduler;
#endif
} dnn_host;

extern "C" void dnn_host_configure(unsigned grid, unsigned block, int order,
                                   unsigned long long seed) {
    dnn_host.grid = grid;
    dnn_host.block = block;
    dnn_host.order = order;
    dnn_host.seed = seed;
}

// "" after a good launch, else what went wrong (the message stays until the next launch).
extern "C" const char* dnn_host_error() { return dnn_host.error; }

static void dnn_to_scheduler(dnn_fiber* self) {
#ifdef DNN_HOST_UCONTEXT
    swapcontext(&self->context, &dnn_host.scheduler);
#else
    dnn_fiber_switch(&self->sp, dnn_host.scheduler);
#endif
}

static void dnn_host_barrier() {
    dnn_fiber* self = &dnn_host.fibers[dnn_host.current];
    self->state = DNN_FIBER_AT_BARRIER;
    self->barriers += 1;
    dnn_to_scheduler(self);
}

static void dnn_fiber_main() {
    dnn_host.body(dnn_host.closure);
    dnn_fiber* self = &dnn_host.fibers[dnn_host.current];
    self->state = DNN_FIBER_DONE;
    dnn_to_scheduler(self);  // never resumed
}

// Stacks for n fibers, each with a guard page below it: an overflow faults rather than
// writing over the next fiber's stack. Kept for later launches.
static bool dnn_reserve_fibers(unsigned n) {
    if (n <= dnn_host.capacity) return true;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), slot = DNN_STACK_BYTES + page;
    if (dnn_host.capacity) {
        munmap(dnn_host.fibers[0].stack - page, dnn_host.capacity * slot);
        delete[] dnn_host.fibers;
        delete[] dnn_host.run_order;
        dnn_host.capacity = 0;
    }
    char* base = (char*)mmap(nullptr, n * slot, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return false;
    dnn_host.fibers = new dnn_fiber[n];
    dnn_host.run_order = new unsigned[n];
    for (unsigned t = 0; t < n; ++t) {
        mprotect(base + t * slot, page, PROT_NONE);
        dnn_host.fibers[t].stack = base + t * slot + page;
    }
    dnn_host.capacity = n;
    return true;
}

static void dnn_start_fiber(dnn_fiber* f) {
    f->state = DNN_FIBER_RUNNING;
    f->barriers = 0;
#ifdef DNN_HOST_UCONTEXT
    getcontext(&f->context);
    f->context.uc_stack.ss_sp = f->stack;
    f->context.uc_stack.ss_size = DNN_STACK_BYTES;
    f->context.uc_link = nullptr;
    makecontext(&f->context, (void (*)())dnn_fiber_main, 0);
#else
    // The first frame: six zeroed callee-saved registers, then dnn_fiber_main as the
    // return address, entered with the stack aligned as after a call.
    void** sp = (void**)(f->stack + DNN_STACK_BYTES);
    *--sp = nullptr;  // dnn_fiber_main's own return address: it never returns
    *--sp = (void*)dnn_fiber_main;
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    f->sp = sp;
#endif
}

static void dnn_resume(unsigned t) {
    dnn_host.current = t;
    threadIdx.x = t;
    dnn_fiber* f = &dnn_host.fibers[t];
#ifdef DNN_HOST_UCONTEXT
    swapcontext(&dnn_host.scheduler, &f->context);
#else
    dnn_fiber_switch(&dnn_host.scheduler, f->sp);
#endif
}

static unsigned long long dnn_next_random(unsigned long long* state) {
    unsigned long long z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// The order of the fibers for the next stretch between barriers.
static void dnn_plan_round(unsigned n, unsigned long long* random) {
    unsigned* order = dnn_host.run_order;
    for (unsigned i = 0; i < n; ++i) {
        order[i] = dnn_host.order == DNN_ORDER_REVERSE ? n - 1 - i : i;
    }
    if (dnn_host.order == DNN_ORDER_SHUFFLE) {  // Fisher-Yates
        for (unsigned i = n - 1; i > 0; --i) {
            unsigned j = (unsigned)(dnn_next_random(random) % (i + 1));
            unsigned swap = order[i];
            order[i] = order[j];
            order[j] = swap;
        }
    }
}

// Runs one block to its end; false (with the error set) when its threads diverge.
static bool dnn_run_block(unsigned long long* random) {
    const unsigned n = dnn_host.block;
    for (unsigned t = 0; t < n; ++t) dnn_start_fiber(&dnn_host.fibers[t]);
    for (;;) {
        dnn_plan_round(n, random);
        for (unsigned i = 0; i < n; ++i) dnn_resume(dnn_host.run_order[i]);
        unsigned done = 0;
        for (unsigned t = 0; t < n; ++t) done += dnn_host.fibers[t].state == DNN_FIBER_DONE;
        if (done == n) return true;
        if (done == 0) continue;  // every thread is at the barrier: release them
        unsigned waiting = 0, returned = 0;
        while (dnn_host.fibers[waiting].state == DNN_FIBER_DONE) ++waiting;
        while (dnn_host.fibers[returned].state != DNN_FIBER_DONE) ++returned;
        std::snprintf(dnn_host.error, sizeof dnn_host.error,
                      "%s: block %u: thread %u waits at __syncthreads() #%lld while "
                      "thread %u returned after %lld (every thread of a block must reach "
                      "each barrier)", dnn_host.kernel, blockIdx.x, waiting,
                      dnn_host.fibers[waiting].barriers, returned,
                      dnn_host.fibers[returned].barriers);
        return false;
    }
}

static void dnn_run_grid(const char* kernel, void (*body)(void*), void* closure) {
    dnn_host.error[0] = '\0';
    dnn_host.kernel = kernel;
    if (dnn_host.block == 0 || dnn_host.block > DNN_THREADS || dnn_host.grid == 0) {
        std::snprintf(dnn_host.error, sizeof dnn_host.error,
                      "%s: launch of %u blocks of %u threads; this build takes 1 to %d "
                      "threads a block and at least one block", kernel, dnn_host.grid,
                      dnn_host.block, DNN_THREADS);
        return;
    }
    if (!dnn_reserve_fibers(dnn_host.block)) {
        std::snprintf(dnn_host.error, sizeof dnn_host.error, "%s: no memory for %u stacks",
                      kernel, dnn_host.block);
        return;
    }
    dnn_host.body = body;
    dnn_host.closure = closure;
    blockDim.x = dnn_host.block;
    gridDim.x = dnn_host.grid;
    unsigned long long random = dnn_host.seed;
    for (unsigned b = 0; b < dnn_host.grid; ++b) {
        blockIdx.x = b;
        if (!dnn_run_block(&random)) return;
    }
}

// The body of a generated host entry point: ``call`` runs once per CUDA thread.
template <typename F>
static void dnn_host_run(const char* kernel, F&& call) {
    typedef typename std::remove_reference<F>::type Call;
    dnn_run_grid(kernel, [](void* p) { (*static_cast<Call*>(p))(); }, &call);
}
