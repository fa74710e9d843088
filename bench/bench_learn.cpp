// Seconds per learning step of the token learner, beside the bare forward + backward of the
// same batch in the same process (the learner's overhead ratio), and peak RSS.
//
//   build/bin/bench_learn [--bundle models/default] [--images DIR | --df2 data/fashionworld]
//                         [--steps 30] [--batch 4] [--threads 2] [--json out.json]
//
// Both loops run interleaved (learner step, bare step, ...) so machine load hits them alike.
// The bare loop: token vector with requires_grad, the batch's prompts through the text
// encoder, UNet on cached latents, MSE + text-side cross-entropy, backward, no optimiser,
// no bookkeeping. bench/bench_learn.py times the equivalent Python loop on the same bundle.
#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "ctok/core/log.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/data/image_folder.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/token/learner.hpp"

using namespace ctok;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}
double mean(const std::vector<double>& v) { return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }
// <exe>/../../data/fashionworld (build tree), else ./data/fashionworld.
std::string default_df2() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto p = exe.parent_path() / ".." / ".." / "data" / "fashionworld";
    if (std::filesystem::is_directory(p, ec)) return p.lexically_normal().string();
  }
  return "data/fashionworld";
}
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bundle_dir, images, df2 = default_df2(), json_out;
  int steps = 30, batch = 4, threads = 2, warmup = 3;
  double lambda_inv = 1.0, lambda_cls = 0.1;
  std::string subspace = "auto";
  CLI::App app{"bench_learn: seconds per learning step vs the bare forward+backward"};
  app.add_option("--bundle", bundle_dir);
  app.add_option("--images", images, "concept images (default: a sneaker support set from --df2)");
  app.add_option("--df2", df2);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--batch", batch);
  app.add_option("--threads", threads);
  app.add_option("--lambda-inv", lambda_inv);
  app.add_option("--lambda-cls", lambda_cls);
  app.add_option("--subspace", subspace);
  app.add_option("--json", json_out);
  CLI11_PARSE(app, argc, argv);
  try {
    init_logging(-1);
    configure_threads(threads);
    model::BundleOptions bo;
    bo.dir = bundle_dir;
    bo.load_diffusion = lambda_inv > 0;
    model::Bundle bundle = model::Bundle::load(bo);

    token::LearnRequest r;
    r.token = "<bench>";
    r.config.batch = batch;
    r.config.steps = warmup + steps;
    r.config.lambda_inv = lambda_inv;
    r.config.lambda_cls = lambda_cls;
    r.config.subspace = subspace;
    if (!images.empty()) {
      r.parent = "shoe";
      for (const auto& f : data::list_images(images)) r.images.push_back({f, std::nullopt});
    } else {
      data::Split split = data::read_split(df2, "validation");
      auto concepts = data::find_concepts(split, {3, 1});
      const data::Concept* c = nullptr;
      for (const auto& x : concepts)
        if (x.category_name == "sneaker") { c = &x; break; }
      if (!c) c = &concepts.front();
      for (const auto& s : data::select_support(*c, 3, 0)) r.images.push_back({s.image_path, s.box});
      for (const auto& n : data::select_negatives(split, *c, 32, 0)) r.negatives.push_back({n.image_path, n.box});
      r.parent = c->parent.empty() ? c->category_name : c->parent;
    }
    const auto t_setup = Clock::now();
    token::Learner learner(bundle, r);
    const double setup_s = std::chrono::duration<double>(Clock::now() - t_setup).count();

    // The bare loop's inputs: the same shapes as one learner step.
    model::ClipModel clip(bundle);
    std::unique_ptr<model::DiffusionModel> diff;
    if (lambda_inv > 0) diff = std::make_unique<model::DiffusionModel>(bundle);
    std::vector<std::string> prompts(learner.token_prompts().begin(),
                                     learner.token_prompts().begin() + std::min<std::size_t>(batch, learner.token_prompts().size()));
    while (static_cast<int>(prompts.size()) < batch) prompts.push_back(prompts.front());
    torch::Tensor v = learner.vectors().clone().requires_grad_(true);
    model::PromptBatch pb = clip.tokenize(prompts, std::map<std::string, int64_t>{{r.token, 1}});
    torch::manual_seed(0);
    torch::Tensor z0, noise, t;
    if (diff) {
      auto s = diff->latent_shape();
      z0 = torch::randn({batch, s[0], s[1], s[2]});
      noise = torch::randn({batch, s[0], s[1], s[2]});
      t = torch::randint(0, 1000, {batch}, torch::kLong);
    }
    const int64_t F = bundle.text_feature_dim();
    torch::Tensor g = model::l2_normalize(torch::randn({batch, F}));
    torch::Tensor negs = model::l2_normalize(torch::randn({batch, 4, F}));
    auto bare = [&] {
      model::TokenVectors tokens{{r.token, v}};
      auto enc = clip.encode(pb, tokens);
      torch::Tensor loss = torch::zeros({});
      if (diff) {
        torch::Tensor zt = bundle.schedule().add_noise(z0, noise, t).to(torch::kFloat32);
        loss = loss + lambda_inv * torch::mse_loss(diff->unet(zt, t, enc.hidden), noise);
      }
      if (lambda_cls > 0) {
        torch::Tensor tf = model::l2_normalize(enc.features);
        torch::Tensor pos = (g * tf).sum(-1, true);
        torch::Tensor neg = torch::bmm(negs, g.unsqueeze(2)).squeeze(2);
        torch::Tensor logits = bundle.logit_scale() * torch::cat({pos, neg}, 1);
        loss = loss + lambda_cls * torch::nn::functional::cross_entropy(logits, torch::zeros({batch}, torch::kLong));
      }
      auto grads = torch::autograd::grad({loss}, {v});
      return grads[0].sum().item<double>();
    };
    std::vector<double> learn_s, bare_s;
    for (int i = 0; i < warmup; ++i) {
      learner.step();
      bare();
    }
    for (int i = 0; i < steps; ++i) {
      auto a = Clock::now();
      learner.step();
      auto b = Clock::now();
      bare();
      auto c = Clock::now();
      learn_s.push_back(std::chrono::duration<double>(b - a).count());
      bare_s.push_back(std::chrono::duration<double>(c - b).count());
    }
    char buf[1024];
    std::snprintf(buf, sizeof buf,
                  "{\"bundle\": \"%s\", \"batch\": %d, \"steps\": %d, \"threads\": %d, \"lambda_inv\": %g, "
                  "\"lambda_cls\": %g, \"subspace\": \"%s\", \"negatives\": %d, \"setup_s\": %.3f, "
                  "\"learn_step_s_median\": %.5f, \"learn_step_s_mean\": %.5f, \"bare_fwd_bwd_s_median\": %.5f, "
                  "\"bare_fwd_bwd_s_mean\": %.5f, \"overhead_ratio_median\": %.3f, \"peak_rss_mb\": %.1f}",
                  bundle.name().c_str(), batch, steps, threads, lambda_inv, lambda_cls, subspace.c_str(),
                  learner.usable_negatives(), setup_s, median(learn_s), mean(learn_s), median(bare_s), mean(bare_s),
                  median(learn_s) / median(bare_s), peak_rss_mb());
    std::printf("%s\n", buf);
    if (!json_out.empty()) std::ofstream(json_out) << buf << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_learn: %s\n", e.what());
    return 1;
  }
}
