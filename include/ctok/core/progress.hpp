// Progress reporting for long loops. On a terminal (stderr is a TTY) a bar redrawn in
// place: count/total, rate, ETA and a free-text suffix; otherwise one plain log line every
// `log_every_s` seconds and one at the end, so logs of batch runs stay readable.
//
//   ctok::Progress progress(steps, {.label = "learn"});      // C++20 style; or set fields
//   for (int i = 0; i < steps; ++i) {
//     ...;
//     progress.set_suffix(fmt::format("loss {:.4f}", loss));
//     progress.advance();
//   }
//   progress.finish();
//
// advance(), set_suffix() and finish() may be called from several threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>

namespace ctok {

struct ProgressOptions {
  std::string label;          // printed before the bar / at the start of each log line
  std::string unit = "it";    // rate unit: "it/s", "img/s", ...
  double log_every_s = 10.0;  // plain mode: seconds between log lines
  bool enabled = true;        // false: print nothing (quiet mode)
  int tty = -1;               // -1: detect isatty(stderr); 0: plain lines; 1: redrawn bar
  // Plain mode: where lines go (default: spdlog info). Bar mode always writes to stderr.
  std::function<void(const std::string&)> line_sink;
};

class Progress {
 public:
  // total <= 0: unknown total (no bar, no ETA). Quiet logging (-q) disables output.
  explicit Progress(int64_t total, ProgressOptions options = {});
  ~Progress();  // finish()es if not finished yet
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  void set_suffix(std::string suffix);
  void finish();  // idempotent; prints the final line

  int64_t count() const;
  int64_t total() const { return total_; }

  // "1:02:03" / "02:03"; exposed for tests.
  static std::string format_duration(double seconds);
  // The text of one status line (without bar); exposed for tests.
  std::string status_text(bool final_line) const;

 private:
  using Clock = std::chrono::steady_clock;
  void render_locked(bool final_line);
  std::string status_text_locked(bool final_line, double elapsed) const;

  const int64_t total_;
  ProgressOptions options_;
  bool tty_ = false;
  mutable std::mutex mutex_;
  int64_t count_ = 0;
  std::string suffix_;
  bool finished_ = false;
  Clock::time_point start_;
  Clock::time_point last_output_;
};

}  // namespace ctok
