// Logging setup: spdlog's default logger, to stderr.
//
//   ctok::init_logging(verbose - quiet);   // -q: warnings only, default: info, -v: debug
//   spdlog::info("learned {} steps", n);
#pragma once

#include <string>

namespace ctok {

// verbosity < 0: warn; 0: info; 1: debug; >= 2: trace. Safe to call more than once.
void init_logging(int verbosity);
// The verbosity last set (0 before init_logging).
int log_verbosity();
// True when info messages are suppressed (-q): progress reporting stays silent too.
bool log_quiet();
// The current time as ISO 8601 UTC ("2026-12-04T15:31:00Z"): the `created` field of records.
std::string utc_timestamp();

}  // namespace ctok
