// Speed of the model runtime on a bundle, each beside the bare TorchScript forward of the
// same work measured in the same run (overhead ratio = ours / bare; goal <= 1.1):
//   image encoding images/s at batch 1, 32, 256; text encodings/s (batch 1 and 32, from
//   prompt strings: tokenise + embed + forward); seconds per rendered image (DDIM, 50
//   steps, guidance 5, VAE decode). Optionally for several precisions and with the
//   frozen / optimize_for_inference modules (--optimize plain,default,all: nothing frozen,
//   the image encoder frozen as Bundle::load does by default, every module frozen).
//
//   build/bin/bench_model [--bundle models/default] [--threads 2] [--reps 5]
//                         [--precision fp32,bf16] [--optimize plain,default,all] [--render-n 4] [--json out.json]
//
// Ours and bare run interleaved (ours, bare, ours, ...) so machine load hits them alike;
// the best of --reps gives the ratio (medians printed beside it). bench/bench_model.py times the same loops in Python.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "ctok/core/log.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/model/generate.hpp"

using namespace ctok;
using namespace ctok::model;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

double seconds(const std::function<void()>& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Timing {
  double ours_min, bare_min, ours_median, bare_median;
};

// Runs 2 warm-ups (TorchScript's profiling executor specialises on the first calls) and
// `reps` timed calls of each, interleaved. The machine is shared, so the ratio uses the
// minimum (the least disturbed run); medians are printed beside it.
Timing race(int reps, const std::function<void()>& ours, const std::function<void()>& bare) {
  for (int i = 0; i < 2; ++i) {
    ours();
    bare();
  }
  std::vector<double> a, b;
  for (int i = 0; i < reps; ++i) {
    a.push_back(seconds(ours));
    b.push_back(seconds(bare));
  }
  return {*std::min_element(a.begin(), a.end()), *std::min_element(b.begin(), b.end()), median(a), median(b)};
}

const std::vector<std::string> kPrompts = {
    "a photo of a red striped dress", "a photo of a blue shoe", "a photo of a black bag with dots",
    "a close-up photo of a green top", "a photo of a yellow checked dress", "a photo of a grey trousers",
    "a picture of a purple top with stripes", "a photo of a pink shoe"};

std::vector<std::string> prompts(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(kPrompts[static_cast<size_t>(i) % kPrompts.size()]);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bundle_dir, json_out, precisions = "fp32", optimize = "default";
  int threads = 0, reps = 5, render_n = 4, steps = 50;
  bool skip_render = false;
  CLI::App app{"ctok model runtime benchmark"};
  app.add_option("--bundle", bundle_dir, "bundle directory (default: models/default)");
  app.add_option("--threads", threads, "libtorch threads (0 = all cores)");
  app.add_option("--reps", reps, "timed repetitions (median reported)");
  app.add_option("--precision", precisions, "comma-separated: fp32,bf16,fp16");
  app.add_option("--optimize", optimize, "comma-separated: plain (nothing frozen), default (image encoder), all");
  app.add_option("--render-n", render_n, "images per render");
  app.add_option("--steps", steps, "DDIM steps per render");
  app.add_flag("--skip-render", skip_render, "image and text only");
  app.add_option("--json", json_out, "also write the results as JSON");
  CLI11_PARSE(app, argc, argv);
  init_logging(-1);
  const int used_threads = configure_threads(threads);

  auto split = [](const std::string& text) {
    std::vector<std::string> out;
    for (size_t s = 0; s <= text.size();) {
      size_t e = text.find(',', s);
      if (e == std::string::npos) e = text.size();
      out.push_back(text.substr(s, e - s));
      s = e + 1;
    }
    return out;
  };
  std::vector<Precision> precs;
  for (const auto& p : split(precisions)) precs.push_back(parse_precision(p));
  std::vector<std::string> opts = split(optimize);
  for (const auto& o : opts) {
    if (o != "plain" && o != "default" && o != "all") {
      std::fprintf(stderr, "--optimize: expected plain, default or all, found %s\n", o.c_str());
      return 2;
    }
  }

  nlohmann::json results = nlohmann::json::array();
  std::printf("threads %d, reps %d\n", used_threads, reps);
  std::printf("%-12s %-38s %16s %16s %7s   %s\n", "config", "measure", "ctok (best)", "bare (best)", "ratio",
              "medians ctok / bare");
  // `work` units per call (images, prompts); rate = work / time, or seconds per unit.
  auto report = [&](const std::string& config, const std::string& what, const std::string& unit, double work,
                    const Timing& t, bool rate) {
    auto value = [&](double s) { return rate ? work / s : s / work; };
    const double ratio = t.ours_min / t.bare_min;  // our time / bare time
    std::printf("%-12s %-38s %11.4g %-4s %11.4g %-4s %7.3f   %.4g / %.4g\n", config.c_str(), what.c_str(),
                value(t.ours_min), unit.c_str(), value(t.bare_min), unit.c_str(), ratio, value(t.ours_median),
                value(t.bare_median));
    std::fflush(stdout);
    results.push_back({{"config", config}, {"measure", what}, {"unit", unit}, {"ctok", value(t.ours_min)},
                       {"bare", value(t.bare_min)}, {"ctok_median", value(t.ours_median)},
                       {"bare_median", value(t.bare_median)}, {"overhead_ratio", ratio}});
  };

  for (Precision p : precs) {
    for (const std::string& opt : opts) {
      BundleOptions bo;
      bo.dir = bundle_dir.empty() ? default_bundle_dir() : bundle_dir;
      bo.precision = p;
      bo.optimize_image = opt != "plain";
      bo.optimize = opt == "all";
      bo.load_diffusion = !skip_render;
      const std::string config = precision_name(p) + "/" + opt;
      std::unique_ptr<Bundle> bundle;
      try {
        bundle = std::make_unique<Bundle>(Bundle::load(bo));
      } catch (const std::exception& e) {
        std::printf("%-14s unavailable: %s\n", config.c_str(), e.what());
        results.push_back({{"config", config}, {"error", e.what()}});
        continue;
      }
      const Bundle& b = *bundle;
      ClipModel clip(b);
      const auto dev = b.device();
      const auto dt = b.dtype();
      const int64_t S = b.image_size();

      // --- image encoding ----------------------------------------------------------
      for (int64_t B : {1, 32, 256}) {
        torch::Tensor px = torch::randn({B, 3, S, S});
        torch::Tensor px_dev = px.to(dev, dt);
        const int r = B >= 256 ? std::max(3, reps / 2) : reps;
        auto t = race(
            r, [&] { clip.encode_images(px, B); },
            [&] {
              c10::InferenceMode g;
              b.image_encoder().forward({px_dev}).toTensor();
            });
        report(config, "image enc batch " + std::to_string(B), "im/s", B, t, true);
      }

      // --- text encoding -------------------------------------------------------------
      for (int B : {1, 32}) {
        auto ps = prompts(B);
        PromptBatch batch = clip.tokenize(ps, std::map<std::string, int64_t>{});
        torch::Tensor embeds;
        {
          c10::InferenceMode g;
          embeds = clip.embed(batch, {});
        }
        torch::Tensor eos = batch.eos_index.to(dev);
        auto t = race(
            reps * 4, [&] { clip.encode_text(ps); },
            [&] {
              c10::InferenceMode g;
              b.text_encoder().forward({embeds, eos});
            });
        report(config, "text enc batch " + std::to_string(B) + " (from strings)", "tx/s", B, t, true);
      }

      // --- rendering -----------------------------------------------------------------
      if (!skip_render) {
        DiffusionModel diff(b);
        const std::vector<std::string> prompts{"a photo of a red striped dress"};
        GenerateOptions ro;
        ro.n = render_n;
        ro.batch = render_n;
        ro.steps = steps;
        ro.guidance = 5.0;
        const auto shape = diff.latent_shape();
        const auto ts = diff.schedule().sampling_timesteps(steps);
        const int64_t n = render_n;
        auto bare_render = [&] {
          c10::InferenceMode g;
          auto& te = b.text_encoder();
          auto pb = clip.tokenize({prompts[0], ""}, std::map<std::string, int64_t>{});
          auto emb = clip.embed(pb, {});
          auto h = te.forward({emb, pb.eos_index.to(dev)}).toTuple()->elements()[0].toTensor();
          auto ctx = torch::cat({h.slice(0, 1, 2).expand({n, -1, -1}), h.slice(0, 0, 1).expand({n, -1, -1})});
          auto x = torch::randn({n, shape[0], shape[1], shape[2]}).to(dev);
          auto& unet = b.unet();
          for (size_t i = 0; i < ts.size(); ++i) {
            const double a = diff.schedule().alpha_cumprod(ts[i]);
            const double ap = i + 1 < ts.size() ? diff.schedule().alpha_cumprod(ts[i + 1]) : 1.0;
            auto out = unet.forward({torch::cat({x, x}).to(dt), torch::full({2 * n}, ts[i], torch::kLong).to(dev), ctx})
                           .toTensor()
                           .to(torch::kFloat32);
            auto parts = out.chunk(2);
            auto eps = parts[0] + 5.0 * (parts[1] - parts[0]);
            auto x0 = (x - std::sqrt(1 - a) * eps) / std::sqrt(a);
            x = std::sqrt(ap) * x0 + std::sqrt(1 - ap) * eps;
          }
          if (b.has_vae()) b.vae_decoder().forward({x.to(dt)});
        };
        auto t = race(std::max(2, reps / 2), [&] { generate(b, prompts, {}, ro); }, bare_render);
        report(config, "render (" + std::to_string(steps) + " DDIM, cfg, n=" + std::to_string(n) + ")", "s/im",
               static_cast<double>(n), t, false);
      }
    }
  }
  if (!json_out.empty()) {
    nlohmann::json j{{"threads", used_threads}, {"reps", reps}, {"results", results}};
    std::ofstream(json_out) << j.dump(2) << "\n";
  }
  return 0;
}
