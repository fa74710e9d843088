// Noise schedules and samplers, independent of any network: the sampler calls a
// `Denoiser` (the UNet with guidance, or a mock in tests).
//
//   ctok::model::NoiseSchedule s({1000, BetaSchedule::kScaledLinear, 0.00085, 0.012});
//   torch::Tensor zt = s.add_noise(z0, eps, t);                     // training
//   auto gens = ctok::model::make_generators({seed, seed + 1});
//   torch::Tensor x = ctok::model::seeded_noise(gens, {4, 8, 8}, device);
//   torch::Tensor z0 = ctok::model::sample(s, denoiser, x, {Sampler::kDdim, 50, 0.0}, gens);
//
// Conventions (docs/rendering.md): timesteps use "trailing" spacing by default (999, 979,
// ... for 50 of 1000), the last DDIM step goes to alpha_cumprod = 1, Euler is the discrete
// k-diffusion sampler (sigma = sqrt((1 - a) / a) at the same timesteps, then 0) and
// becomes Euler-ancestral when eta > 0. Noise is drawn on the CPU from one generator per
// image, so a seed gives the same noise on every device and whatever the batch size.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ctok/model/sampling_types.hpp"

namespace ctok::model {

struct ScheduleConfig {
  int num_train_timesteps = 1000;                      // T
  BetaSchedule beta_schedule = BetaSchedule::kScaledLinear;
  double beta_start = 0.00085;                         // beta_0 (not used by squaredcos_cap_v2)
  double beta_end = 0.012;                             // beta_{T-1} (not used by squaredcos_cap_v2)
  Prediction prediction = Prediction::kEpsilon;        // what the UNet outputs
};

class NoiseSchedule {
 public:
  explicit NoiseSchedule(const ScheduleConfig& config);

  const ScheduleConfig& config() const { return config_; }
  int num_train_timesteps() const { return config_.num_train_timesteps; }
  Prediction prediction() const { return config_.prediction; }
  const torch::Tensor& betas() const { return betas_; }                    // [T] float64, CPU
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // [T] float64, CPU
  double alpha_cumprod(int64_t t) const;  // bad_input when t is outside [0, T)

  // z_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise per batch item; t: [B] int64 (any device).
  // Differentiable with respect to x0 and noise.
  torch::Tensor add_noise(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t) const;
  // What the UNet should output for (x0, noise, t): noise, or v = sqrt(a) noise - sqrt(1-a) x0.
  torch::Tensor training_target(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t) const;
  // Uniform random training timesteps [B] int64 in [0, T).
  torch::Tensor random_timesteps(int64_t batch, at::Generator& generator) const;

  // Descending sampling timesteps for `steps` steps; bad_input unless 1 <= steps <= T.
  // trailing: round(T - i T / steps) - 1 (999, 979, ..., 19); leading: i * (T / steps)
  // (980, 960, ..., 0), as diffusers' "leading" without steps_offset.
  std::vector<int64_t> sampling_timesteps(int steps, Spacing spacing = Spacing::kTrailing) const;

 private:
  ScheduleConfig config_;
  torch::Tensor betas_, alphas_cumprod_;
  std::vector<double> acp_;  // alphas_cumprod as doubles
};

struct SampleOptions {
  Sampler sampler = Sampler::kDdim;  // ddim | euler
  int steps = 50;                    // denoising steps, 1..num_train_timesteps
  double eta = 0.0;                  // ddim: 0 deterministic .. 1 DDPM-like; euler: > 0 ancestral
  Spacing spacing = Spacing::kTrailing;  // how the steps are spread over [0, T)
};

// The network with guidance applied: x [B, C, h, w] in the DDPM scale (variance ~1) at
// timestep t -> the model output (noise or velocity, per the schedule's prediction).
using Denoiser = std::function<torch::Tensor(const torch::Tensor& x, int64_t t)>;
// Called after each step with (step done, total steps).
using StepCallback = std::function<void(int, int)>;

// One CPU generator per seed.
std::vector<at::Generator> make_generators(const std::vector<uint64_t>& seeds);
// Standard normal noise [N, shape...] float32, item i from generators[i] (drawn on the CPU,
// then moved to `device`).
torch::Tensor seeded_noise(std::vector<at::Generator>& generators, const std::vector<int64_t>& shape,
                           const torch::Device& device);

// Runs the sampler from unit-variance noise [B, ...] to x0 (float32). `generators` (one
// per batch item) supply the extra noise when eta > 0.
torch::Tensor sample(const NoiseSchedule& schedule, const Denoiser& denoiser, const torch::Tensor& noise,
                     const SampleOptions& options, std::vector<at::Generator>& generators,
                     const StepCallback& on_step = {});

}  // namespace ctok::model
