// ctok-info: show and verify a bundle or a token file; tokenise text.
//
//   ctok-info bundle [DIR] [--fast]        manifest summary, sha256 of every file, then the self-test:
//                                          load every model (dry forward passes) and check parity
//                                          with reference.safetensors (exit 2 naming model and key);
//                                          --fast: manifest + sha256 only
//   ctok-info token FILE                   token string, shape, metadata, vector norms
//   ctok-info tokenize [--bundle DIR | --tokenizer clip-bpe:FILE] [--json] [--token STR...] TEXT...
//   echo "a photo" | ctok-info tokenize    one JSON line per input line
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/tool.hpp"
#include "ctok/core/error.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/manifest.hpp"
#include "ctok/model/reference.hpp"
#include "ctok/text/tokenizer.hpp"
#include "ctok/token/token_file.hpp"

using ctok::model::FileCheck;
using ctok::model::ReferenceCheck;
using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string join_numbers(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += (s.empty() ? "" : ", ") + dump(json(x));
  return "[" + s + "]";
}

// The manifest key of the model a reference key is computed by: "text.hidden" -> "text.file".
std::string model_key_of(const std::string& reference_key) {
  if (reference_key.rfind("text.", 0) == 0) return "text.file";
  if (reference_key.rfind("image.", 0) == 0) return "image.file";
  if (reference_key.rfind("unet.", 0) == 0) return "diffusion.unet";
  if (reference_key == "vae.latents") return "diffusion.vae_encoder";
  if (reference_key.rfind("vae.", 0) == 0) return "diffusion.vae_decoder";
  return reference_key;
}

// The self-test (docs/bundle.md): load every model with its dry forward passes (shape
// problems are bad_input naming the file and manifest key), then parity with the
// exporter's reference outputs.
void self_test(const ctok::model::Manifest& m) {
  ctok::model::BundleOptions o;
  o.dir = m.dir;
  o.verify_sha256 = false;  // just checked
  o.load_image = true;
  o.load_diffusion = m.diffusion.has_value();
  o.check_shapes = true;
  ctok::model::Bundle b = ctok::model::Bundle::load(o);
  std::printf("load:      OK (every model loaded, dry forward passes match the manifest)\n");
  const std::string ref = ctok::model::reference_path(b);
  if (ref.empty()) {
    std::printf("parity:    skipped (no reference.safetensors)\n");
    return;
  }
  std::printf("parity with %s:\n", ref.c_str());
  const ReferenceCheck* first_bad = nullptr;
  const std::vector<ReferenceCheck> checks = ctok::model::check_reference(b);
  for (const ReferenceCheck& c : checks) {
    std::printf("  %-4s %-15s max |err| %.3g (ratio %.3g)  %s\n", c.passed ? "OK" : "FAIL", c.key.c_str(),
                c.max_abs_error, c.worst_ratio, c.note.c_str());
    if (!c.passed && !first_bad) first_bad = &c;
  }
  std::fflush(stdout);
  if (first_bad) {
    const std::string model_key = model_key_of(first_bad->key);
    throw ctok::bad_input("reference parity fails for " + first_bad->key + " (max |err| " +
                          std::to_string(first_bad->max_abs_error) + "; model of " + model_key + ")")
        .file(ref)
        .key(model_key);
  }
}

int show_bundle(const std::string& dir, bool fast) {
  const ctok::model::Manifest m = ctok::model::load_manifest(dir);
  const auto& t = m.text;
  const auto& i = m.image;
  std::printf("bundle:    %s\n", m.dir.c_str());
  std::printf("name:      %s (format %s, version %d)\n", m.name.c_str(), m.format.c_str(), m.version);
  std::printf("tokenizer: %s %s\n", ctok::model::tokenizer_type_name(m.tokenizer.type).c_str(), m.tokenizer.file.c_str());
  std::printf("text:      %s  context %lld, width %lld, features %lld, vocab %lld, bos %lld eos %lld pad %lld\n",
              t.file.c_str(), (long long)t.context_length, (long long)t.width, (long long)t.feature_dim,
              (long long)t.vocab_size, (long long)t.bos_id, (long long)t.eos_id, (long long)t.pad_id);
  std::printf("image:     %s  %lld px, %s resize, %s crop, mean %s std %s, features %lld\n", i.file.c_str(),
              (long long)i.size, i.resize.c_str(), i.crop.c_str(), join_numbers({i.mean.begin(), i.mean.end()}).c_str(),
              join_numbers({i.std.begin(), i.std.end()}).c_str(), (long long)i.feature_dim);
  std::printf("logit_scale: %s\n", dump(json(m.logit_scale)).c_str());
  if (m.diffusion) {
    const auto& d = *m.diffusion;
    const std::string vae = d.has_vae() ? "VAE " + d.vae_encoder + " / " + d.vae_decoder : "pixel space";
    std::printf("diffusion: %s  %s, %lld px, sample %lldx%lldx%lld, latent_scale %s, %lld timesteps, %s [%s, %s], %s\n",
                d.unet.c_str(), vae.c_str(), (long long)d.image_size, (long long)d.latent_channels,
                (long long)d.latent_size, (long long)d.latent_size, dump(json(d.latent_scale)).c_str(),
                (long long)d.num_train_timesteps, ctok::model::enum_name(d.beta_schedule).c_str(), dump(json(d.beta_start)).c_str(),
                dump(json(d.beta_end)).c_str(), ctok::model::enum_name(d.prediction).c_str());
  } else {
    std::printf("diffusion: none (retrieval only)\n");
  }
  if (!m.reference.empty()) std::printf("reference: %s\n", m.reference.c_str());
  if (m.card.contains("source") && m.card["source"].is_string()) {
    std::printf("source:    %s\n", m.card["source"].get<std::string>().c_str());
  }
  std::printf("files (sha256):\n");
  int bad = 0;
  for (const FileCheck& c : ctok::model::verify_sha256("", m)) {
    const std::string status = ctok::model::file_check_status_name(c.status);
    std::printf("  %-9s %s  %s (%s)\n", status.c_str(), c.actual.empty() ? std::string(64, '-').c_str() : c.actual.c_str(),
                c.file.c_str(), c.key.c_str());
    if (c.status == FileCheck::kMismatch) {
      std::printf("            expected %s\n", c.expected.c_str());
      ++bad;
    } else if (c.status == FileCheck::kMissing) {
      ++bad;
    }
  }
  std::fflush(stdout);
  if (bad > 0) {
    throw ctok::bad_input(std::to_string(bad) + " file(s) do not match the sha256 listed in bundle.json").file(m.path);
  }
  if (!fast) self_test(m);
  return 0;
}

int show_token(const std::string& path, const std::string& bundle_dir) {
  const ctok::token::TokenFile t = ctok::token::read_token_file(path);
  std::printf("file:     %s\n", path.c_str());
  std::printf("format:   %s\n", t.source_format.c_str());
  std::printf("token:    %s\n", t.token.c_str());
  std::printf("shape:    [%lld, %lld] (n_vectors, width)\n", (long long)t.n_vectors, (long long)t.width);
  if (!t.parent.empty()) std::printf("parent:   %s\n", t.parent.c_str());
  if (!t.bundle.empty()) std::printf("bundle:   %s\n", t.bundle.c_str());
  if (!t.bundle_sha256.empty()) std::printf("bundle_sha256: %s\n", t.bundle_sha256.c_str());
  if (t.source_format == ctok::token::kTokenFormat) {
    std::printf("subspace_words: %s\n", dump(json(t.subspace_words)).c_str());
    std::printf("coefficients:   %s\n", join_numbers(t.coefficients).c_str());
    std::printf("config:   %s\n", dump(t.config).c_str());
    std::printf("metrics:  %s\n", dump(t.metrics).c_str());
  }
  for (const auto& [k, v] : t.extra) std::printf("meta %s: %s\n", k.c_str(), v.c_str());
  const std::vector<double> norms = ctok::token::vector_norms(t);
  for (std::size_t i = 0; i < norms.size(); ++i) std::printf("norm[%zu]:  %.6g\n", i, norms[i]);
  if (!bundle_dir.empty()) {
    const auto m = ctok::model::load_manifest(bundle_dir);
    ctok::token::check_width(t, m.text.width);
    std::printf("width matches bundle %s (text.width %lld)\n", m.name.c_str(), (long long)m.text.width);
  }
  return 0;
}

struct TokenizeOptions {
  std::string tokenizer;            // "clip-bpe:FILE" | "sentencepiece:FILE"; empty: the bundle's
  bool json_output = false;         // one JSON object per text
  std::vector<std::string> tokens;  // custom tokens to register
  int64_t context = 0;              // 0: bundle text.context_length, else 77
  std::vector<std::string> text;    // joined with spaces; empty: read lines from stdin
};

json encoding_json(const std::string& text, const ctok::text::Encoding& e, int64_t context) {
  json custom = json::array();
  for (const auto& [pos, tok] : e.custom) custom.push_back({pos, tok});
  return {{"text", text},
          {"ids", std::vector<int64_t>(e.ids.begin(), e.ids.begin() + e.eos_index + 1)},
          {"pieces", e.pieces},
          {"eos_index", e.eos_index},
          {"truncated", e.truncated},
          {"context_length", context},
          {"custom", custom}};
}

int tokenize(const TokenizeOptions& o, const ctok::tool::CommonOptions& common, bool bundle_given) {
  if (bundle_given && !o.tokenizer.empty()) throw ctok::bad_input("give --bundle or --tokenizer, not both");
  std::unique_ptr<ctok::text::Tokenizer> tok;
  int64_t context = o.context;
  if (!o.tokenizer.empty()) {
    tok = ctok::text::load_tokenizer(o.tokenizer);
    if (context == 0) context = 77;
  } else {
    const auto m = ctok::model::load_manifest(common.bundle_dir());
    tok = ctok::model::load_tokenizer(m);
    if (context == 0) context = m.text.context_length;
  }
  ctok::text::CustomTokens custom;
  for (const auto& t : o.tokens) custom.add(*tok, t);

  if (o.text.empty()) {  // batch mode: one JSON line per input line
    if (::isatty(STDIN_FILENO)) spdlog::info("reading texts from stdin, one per line (Ctrl-D ends)");
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::printf("%s\n", dump(encoding_json(line, tok->encode(line, context, custom), context)).c_str());
    }
    return 0;
  }
  std::string text;
  for (const auto& w : o.text) text += (text.empty() ? "" : " ") + w;
  const ctok::text::Encoding e = tok->encode(text, context, custom);
  if (o.json_output) {
    std::printf("%s\n", dump(encoding_json(text, e, context)).c_str());
    return 0;
  }
  std::string ids, pieces;
  for (int64_t i = 0; i <= e.eos_index; ++i) ids += (i ? " " : "") + std::to_string(e.ids[static_cast<size_t>(i)]);
  for (std::size_t i = 0; i < e.pieces.size(); ++i) pieces += (i ? " " : "") + e.pieces[i];
  std::printf("text:      %s\nids:       %s\npieces:    %s\n", text.c_str(), ids.c_str(), pieces.c_str());
  std::printf("eos_index: %lld (context %lld, padded with %lld)\n", (long long)e.eos_index, (long long)context,
              (long long)tok->special().pad);
  if (e.truncated > 0) std::printf("truncated: %lld tokens dropped\n", (long long)e.truncated);
  for (const auto& [pos, t] : e.custom) std::printf("custom:    %s at %lld\n", t.c_str(), (long long)pos);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ctok::tool::run_tool(argc, argv, "Show and verify bundles and token files; tokenise text.", [&](CLI::App& app) {
    const unsigned flags = ctok::tool::kBundle | ctok::tool::kVerbosity;
    ctok::tool::CommonOptions common;
    ctok::tool::add_common_options(app, common, flags);
    app.require_subcommand(1);
    app.fallthrough();  // common options may follow the subcommand

    std::string bundle_dir;
    bool fast = false;
    CLI::App* bundle = app.add_subcommand(
        "bundle", "manifest summary, sha256 of every file, then load every model and check reference.safetensors "
                  "(exit 2 naming the model and manifest key)");
    bundle->add_option("DIR", bundle_dir, "bundle directory (default: --bundle, else the shipped default)");
    bundle->add_flag("--fast", fast, "manifest and sha256 only: no model loading, no reference parity");

    std::string token_path;
    CLI::App* token = app.add_subcommand("token", "show a token file; with --bundle, check its width");
    token->add_option("FILE", token_path, "token .safetensors (ctok-token/1 or diffusers learned_embeds)")->required();

    TokenizeOptions tk;
    CLI::App* tokenize_cmd = app.add_subcommand("tokenize", "print ids and pieces (no TEXT: JSON lines from stdin)");
    tokenize_cmd->add_option("--tokenizer", tk.tokenizer, "clip-bpe:FILE or sentencepiece:FILE instead of a bundle");
    tokenize_cmd->add_flag("--json", tk.json_output, "print one JSON object");
    tokenize_cmd->add_option("--token", tk.tokens, "register a custom token string (repeatable)")
        ->allow_extra_args(false);  // one string per --token; the rest is TEXT
    tokenize_cmd->add_option("--context", tk.context, "context length (default: bundle text.context_length, else 77)")
        ->check(CLI::PositiveNumber);
    tokenize_cmd->add_option("TEXT", tk.text, "text to tokenise (words are joined with spaces)");

    ctok::tool::parse(app, argc, argv, common, flags);
    const bool bundle_given = app.count("--bundle") > 0;
    if (*bundle) return show_bundle(bundle_dir.empty() ? common.bundle_dir() : bundle_dir, fast);
    if (*token) return show_token(token_path, bundle_given ? common.bundle_dir() : std::string());
    return tokenize(tk, common, bundle_given);
  });
}
