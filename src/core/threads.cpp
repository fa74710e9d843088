#include "ctok/core/threads.hpp"

#include <dlfcn.h>

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <string>
#include <thread>

#include "ctok/core/error.hpp"

namespace ctok {

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int configure_threads(int requested, int blas_threads) {
  if (blas_threads < 0) throw runtime_failure("configure_threads: negative OpenBLAS thread count");
  if (requested < 0) {
    throw bad_input("invalid thread count").key("--threads").expected(">= 0 (0 = all cores)").found(
        std::to_string(requested));
  }
  const int n = requested == 0 ? hardware_threads() : requested;
  // Sets the OpenMP (or native) intra-op pool; with OpenMP builds this calls
  // omp_set_num_threads as well.
  at::set_num_threads(n);
  // The inter-op pool can only be sized before its first use, once per process.
  static std::once_flag interop_once;
  std::call_once(interop_once, [n] {
    try {
      at::set_num_interop_threads(n);
    } catch (const std::exception& e) {
      spdlog::debug("inter-op thread count left unchanged: {}", e.what());
    }
  });
  // OpenBLAS keeps its own pool; set it when the library is loaded in this process.
  using SetThreads = void (*)(int);
  const int blas = blas_threads > 0 ? blas_threads : n;
  if (auto set_openblas = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_openblas(blas);
  }
  spdlog::debug("threads: {} (intra-op {}, inter-op {}, OpenBLAS {})", n, at::get_num_threads(),
                at::get_num_interop_threads(), blas);
  return n;
}

}  // namespace ctok
