// Generation: prompts (or text conditioning) -> images, nothing else. The grid, captions,
// files and records are the render layer's (ctok/render/render.hpp); GAIR and the
// generated negatives call this directly.
//
//   ctok::model::GenerateOptions g;                          // n 4, 50 DDIM steps, guidance 5
//   std::vector<torch::Tensor> ims = ctok::model::generate(bundle, {"a photo of a <x> dress"}, tokens, g);
//   ims[p * g.n + j];                                        // prompt p, seed g.seed + j: [3, H, W] in [-1, 1]
//   std::vector<ctok::image::Image> rgb = ctok::model::to_images(ims);
//
// Image j of every prompt starts from the noise of seed + j (one CPU generator per image),
// so images of one seed are comparable across prompts, and the same call reproduces the
// same bits on the same machine and build, whatever the batch size.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/schedule.hpp"

namespace ctok::model {

struct GenerateOptions {
  std::string negative;                  // unconditional prompt for guidance; empty: the empty prompt
  int n = 4;                             // images per prompt, seeds seed .. seed + n - 1
  int steps = 50;                        // sampler steps, 1 .. num_train_timesteps
  double guidance = 5.0;                 // classifier-free guidance scale (1: no unconditional pass)
  Sampler sampler = Sampler::kDdim;      // ddim | euler
  double eta = 0.0;                      // ddim stochasticity; euler: > 0 is Euler-ancestral
  Spacing spacing = Spacing::kTrailing;  // timestep spacing
  uint64_t seed = 0;                     // first seed
  int batch = 8;                         // images per sampler call (x2 with guidance)
};

// bad_input naming the field: n outside 1..10000, steps outside 1..T, batch < 1, eta
// outside [0, 1], guidance not finite.
void validate(const GenerateOptions& options, const Bundle& bundle);

// One image per prompt x seed, prompt-major: [3, H, W] float32 CPU in [-1, 1]. The
// negative prompt may use the tokens too. Called with (sampler steps done, total).
std::vector<torch::Tensor> generate(const Bundle& bundle, const std::vector<std::string>& prompts,
                                    const TokenVectors& tokens, const GenerateOptions& options,
                                    const StepCallback& on_step = {});

// The same from text conditioning: cond [P, L, width] (e.g. blends of encoded prompts),
// uncond [1 or P, L, width] or undefined: the negative prompt encoded without custom tokens
// (not used when guidance is 1).
std::vector<torch::Tensor> generate(const Bundle& bundle, const torch::Tensor& cond, const torch::Tensor& uncond,
                                    const GenerateOptions& options, const StepCallback& on_step = {});

// [3, H, W] (or [B, 3, H, W]) in [-1, 1] -> 8-bit RGB.
image::Image to_image(const torch::Tensor& chw);
std::vector<image::Image> to_images(const std::vector<torch::Tensor>& images);
std::vector<image::Image> to_images(const torch::Tensor& batch);

}  // namespace ctok::model
