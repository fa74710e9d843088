#include "ctok/model/generate.hpp"

#include <algorithm>
#include <cmath>

#include "ctok/core/error.hpp"
#include "ctok/model/diffusion.hpp"

namespace ctok::model {

void validate(const GenerateOptions& o, const Bundle& bundle) {
  if (o.n < 1) throw bad_input("number of images per prompt must be at least 1").key("n").found(std::to_string(o.n));
  if (o.n > 10000) throw bad_input("too many images per prompt").key("n").expected("<= 10000").found(std::to_string(o.n));
  if (o.batch < 1) throw bad_input("batch must be at least 1").key("batch").found(std::to_string(o.batch));
  if (!std::isfinite(o.guidance)) throw bad_input("guidance must be a finite number").key("guidance");
  if (!(o.eta >= 0 && o.eta <= 1)) throw bad_input("eta out of range").key("eta").expected("0..1").found(std::to_string(o.eta));
  const int64_t T = bundle.has_diffusion() ? bundle.manifest().diffusion->num_train_timesteps : 1000;
  if (o.steps < 1 || o.steps > T) {
    throw bad_input("number of sampling steps out of range").key("steps")
        .expected("1.." + std::to_string(T)).found(std::to_string(o.steps));
  }
}

namespace {

// The sampling loop: rows of `cond` x seeds, in batches of o.batch (options validated).
std::vector<torch::Tensor> sample_rows(const Bundle& bundle, const torch::Tensor& cond, const torch::Tensor& uncond,
                                       const GenerateOptions& o, const StepCallback& on_step) {
  DiffusionModel diffusion(bundle);  // bad_input without diffusion models
  SampleOptions so;
  so.sampler = o.sampler;
  so.steps = o.steps;
  so.eta = o.eta;
  so.spacing = o.spacing;
  const int64_t total = cond.size(0) * o.n;
  const int64_t chunks = (total + o.batch - 1) / o.batch;
  std::vector<torch::Tensor> out;
  out.reserve(static_cast<size_t>(total));
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * o.batch, end = std::min(total, begin + o.batch);
    std::vector<int64_t> rows;
    std::vector<uint64_t> seeds;
    for (int64_t i = begin; i < end; ++i) {
      rows.push_back(i / o.n);
      seeds.push_back(o.seed + static_cast<uint64_t>(i % o.n));
    }
    const torch::Tensor idx = torch::tensor(rows, torch::kLong).to(cond.device());
    StepCallback cb;
    if (on_step) {
      cb = [&, c](int done, int) { on_step(static_cast<int>(c) * o.steps + done, static_cast<int>(chunks) * o.steps); };
    }
    const torch::Tensor z = diffusion.sample(cond.index_select(0, idx), uncond, o.guidance, so, seeds, cb);
    const torch::Tensor decoded = diffusion.decode(z).to(torch::kCPU, torch::kFloat32);
    for (int64_t i = 0; i < decoded.size(0); ++i) out.push_back(decoded[i].contiguous());
  }
  return out;
}

}  // namespace

std::vector<torch::Tensor> generate(const Bundle& bundle, const torch::Tensor& cond, const torch::Tensor& uncond,
                                    const GenerateOptions& o, const StepCallback& on_step) {
  validate(o, bundle);
  if (cond.dim() != 3 || cond.size(0) < 1 || cond.size(2) != bundle.width()) {
    throw bad_input("text conditioning must be [P, L, " + std::to_string(bundle.width()) + "] with P >= 1");
  }
  torch::Tensor u = uncond;
  if (o.guidance == 1.0) {
    u = cond.slice(0, 0, 1);  // not used by the sampler
  } else if (!u.defined()) {
    u = ClipModel(bundle).encode_text({o.negative}).hidden;
  }
  return sample_rows(bundle, cond, u, o, on_step);
}

std::vector<torch::Tensor> generate(const Bundle& bundle, const std::vector<std::string>& prompts,
                                    const TokenVectors& tokens, const GenerateOptions& o, const StepCallback& on_step) {
  validate(o, bundle);
  if (prompts.empty()) throw bad_input("no prompt to generate").key("prompt");
  const ClipModel clip(bundle);
  const torch::Tensor cond = clip.encode_text(prompts, tokens).hidden;  // checks the tokens
  const torch::Tensor uncond = o.guidance != 1.0 ? clip.encode_text({o.negative}, tokens).hidden : cond.slice(0, 0, 1);
  return sample_rows(bundle, cond, uncond, o, on_step);
}

image::Image to_image(const torch::Tensor& chw) {
  torch::Tensor d = chw.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  if (d.dim() != 3 || (d.size(0) != 3 && d.size(0) != 1)) throw runtime_failure("an image must be [3, H, W]");
  image::FloatImage f;
  f.channels = static_cast<int>(d.size(0));
  f.height = static_cast<int>(d.size(1));
  f.width = static_cast<int>(d.size(2));
  const float* p = d.data_ptr<float>();
  f.data.assign(p, p + d.numel());
  return image::from_float(f, -1.0f, 1.0f);
}

std::vector<image::Image> to_images(const std::vector<torch::Tensor>& images) {
  std::vector<image::Image> out;
  out.reserve(images.size());
  for (const auto& t : images) out.push_back(to_image(t));
  return out;
}

std::vector<image::Image> to_images(const torch::Tensor& batch) {
  if (batch.dim() != 4) throw runtime_failure("decoded images must be [B, 3, H, W]");
  std::vector<image::Image> out;
  for (int64_t b = 0; b < batch.size(0); ++b) out.push_back(to_image(batch[b]));
  return out;
}

}  // namespace ctok::model
