#include "ctok/core/log.hpp"

#include <ctime>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <memory>

namespace ctok {
namespace {
std::atomic<int> g_verbosity{0};
}

void init_logging(int verbosity) {
  g_verbosity = verbosity;
  auto logger = spdlog::get("ctok");
  if (!logger) {
    // Colour only on a terminal (automatic mode); always stderr, so stdout stays clean
    // for results that other programs parse.
    logger = spdlog::stderr_color_mt("ctok");
    logger->set_pattern("[%H:%M:%S] %^%l%$: %v");
    spdlog::set_default_logger(logger);
  }
  spdlog::level::level_enum level = spdlog::level::info;
  if (verbosity < 0) {
    level = spdlog::level::warn;
  } else if (verbosity == 1) {
    level = spdlog::level::debug;
  } else if (verbosity >= 2) {
    level = spdlog::level::trace;
  }
  logger->set_level(level);
  spdlog::set_level(level);
}

int log_verbosity() { return g_verbosity; }

bool log_quiet() { return !spdlog::default_logger_raw()->should_log(spdlog::level::info); }

std::string utc_timestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace ctok
