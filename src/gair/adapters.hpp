// Thin adapters between GAIR and the modules being reshaped in parallel (team brief,
// interfaces 2 and 4). Each is one function with the agreed shape; when the owner's
// version lands, its body becomes a call to it.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "ctok/gair/gair.hpp"
#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"

namespace ctok::gair::detail {

// Renders conditioning `cond` [P, L, W] (hidden states of the text encoder), n images per
// row, image j of every row from seed + j; prompt-major 8-bit RGB.
// Agreed replacement: model::generate_from_hidden + model::to_images.
std::vector<image::Image> render_hidden(const model::Bundle& bundle, const torch::Tensor& cond,
                                        const GenerateSettings& settings, const StepCallback& on_step);

// The bundle's CLIP image preprocessing (size, mean, std from the manifest).
image::Preprocess clip_preprocess(const model::Bundle& bundle);

}  // namespace ctok::gair::detail
