// Splitting the kernels' loops across the cores, on PyTorch's own threads, whatever the compiler.
// PyTorch's CPU wheels run their parallel loops on an OpenMP runtime they ship (libgomp on Linux,
// libomp on macOS); at::parallel_for reaches it only through OpenMP pragmas, which Apple's clang
// does not compile (it rejects -fopenmp) and which other compilers would tie to their own runtime,
// a second pool of threads beside torch's, each spinning while the other works. So the kernels call
// that runtime's entry point for a parallel region directly: GOMP_parallel, the call GCC's pragmas
// compile to, which libgomp and LLVM's libomp both provide; build.py links the library torch loaded.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>

#ifndef TINYSPLAT_SERIAL
extern "C" {
void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);
int omp_get_num_threads();
int omp_get_thread_num();
}
#endif

namespace tinysplat {

template <typename F>
struct ParallelRegion {
  int64_t begin, end, grain;
  const F* f;
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
};

#ifndef TINYSPLAT_SERIAL
// One thread's share of a region: contiguous chunks of at least `grain`, as at::parallel_for splits them
// (the same chunks for the same thread count, so results do not depend on the build).
template <typename F>
void run_share(void* data) {
  auto& region = *static_cast<ParallelRegion<F>*>(data);
  const int64_t n = region.end - region.begin;
  int64_t threads = omp_get_num_threads();
  if (region.grain > 0) threads = std::min(threads, (n + region.grain - 1) / region.grain);
  const int64_t chunk = (n + threads - 1) / threads;
  const int64_t first = region.begin + omp_get_thread_num() * chunk;
  if (first >= region.end) return;
  try {  // an exception must not leave the region
    (*region.f)(first, std::min(region.end, first + chunk));
  } catch (...) {
    if (!region.failed.test_and_set()) region.error = std::current_exception();
  }
}
#endif

// f(chunk_begin, chunk_end) over [begin, end) on torch.get_num_threads() threads.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
#ifndef TINYSPLAT_SERIAL
  if (end - begin > std::max<int64_t>(grain, 1) && at::get_num_threads() > 1 && !at::in_parallel_region()) {
    ParallelRegion<F> region{begin, end, grain, &f};
    GOMP_parallel(&run_share<F>, &region, 0, 0);  // 0: the runtime's thread count, which torch sets
    if (region.error) std::rethrow_exception(region.error);
    return;
  }
#endif
  f(begin, end);
}

// Worker w of `workers` takes items [w n / workers, (w + 1) n / workers): contiguous pieces in order,
// so what the workers write one after another comes out as one pass in order would write it.
template <typename Fn>
void for_each_piece(int64_t n, int64_t workers, const Fn& fn) {
  parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) fn(w, n * w / workers, n * (w + 1) / workers);
  });
}

}  // namespace tinysplat
