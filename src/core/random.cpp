#include "ctok/core/random.hpp"

#include <cstdint>
#include <initializer_list>

namespace ctok {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t n) {
  // Rejection sampling: exact uniform, portable.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = next();
  while (x >= limit);
  return x % n;
}

double SplitMix64::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  SplitMix64 g(seed);
  uint64_t h = g.next();
  for (uint64_t v : {a, b, c}) {
    SplitMix64 m(h ^ v);
    h = m.next();
  }
  return h;
}

}  // namespace ctok
