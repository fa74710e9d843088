#include "ctok/model/schedule.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "ctok/core/error.hpp"

namespace ctok::model {

NoiseSchedule::NoiseSchedule(const ScheduleConfig& config) : config_(config) {
  const int n = config.num_train_timesteps;
  if (n < 2 || n > 100000) {
    throw bad_input("num_train_timesteps out of range").key("diffusion.num_train_timesteps")
        .expected("2..100000").found(std::to_string(n));
  }
  const bool uses_betas = config.beta_schedule != BetaSchedule::kSquaredCosCapV2;
  if (uses_betas && !(config.beta_start > 0 && config.beta_end < 1 && config.beta_start <= config.beta_end)) {
    throw bad_input("beta_start/beta_end must satisfy 0 < beta_start <= beta_end < 1")
        .key("diffusion.beta_start")
        .found(std::to_string(config.beta_start) + ", " + std::to_string(config.beta_end));
  }
  // Computed in float64 (the trainer does the same), kept in float64.
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  if (config.beta_schedule == BetaSchedule::kLinear) {
    betas_ = torch::linspace(config.beta_start, config.beta_end, n, opts);
  } else if (config.beta_schedule == BetaSchedule::kScaledLinear) {
    betas_ = torch::linspace(std::sqrt(config.beta_start), std::sqrt(config.beta_end), n, opts).pow(2);
  } else {
    // Nichol & Dhariwal's cosine schedule, as diffusers' betas_for_alpha_bar (max beta 0.999).
    const double pi = 3.14159265358979323846;
    auto alpha_bar = [pi](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * pi / 2), 2); };
    betas_ = torch::empty({n}, opts);
    auto acc = betas_.accessor<double, 1>();
    for (int i = 0; i < n; ++i) {
      acc[i] = std::min(1 - alpha_bar((i + 1.0) / n) / alpha_bar(static_cast<double>(i) / n), 0.999);
    }
  }
  alphas_cumprod_ = torch::cumprod(1.0 - betas_, 0);
  acp_.assign(alphas_cumprod_.data_ptr<double>(), alphas_cumprod_.data_ptr<double>() + n);
}

double NoiseSchedule::alpha_cumprod(int64_t t) const {
  if (t < 0 || t >= config_.num_train_timesteps) {
    throw bad_input("timestep out of range").expected("0.." + std::to_string(config_.num_train_timesteps - 1))
        .found(std::to_string(t));
  }
  return acp_[static_cast<size_t>(t)];
}

namespace {

// alphas_cumprod at t, shaped [B, 1, 1, ...] to broadcast against x.
torch::Tensor gather_alpha(const torch::Tensor& acp, const torch::Tensor& t, const torch::Tensor& like) {
  auto tc = t.to(torch::kCPU, torch::kLong).reshape({-1});
  if (tc.numel() != like.size(0)) {
    throw bad_input("timestep batch does not match the sample batch")
        .expected(std::to_string(like.size(0))).found(std::to_string(tc.numel()));
  }
  const int64_t n = acp.size(0);
  if (tc.numel() > 0 && (tc.min().item<int64_t>() < 0 || tc.max().item<int64_t>() >= n)) {
    throw bad_input("timestep out of range").expected("0.." + std::to_string(n - 1));
  }
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = like.size(0);
  return acp.index_select(0, tc).to(like.options().requires_grad(false)).reshape(shape);
}

}  // namespace

torch::Tensor NoiseSchedule::add_noise(const torch::Tensor& x0, const torch::Tensor& noise,
                                       const torch::Tensor& t) const {
  auto a = gather_alpha(alphas_cumprod_, t, x0);
  return a.sqrt() * x0 + (1 - a).sqrt() * noise;
}

torch::Tensor NoiseSchedule::training_target(const torch::Tensor& x0, const torch::Tensor& noise,
                                             const torch::Tensor& t) const {
  if (config_.prediction == Prediction::kEpsilon) return noise;
  auto a = gather_alpha(alphas_cumprod_, t, x0);
  return a.sqrt() * noise - (1 - a).sqrt() * x0;
}

torch::Tensor NoiseSchedule::random_timesteps(int64_t batch, at::Generator& generator) const {
  return torch::randint(0, config_.num_train_timesteps, {batch}, generator, torch::kLong);
}

std::vector<int64_t> NoiseSchedule::sampling_timesteps(int steps, Spacing spacing) const {
  const int n = config_.num_train_timesteps;
  if (steps < 1 || steps > n) {
    throw bad_input("number of sampling steps out of range").key("steps")
        .expected("1.." + std::to_string(n)).found(std::to_string(steps));
  }
  std::vector<int64_t> ts;
  ts.reserve(static_cast<size_t>(steps));
  if (spacing == Spacing::kTrailing) {
    const double ratio = static_cast<double>(n) / steps;
    for (int i = 0; i < steps; ++i) ts.push_back(static_cast<int64_t>(std::llround(n - i * ratio)) - 1);
  } else {
    const int ratio = n / steps;
    for (int i = steps - 1; i >= 0; --i) ts.push_back(static_cast<int64_t>(i) * ratio);
  }
  return ts;
}

std::vector<at::Generator> make_generators(const std::vector<uint64_t>& seeds) {
  std::vector<at::Generator> gens;
  gens.reserve(seeds.size());
  for (uint64_t s : seeds) gens.push_back(at::detail::createCPUGenerator(s));
  return gens;
}

torch::Tensor seeded_noise(std::vector<at::Generator>& generators, const std::vector<int64_t>& shape,
                           const torch::Device& device) {
  std::vector<torch::Tensor> items;
  items.reserve(generators.size());
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  for (auto& g : generators) items.push_back(torch::randn(shape, g, opts));
  if (items.empty()) {
    std::vector<int64_t> full{0};
    full.insert(full.end(), shape.begin(), shape.end());
    return torch::empty(full, opts.device(device));
  }
  return torch::stack(items).to(device);
}

namespace {

// Model output -> predicted noise, given the DDPM-scale input x and alpha_cumprod a.
torch::Tensor to_eps(Prediction p, const torch::Tensor& out, const torch::Tensor& x, double a) {
  if (p == Prediction::kEpsilon) return out;
  return std::sqrt(a) * out + std::sqrt(1 - a) * x;
}

torch::Tensor to_x0(Prediction p, const torch::Tensor& out, const torch::Tensor& x, double a) {
  if (p == Prediction::kEpsilon) return (x - std::sqrt(1 - a) * out) / std::sqrt(a);
  return std::sqrt(a) * x - std::sqrt(1 - a) * out;
}

}  // namespace

torch::Tensor sample(const NoiseSchedule& schedule, const Denoiser& denoiser, const torch::Tensor& noise,
                     const SampleOptions& options, std::vector<at::Generator>& generators,
                     const StepCallback& on_step) {
  if (options.eta < 0 || options.eta > 1 || !std::isfinite(options.eta)) {
    throw bad_input("eta out of range").key("eta").expected("0..1").found(std::to_string(options.eta));
  }
  const auto ts = schedule.sampling_timesteps(options.steps, options.spacing);
  const int n = static_cast<int>(ts.size());
  if (options.eta > 0 && static_cast<int64_t>(generators.size()) != noise.size(0)) {
    throw runtime_failure("sample: one generator per batch item is needed when eta > 0");
  }
  std::vector<int64_t> item_shape(noise.sizes().begin() + 1, noise.sizes().end());
  const Prediction pred = schedule.prediction();
  torch::Tensor x = noise.to(torch::kFloat32);

  if (options.sampler == Sampler::kDdim) {
    for (int i = 0; i < n; ++i) {
      const double a = schedule.alpha_cumprod(ts[i]);
      const double a_prev = i + 1 < n ? schedule.alpha_cumprod(ts[i + 1]) : 1.0;
      torch::Tensor out = denoiser(x, ts[i]).to(torch::kFloat32);
      torch::Tensor eps = to_eps(pred, out, x, a);
      torch::Tensor x0 = to_x0(pred, out, x, a);
      const double sigma = options.eta * std::sqrt((1 - a_prev) / (1 - a)) * std::sqrt(1 - a / a_prev);
      const double dir = std::sqrt(std::max(0.0, 1 - a_prev - sigma * sigma));
      x = std::sqrt(a_prev) * x0 + dir * eps;
      if (sigma > 0) x = x + sigma * seeded_noise(generators, item_shape, x.device());
      if (on_step) on_step(i + 1, n);
    }
    return x;
  }

  // Euler (k-diffusion, discrete sigmas at the chosen timesteps, then 0).
  std::vector<double> sigmas;
  for (int64_t t : ts) {
    const double a = schedule.alpha_cumprod(t);
    sigmas.push_back(std::sqrt((1 - a) / a));
  }
  sigmas.push_back(0.0);
  x = x * sigmas[0];
  for (int i = 0; i < n; ++i) {
    const double s = sigmas[i], s_next = sigmas[i + 1];
    const double a = 1.0 / (s * s + 1.0);  // == alpha_cumprod(ts[i])
    torch::Tensor x_in = x * std::sqrt(a);
    torch::Tensor out = denoiser(x_in, ts[i]).to(torch::kFloat32);
    torch::Tensor eps = to_eps(pred, out, x_in, a);  // dx/dsigma
    if (options.eta > 0 && s_next > 0) {
      const double s_up =
          std::min(s_next, options.eta * std::sqrt(s_next * s_next * (s * s - s_next * s_next) / (s * s)));
      const double s_down = std::sqrt(s_next * s_next - s_up * s_up);
      x = x + eps * (s_down - s);
      x = x + s_up * seeded_noise(generators, item_shape, x.device());
    } else {
      x = x + eps * (s_next - s);
    }
    if (on_step) on_step(i + 1, n);
  }
  return x;
}

}  // namespace ctok::model
