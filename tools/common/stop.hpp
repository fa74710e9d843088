// Ctrl-C for the long tools (ctok-learn, ctok-eval): the first SIGINT sets a flag the
// library polls (checkpoints are written, the run ends with exit 130), a second one ends the
// program at once.
//
//   ro.stop = ctok::tool::catch_sigint();
//   ... the long call ...
//   ctok::tool::release_sigint();
#pragma once

#include <atomic>
#include <csignal>

namespace ctok::tool {

inline std::atomic<bool> g_stop{false};

extern "C" inline void ctok_on_sigint(int) {
  g_stop.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program at once
}

// Installs the handler; returns the flag to pass as the library's `stop`.
inline const std::atomic<bool>* catch_sigint() {
  std::signal(SIGINT, ctok_on_sigint);
  return &g_stop;
}

// Back to the default handler once the long work is over (Ctrl-C ends the program again).
inline void release_sigint() { std::signal(SIGINT, SIG_DFL); }

}  // namespace ctok::tool
