// Private to src/eval: the two places where ctok-eval meets the token learner. Until the
// lead's token::request_for_concept / token::learn_cohort land (team brief, interface 3),
// requests are built here and tokens learned one at a time with token::Learner +
// token::learn; the swap to the cohort learner is an edit of these two functions only.
#pragma once

#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "ctok/data/concepts.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/learner.hpp"

namespace ctok::eval::detail {

struct ConceptRequestOptions {
  token::LearnConfig config;            // the method's config; config.seed is the run seed
  int shots = 3;
  int negatives = 32;                   // user crops of other identities (when lambda_cls > 0)
  std::set<std::string> hidden;         // hidden categories (query word = parent)
  std::string df2, split;               // recorded in the token file's source
};

// The protocol's request for a concept: support set of `shots` user crops (seeded),
// negatives, parent = the query word, token "<p{pair_id}-s{style}>".
token::LearnRequest concept_request(const data::Split& split, const data::Concept& concept_,
                                    const ConceptRequestOptions& options);

struct LearnTokensOptions {
  std::vector<std::string> checkpoints;   // one per request: resumed when present
  const std::atomic<bool>* stop = nullptr;
};

// Learns every request; a result's status is kInterrupted when stop was set (its
// checkpoint written). Results in request order.
std::vector<token::LearnResult> learn_tokens(model::Bundle& bundle, std::vector<token::LearnRequest> requests,
                                             const LearnTokensOptions& options);

}  // namespace ctok::eval::detail
