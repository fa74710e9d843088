// Cohort learning: many tokens learned at once, their text-encoder and UNet passes batched
// into one forward/backward per step, each token with its own parameter, AdamW state,
// config, images and random draws (seeded exactly as when it is learned alone, so the
// result equals the solo run up to floating-point reassociation; tests/unit/test_learn.cpp
// states the tolerance).
//
//   std::vector<ctok::token::LearnRequest> requests = ...;   // one per token, one bundle
//   ctok::token::CohortOptions o;
//   o.checkpoint_paths = {"a.ckpt", "b.ckpt"};                // resumed when they exist
//   auto results = ctok::token::learn_cohort(bundle, requests, o);
//   for (auto& r : results) if (r.error.empty()) write_token_file(..., r.result.token);
//
// Members may have different configs (methods) and step counts; one that finishes or fails
// leaves the cohort and the others go on. On a CPU with spare cores the requests are split
// between worker threads (CohortOptions::workers), each batching its share: the small
// default models gain more from cores across tokens than from cores inside each op.
// Used by ctok-learn --concepts and ctok-eval.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "ctok/model/bundle.hpp"
#include "ctok/token/learner.hpp"

namespace ctok::token {

struct CohortOptions {
  // Tokens in flight at once (more are learned in rounds), split between the workers: 8 is
  // 4 per worker on 2 cores, the fastest measured on the CPU (docs/results.md, cohort learning);
  // on a GPU a bigger cohort fills the device better (try 64).
  int cohort = 8;
  // Threads that each run their own batched steps over a round-robin share of the requests
  // (cohort / workers tokens per step each). 0: auto, the cores over libtorch's intra-op
  // threads (2 on a 2-core machine with the small default bundle's 1 intra-op thread; 1 for
  // a big bundle that uses every core inside each op). Capped by `cohort` and the requests.
  int workers = 0;
  int cores = 0;  // cores the auto rule may fill (0: every core); jobs run side by side give their share
  std::vector<std::string> checkpoint_paths;  // per request; empty or "": none. An existing file is resumed.
  bool progress = true;                     // one bar over every token's steps
  const std::atomic<bool>* stop = nullptr;  // Ctrl-C: checkpoints written, members left interrupted
  // After a member finishes (index into the requests), e.g. to write its token file at once.
  std::function<void(std::size_t, const LearnResult&)> on_done;
};

struct CohortResult {
  LearnResult result;  // status kInterrupted when stopped
  std::string error;   // non-empty when this member failed (bad input, NaN); the others are unaffected
};

// The workers `options` resolves to for `members` requests (>= 1); bad_input when < 0.
int cohort_workers(const CohortOptions& options, std::size_t members);

// Learners are built (images decoded, features and latents cached) one round at a time;
// bad_input of one request is that member's error, not the cohort's.
std::vector<CohortResult> learn_cohort(const model::Bundle& bundle, const std::vector<LearnRequest>& requests,
                                       const CohortOptions& options);

}  // namespace ctok::token
