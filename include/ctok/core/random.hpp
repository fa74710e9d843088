// Deterministic random numbers: the one generator ctok's selections, shuffles and
// learners draw from (splitmix64), and a seed mixer for deriving per-use seeds.
//
//   ctok::SplitMix64 g(ctok::mix_seed(seed, pair_id, 0x5u));
//   const uint64_t i = g.below(n);  // uniform in [0, n)
//
// The same seed gives the same sequence on every platform and build.
#pragma once

#include <cstdint>

namespace ctok {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  uint64_t below(uint64_t n);  // uniform in [0, n), n > 0
  double uniform();            // [0, 1)
 private:
  uint64_t state_;
};

// A seed mixed with further values (order matters).
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

}  // namespace ctok
