// Shared by the libFuzzer targets (docs/reliability.md). The contract every reader of
// untrusted input keeps: bad bytes give a ctok::Error (a clear message, exit code 2 in a
// tool), never a crash, a hang, a sanitizer report or a foreign exception. So a target
// swallows ctok::Error only; anything else reaching the fuzzer is a finding.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "ctok/core/error.hpp"

namespace ctok_fuzz {

// Runs fn; ctok::Error is the expected way to refuse an input. Returns true if fn returned.
template <typename F>
bool run_guarded(F&& fn) {
  try {
    fn();
    return true;
  } catch (const ctok::Error&) {
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FUZZ FINDING: exception other than ctok::Error escaped: %s\n", e.what());
    std::abort();
  }
}

// An invariant the reader promises about what it accepted.
#define CTOK_FUZZ_CHECK(cond, what)                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "FUZZ FINDING: %s:%d: %s (%s)\n", __FILE__, __LINE__, what, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// Environment variable or a build-time default.
inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : std::string(fallback);
}

}  // namespace ctok_fuzz
