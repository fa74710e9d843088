#include "learn_adapter.hpp"

#include "ctok/core/fs.hpp"

namespace ctok::eval::detail {

token::LearnRequest concept_request(const data::Split& split, const data::Concept& c,
                                    const ConceptRequestOptions& o) {
  token::LearnRequest r;
  r.config = o.config;
  r.token = "<p" + std::to_string(c.pair_id) + "-s" + std::to_string(c.style) + ">";
  r.parent = data::query_word(c, o.hidden);
  nlohmann::json ids = nlohmann::json::array();
  for (const auto& s : data::select_support(c, o.shots, o.config.seed)) {
    r.images.push_back({s.image_path, s.box});
    ids.push_back(s.id());
  }
  if (o.negatives > 0 && o.config.lambda_cls > 0) {
    for (const auto& n : data::select_negatives(split, c, o.negatives, o.config.seed))
      r.negatives.push_back({n.image_path, n.box});
  }
  r.source = {{"df2", o.df2},
              {"split", o.split},
              {"pair_id", c.pair_id},
              {"style", c.style},
              {"shots", o.shots},
              {"support", ids},
              {"category_name", c.category_name},
              {"negatives", r.negatives.size()}};
  return r;
}

std::vector<token::LearnResult> learn_tokens(model::Bundle& bundle, std::vector<token::LearnRequest> requests,
                                             const LearnTokensOptions& options) {
  std::vector<token::LearnResult> out;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (options.stop && options.stop->load()) {
      token::LearnResult r;
      r.status = token::LearnStatus::kInterrupted;
      out.push_back(std::move(r));
      continue;
    }
    token::Learner learner(bundle, std::move(requests[i]));
    token::RunOptions ro;
    if (i < options.checkpoints.size()) {
      ro.checkpoint_path = options.checkpoints[i];
      if (file_exists(ro.checkpoint_path)) ro.resume_path = ro.checkpoint_path;
    }
    ro.progress = false;
    ro.stop = options.stop;
    out.push_back(token::learn(learner, ro));
  }
  return out;
}

}  // namespace ctok::eval::detail
