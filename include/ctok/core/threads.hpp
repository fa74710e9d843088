// Thread count for libtorch (intra-op and inter-op) and OpenMP.
//
//   int used = ctok::configure_threads(opts.threads);   // 0 = all cores
//
// Debian's libtorch starts with one intra-op thread, so every tool calls this once at
// start-up (the --threads option).
#pragma once

namespace ctok {

// Sets libtorch intra-op threads (and OpenMP through it) to `requested`, or to
// std::thread::hardware_concurrency() when 0; the inter-op pool is sized once per process.
// OpenBLAS's own pool gets `blas_threads` (0: the same count). Returns the intra-op count
// used. Throws bad_input for a negative count.
int configure_threads(int requested, int blas_threads = 0);

// The number of cores seen by this process (>= 1).
int hardware_threads();

}  // namespace ctok
