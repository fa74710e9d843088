#include "ctok/token/losses.hpp"

namespace ctok::token {

torch::Tensor class_logits(const torch::Tensor& images, const torch::Tensor& token, const torch::Tensor& prompts) {
  torch::Tensor pos = (images * token).sum(-1, true);                          // [N, 1]
  torch::Tensor neg = torch::bmm(prompts, images.unsqueeze(2)).squeeze(2);     // [N, m]
  return torch::cat({pos, neg}, 1);
}

torch::Tensor negative_text_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  torch::Tensor all = torch::logsumexp(logits, 1);                             // [N]
  torch::Tensor rest = torch::logsumexp(logits.slice(1, 1), 1);                // log of (1 - p0) * Z
  torch::Tensor known = targets.ge(0);
  torch::Tensor col = (targets.clamp_min(0) + 1).unsqueeze(1);
  torch::Tensor ce = all - logits.gather(1, col).squeeze(1);
  torch::Tensor not_token = all - rest;                                        // -log(1 - p0)
  return torch::where(known, ce, not_token);
}

torch::Tensor text_side_loss(const torch::Tensor& positives, const torch::Tensor& negatives,
                             const torch::Tensor& negative_targets, const torch::Tensor& token,
                             const torch::Tensor& prompts, double scale) {
  auto score = [&](const torch::Tensor& x) {
    const int64_t n = x.size(0);
    return scale * class_logits(x, token.reshape({1, -1}).expand({n, -1}),
                                prompts.unsqueeze(0).expand({n, -1, -1}).contiguous());
  };
  torch::Tensor lp = score(positives);
  torch::Tensor l_pos = torch::nn::functional::cross_entropy(
      lp, torch::zeros({positives.size(0)}, torch::TensorOptions().dtype(torch::kLong).device(lp.device())));
  if (negatives.size(0) == 0) return l_pos;
  return 0.5 * (l_pos + negative_text_loss(score(negatives), negative_targets).mean());
}

torch::Tensor image_side_loss(const torch::Tensor& token, const torch::Tensor& positives,
                              const torch::Tensor& negatives, double scale) {
  torch::Tensor all = torch::cat({positives, negatives}, 0);                   // [B + M, F]
  torch::Tensor lsm = torch::log_softmax(scale * torch::matmul(token, all.t()), 1);
  return -lsm.slice(1, 0, positives.size(0)).mean();
}

std::vector<std::string> negative_class_words(const std::string& parent, const AttributeSet* attributes) {
  std::vector<std::string> words{parent};
  if (attributes) {
    for (const auto& w : attributes->siblings)
      if (w != parent) words.push_back(w);
  }
  return words;
}

}  // namespace ctok::token
