// Diffusion side of a bundle: UNet calls, classifier-free guided sampling, VAE.
//
//   ctok::model::DiffusionModel diff(bundle);               // bundle loaded with load_diffusion
//   auto cond = clip.encode_text({"a photo of a <tok> dress"}, tokens).hidden;
//   auto uncond = clip.encode_text({""}).hidden;            // or a negative prompt
//   torch::Tensor z = diff.sample(cond, uncond, 5.0, {Sampler::kDdim, 50}, {0});
//   torch::Tensor images = diff.decode(z);                  // [B, 3, H, W] in [-1, 1]
//
// Training (the inversion loss) uses add_noise from schedule() and unet(), which keep
// gradients. Sampling and the VAE run in inference mode.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "ctok/model/bundle.hpp"
#include "ctok/model/schedule.hpp"

namespace ctok::model {

class DiffusionModel {
 public:
  // bad_input if the bundle has no diffusion section; runtime_failure if it was loaded
  // without load_diffusion.
  explicit DiffusionModel(const Bundle& bundle);

  const NoiseSchedule& schedule() const { return bundle_.schedule(); }
  std::vector<int64_t> latent_shape() const;  // [C, h, w]
  int64_t image_size() const;

  // One UNet call: sample [B, C, h, w], timestep [B] int64, context [B, L, width]. Inputs
  // are moved to the bundle's device and dtype; output float32. Differentiable.
  torch::Tensor unet(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& context);

  // Guided model output: uncond + guidance * (cond - uncond), one batched UNet call
  // (the unconditional half is skipped when guidance == 1). cond [B, L, W]; uncond [B|1, L, W].
  torch::Tensor guided(const torch::Tensor& x, int64_t t, const torch::Tensor& cond, const torch::Tensor& uncond,
                       double guidance);

  // Samples latents [B, C, h, w] float32, image i starting from the noise of seeds[i]
  // (one CPU generator each, also used for the eta noise). seeds.size() == B.
  torch::Tensor sample(const torch::Tensor& cond, const torch::Tensor& uncond, double guidance,
                       const SampleOptions& options, const std::vector<uint64_t>& seeds,
                       const StepCallback& on_step = {});

  // images [B, 3, H, W] in [-1, 1] -> latents (already times latent_scale); identity for
  // pixel-space bundles. decode is the inverse, output float32 (not clamped).
  torch::Tensor encode(const torch::Tensor& images);
  torch::Tensor decode(const torch::Tensor& latents);
  // The same with gradients kept (for callers that need them).
  torch::Tensor encode_with_grad(const torch::Tensor& images);

 private:
  const Bundle& bundle_;
};

}  // namespace ctok::model
