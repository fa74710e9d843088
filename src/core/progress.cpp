#include "ctok/core/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "ctok/core/log.hpp"

namespace ctok {
namespace {

int terminal_width() {
  struct winsize ws {};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 100;
}

std::string format_rate(double rate) {
  char buf[32];
  if (rate >= 100) {
    std::snprintf(buf, sizeof(buf), "%.0f", rate);
  } else if (rate >= 1) {
    std::snprintf(buf, sizeof(buf), "%.2f", rate);
  } else {
    std::snprintf(buf, sizeof(buf), "%.3f", rate);
  }
  return buf;
}

constexpr double kRedrawSeconds = 0.1;

}  // namespace

Progress::Progress(int64_t total, ProgressOptions options)
    : total_(total), options_(std::move(options)), start_(Clock::now()), last_output_(start_) {
  if (log_quiet()) options_.enabled = false;
  tty_ = options_.tty < 0 ? ::isatty(STDERR_FILENO) == 1 : options_.tty == 1;
  if (options_.enabled && tty_) {
    std::lock_guard<std::mutex> lock(mutex_);
    render_locked(false);
  }
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  count_ += n;
  if (!options_.enabled) return;
  const double since = std::chrono::duration<double>(Clock::now() - last_output_).count();
  if (since >= (tty_ ? kRedrawSeconds : options_.log_every_s)) render_locked(false);
}

void Progress::set_suffix(std::string suffix) {
  std::lock_guard<std::mutex> lock(mutex_);
  suffix_ = std::move(suffix);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  finished_ = true;
  if (options_.enabled) render_locked(true);
}

int64_t Progress::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return count_;
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  }
  return buf;
}

std::string Progress::status_text(bool final_line) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return status_text_locked(final_line, std::chrono::duration<double>(Clock::now() - start_).count());
}

std::string Progress::status_text_locked(bool final_line, double elapsed) const {
  std::string s = std::to_string(count_);
  if (total_ > 0) s += "/" + std::to_string(total_);
  const double rate = elapsed > 0 ? static_cast<double>(count_) / elapsed : 0.0;
  s += " " + format_rate(rate) + " " + options_.unit + "/s";
  if (final_line) {
    s += " done in " + format_duration(elapsed);
  } else if (total_ > 0) {
    s += " elapsed " + format_duration(elapsed) + " ETA ";
    s += rate > 0 ? format_duration(static_cast<double>(total_ - count_) / rate) : "--:--";
  } else {
    s += " elapsed " + format_duration(elapsed);
  }
  if (!suffix_.empty()) s += " | " + suffix_;
  return s;
}

void Progress::render_locked(bool final_line) {
  const Clock::time_point now = Clock::now();
  last_output_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const std::string status = status_text_locked(final_line, elapsed);
  if (!tty_) {
    const std::string line = (options_.label.empty() ? "" : options_.label + ": ") + status;
    if (options_.line_sink) {
      options_.line_sink(line);
    } else {
      spdlog::info("{}", line);
    }
    return;
  }
  std::string line = options_.label.empty() ? "" : options_.label + " ";
  if (total_ > 0) {
    const int width = 24;
    const double frac = std::min(1.0, static_cast<double>(count_) / static_cast<double>(total_));
    const int filled = static_cast<int>(frac * width);
    char pct[8];
    std::snprintf(pct, sizeof(pct), "%3d%%", static_cast<int>(frac * 100));
    line += std::string(pct) + " [" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
  }
  line += status;
  const std::size_t columns = static_cast<std::size_t>(terminal_width());
  if (line.size() >= columns) line.resize(columns - 1);
  // \r + clear to end of line: redraw in place.
  std::fprintf(stderr, "\r%s\x1b[K%s", line.c_str(), final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace ctok
