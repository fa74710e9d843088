// The classification loss of docs/method.md §1 as plain tensor functions (the learner's
// objective; unit-tested on hand-made features in tests/unit/test_learn.cpp).
//
//   // logits of images over the class prompts [token, n_1 .. n_m]
//   torch::Tensor lg = scale * ctok::token::class_logits(images, token, negative_prompts);
//   torch::Tensor l = ctok::token::negative_text_loss(lg, targets);   // per image
//
// All features are L2-normalised rows; `scale` is the bundle's logit_scale.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "ctok/token/attributes.hpp"

namespace ctok::token {

// images [N, F], token [N, F] (the token prompt each image is scored with), prompts
// [N, m, F] (the negative class prompts of that template) -> [N, 1 + m] cosine
// similarities: column 0 the token prompt, column 1 + k negative class prompt k.
torch::Tensor class_logits(const torch::Tensor& images, const torch::Tensor& token, const torch::Tensor& prompts);

// Per-image loss of a negative image over the class prompts: logits [N, 1 + m] (scaled),
// targets [N] long: k >= 0 is the image's own class prompt (cross-entropy to column 1 + k),
// -1 is "not the token" (-log(1 - p(column 0))).
torch::Tensor negative_text_loss(const torch::Tensor& logits, const torch::Tensor& targets);

// The text side: positives [B, F] and negatives [M, F] scored against the token prompt
// token [F] and the negative class prompts [m, F]. Positives target the token prompt,
// negatives as in negative_text_loss; the two halves weigh equally. Undefined behaviour
// is avoided: M == 0 gives the positives' half alone (the learner never calls it so: no
// text side without negatives).
torch::Tensor text_side_loss(const torch::Tensor& positives, const torch::Tensor& negatives,
                             const torch::Tensor& negative_targets, const torch::Tensor& token,
                             const torch::Tensor& prompts, double scale);

// The image side: for each token prompt (rows of token [U, F]) a softmax over the images
// [positives; negatives], target the positives (uniform): the mean -log p over (row, positive).
torch::Tensor image_side_loss(const torch::Tensor& token, const torch::Tensor& positives,
                              const torch::Tensor& negatives, double scale);

// The default negative class words: the parent, then each sibling category of the
// attribute file (when given) that differs from it.
std::vector<std::string> negative_class_words(const std::string& parent, const AttributeSet* attributes);

}  // namespace ctok::token
