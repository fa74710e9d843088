// Tokenizer throughput on a realistic prompt mix: CLIP BPE with a cold cache (cleared
// before every prompt) and a warm one, and SentencePiece (the committed test fixture).
//
//   (from the repository root) build/bin/bench_tokenize [--merges FILE] [--spm FILE] [--prompts N] [--passes
//   N]
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ctok/core/error.hpp"
#include "ctok/text/templates.hpp"
#include "ctok/text/tokenizer.hpp"
#include "text/clip_bpe.hpp"

namespace {

// Captions and prompts like the ones ctok feeds the text encoder: templates x attributes,
// some with a custom token, some capitalised, some with punctuation and non-ASCII.
std::vector<std::string> prompt_mix(size_t n, unsigned seed) {
  const std::vector<std::string> colours = {"red",   "blue", "green", "black",  "white",         "pink",
                                            "beige", "navy", "teal",  "purple", "mustard-yellow"};
  const std::vector<std::string> patterns = {"striped", "floral",        "plaid",       "polka-dot", "plain",
                                             "checked", "leopard-print", "houndstooth", "paisley"};
  const std::vector<std::string> items = {"dress",
                                          "skirt",
                                          "t-shirt",
                                          "pullover",
                                          "coat",
                                          "vest",
                                          "shorts",
                                          "trousers",
                                          "sandal",
                                          "sneaker",
                                          "ankle boot",
                                          "short sleeve top",
                                          "long sleeve outwear",
                                          "sling dress",
                                          "cardigan",
                                          "turtleneck sweater"};
  const std::vector<std::string> extras = {"",
                                           ", taken outdoors.",
                                           " on a white background",
                                           " (size 42) — 30% off",
                                           "; worn by a model",
                                           "!",
                                           ", photographed in soft daylight, 4k, highly detailed",
                                           " at a café in Paris",
                                           " — crème brûlée colour"};
  const auto& templates = ctok::text::default_templates();
  std::mt19937 rng(seed);
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string parent = pick(colours) + " ";
    if (rng() % 2) parent += pick(patterns) + " ";
    parent += pick(items);
    const std::string token = rng() % 3 == 0 ? "<my-dress>" : pick(colours);
    std::string p = ctok::text::format_template(pick(templates), {{"token", token}, {"parent", parent}});
    p += pick(extras);
    if (rng() % 5 == 0)
      for (char& c : p) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out.push_back(p);
  }
  return out;
}

struct Row {
  std::string name;
  double prompts_per_s;
  double us_per_prompt;
  double tokens_per_prompt;
};

template <typename F>
Row measure(const std::string& name, const std::vector<std::string>& prompts, int passes, F&& run) {
  double best = 1e300;
  size_t tokens = 0;
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    tokens = run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
  }
  const double n = static_cast<double>(prompts.size());
  return {name, n / best, best / n * 1e6, static_cast<double>(tokens) / n};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tokenizer throughput (prompts/s) on a realistic prompt mix"};
  // Defaults are relative to the repository root (run it from there).
  std::string merges = "../shared/clip/bpe_simple_vocab_16e6.txt.gz";
  std::string spm = "tests/data/text/spm-tiny.model";
  size_t n = 20000;
  int passes = 5;
  app.add_option("--merges", merges, "CLIP BPE merges file (.txt.gz)");
  app.add_option("--spm", spm, "SentencePiece .model file");
  app.add_option("--prompts", n, "prompts per pass");
  app.add_option("--passes", passes, "passes (best one reported)");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto prompts = prompt_mix(n, 1234);
    std::vector<Row> rows;

    const auto t0 = std::chrono::steady_clock::now();
    ctok::text::ClipBpeTokenizer clip(merges);
    const double load_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ctok::text::CustomTokens clip_custom;
    clip_custom.add(clip, "<my-dress>");
    rows.push_back(measure("clip-bpe, cold cache", prompts, passes, [&] {
      size_t tokens = 0;
      for (const auto& p : prompts) {
        clip.clear_cache();  // every word of every prompt goes through BPE
        tokens += static_cast<size_t>(clip.encode(p, 77, clip_custom).eos_index + 1);
      }
      return tokens;
    }));
    rows.push_back(measure("clip-bpe, warm cache", prompts, passes, [&] {
      size_t tokens = 0;
      for (const auto& p : prompts) tokens += static_cast<size_t>(clip.encode(p, 77, clip_custom).eos_index + 1);
      return tokens;
    }));
    rows.push_back(measure("clip-bpe encode_plain, warm", prompts, passes, [&] {
      size_t tokens = 0;
      for (const auto& p : prompts) tokens += clip.encode_plain(p).size();
      return tokens;
    }));

    auto sp = ctok::text::load_sentencepiece(spm);
    ctok::text::CustomTokens sp_custom;
    sp_custom.add(*sp, "<my-dress>");
    rows.push_back(measure("sentencepiece (fixture model)", prompts, passes, [&] {
      size_t tokens = 0;
      for (const auto& p : prompts) tokens += static_cast<size_t>(sp->encode(p, 77, sp_custom).eos_index + 1);
      return tokens;
    }));

    std::printf("prompts per pass: %zu, passes: %d (best reported), CLIP load: %.0f ms\n", n, passes,
                load_ms);
    std::printf("%-32s %14s %12s %14s\n", "tokenizer", "prompts/s", "us/prompt", "tokens/prompt");
    for (const Row& r : rows)
      std::printf("%-32s %14.0f %12.2f %14.1f\n", r.name.c_str(), r.prompts_per_s, r.us_per_prompt,
                  r.tokens_per_prompt);
  } catch (const ctok::Error& e) {
    std::fprintf(stderr, "bench_tokenize: %s\n", e.what());
    return e.exit_code();
  }
  return 0;
}
