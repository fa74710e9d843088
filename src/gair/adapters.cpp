#include "adapters.hpp"

#include <algorithm>

#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/model/render.hpp"

namespace ctok::gair::detail {

std::vector<image::Image> render_hidden(const model::Bundle& bundle, const torch::Tensor& cond,
                                        const GenerateSettings& g, const StepCallback& on_step) {
  model::ClipModel clip(bundle);
  model::DiffusionModel diffusion(bundle);  // bad_input without diffusion models
  const int64_t rows = cond.size(0);
  const torch::Tensor uncond =
      g.guidance != 1.0 ? clip.encode_text({g.negative}).hidden : cond.slice(0, 0, 1);
  model::SampleOptions so;
  so.sampler = g.sampler;
  so.steps = g.steps;
  so.eta = g.eta;
  so.spacing = g.spacing;

  const int64_t total = rows * g.n;
  const int64_t chunks = (total + g.batch - 1) / g.batch;
  std::vector<image::Image> out;
  out.reserve(static_cast<size_t>(total));
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * g.batch, end = std::min(total, begin + g.batch);
    std::vector<int64_t> row_of;
    std::vector<uint64_t> seeds;
    for (int64_t i = begin; i < end; ++i) {
      row_of.push_back(i / g.n);
      seeds.push_back(g.seed + static_cast<uint64_t>(i % g.n));
    }
    const torch::Tensor idx = torch::tensor(row_of, torch::kLong).to(cond.device());
    StepCallback cb;
    if (on_step) {
      cb = [&, c](int done, int) { on_step(static_cast<int>(c) * g.steps + done, static_cast<int>(chunks) * g.steps); };
    }
    const torch::Tensor z = diffusion.sample(cond.index_select(0, idx), uncond, g.guidance, so, seeds, cb);
    for (auto& im : model::to_images(diffusion.decode(z))) out.push_back(std::move(im));
  }
  return out;
}

image::Preprocess clip_preprocess(const model::Bundle& bundle) {
  image::Preprocess pre;
  pre.size = static_cast<int>(bundle.image_size());
  for (int c = 0; c < 3; ++c) {
    pre.mean[c] = static_cast<float>(bundle.manifest().image.mean[c]);
    pre.std[c] = static_cast<float>(bundle.manifest().image.std[c]);
  }
  return pre;
}

}  // namespace ctok::gair::detail
