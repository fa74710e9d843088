#include "ctok/token/learn_config.hpp"

#include <algorithm>
#include <cmath>

#include "ctok/core/error.hpp"
#include "ctok/core/json.hpp"
#include "ctok/text/templates.hpp"

namespace ctok::token {

namespace {

// Every field once: key and member. Readers, writers and the key list all use this.
template <typename Config, typename F>
void visit_fields(Config& c, F&& f) {
  f("steps", c.steps);
  f("batch", c.batch);
  f("lr", c.lr);
  f("subspace_lr", c.subspace_lr);
  f("lr_schedule", c.lr_schedule);
  f("warmup_steps", c.warmup_steps);
  f("beta1", c.beta1);
  f("beta2", c.beta2);
  f("adam_eps", c.adam_eps);
  f("weight_decay", c.weight_decay);
  f("grad_clip", c.grad_clip);
  f("seed", c.seed);
  f("lambda_inv", c.lambda_inv);
  f("lambda_cls", c.lambda_cls);
  f("lambda_norm", c.lambda_norm);
  f("cls_image_weight", c.cls_image_weight);
  f("timestep_min", c.timestep_min);
  f("timestep_max", c.timestep_max);
  f("vectors", c.vectors);
  f("init_word", c.init_word);
  f("subspace", c.subspace);
  f("subspace_words", c.subspace_words);
  f("subspace_tolerance", c.subspace_tolerance);
  f("subspace_max_words", c.subspace_max_words);
  f("templates", c.templates);
  f("negative_prompts", c.negative_prompts);
  f("sibling_negatives", c.sibling_negatives);
  f("flip", c.flip);
  f("crop_jitter", c.crop_jitter);
  f("variants", c.variants);
  f("max_negative_images", c.max_negative_images);
  f("checkpoint_every", c.checkpoint_every);
  f("cache_dir", c.cache_dir);
}

// Keys that do not change the learned vectors. `steps` does only through a cosine schedule.
bool bookkeeping_key(const std::string& key) { return key == "checkpoint_every" || key == "cache_dir"; }

template <typename T>
void check_range(bool ok, const std::string& key, const std::string& expected, const T& found) {
  if (!ok) {
    std::string f;
    if constexpr (std::is_same_v<T, std::string>) f = "\"" + found + "\"";
    else f = nlohmann::json(found).dump();
    throw bad_input("learning option out of range").key(key).expected(expected).found(f);
  }
}

}  // namespace

const std::vector<std::string>& learn_config_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    LearnConfig c;
    visit_fields(c, [&](const char* name, auto&) { k.push_back(name); });
    return k;
  }();
  return keys;
}

LearnConfig merge_learn_config(const LearnConfig& base, const nlohmann::json& j, const std::string& origin) {
  json::check_keys(j, learn_config_keys(), origin);
  LearnConfig c = base;
  visit_fields(c, [&](const char* name, auto& field) {
    using T = std::decay_t<decltype(field)>;
    if (auto v = json::find<T>(j, name, origin)) field = *v;
  });
  return c;
}

LearnConfig whole_method_config() {
  LearnConfig c;
  c.lambda_cls = 0.1;
  c.subspace = "auto";
  return c;
}

LearnConfig learn_config_from_json(const nlohmann::json& j, const std::string& origin) {
  return merge_learn_config(LearnConfig{}, j, origin);
}

LearnConfig read_learn_config(const std::string& path, const LearnConfig& base) {
  LearnConfig c = merge_learn_config(base, json::parse_file(path), path);
  try {
    validate(c);
  } catch (Error& e) {
    e.file(path);
    throw;
  }
  return c;
}

nlohmann::json to_json(const LearnConfig& config) {
  nlohmann::json j = nlohmann::json::object();
  visit_fields(config, [&](const char* name, const auto& field) { j[name] = field; });
  return j;
}

nlohmann::json fingerprint_json(const LearnConfig& config) {
  nlohmann::json j = to_json(config);
  for (const auto& k : learn_config_keys())
    if (bookkeeping_key(k)) j.erase(k);
  if (config.lr_schedule == "constant") j.erase("steps");
  return j;
}

void validate(const LearnConfig& c) {
  auto finite = [](double x) { return std::isfinite(x); };
  check_range(c.steps >= 1, "steps", ">= 1", c.steps);
  check_range(c.batch >= 1 && c.batch <= 4096, "batch", "in [1, 4096]", c.batch);
  check_range(finite(c.lr) && c.lr > 0, "lr", "> 0", c.lr);
  check_range(finite(c.subspace_lr) && c.subspace_lr > 0, "subspace_lr", "> 0", c.subspace_lr);
  check_range(c.lr_schedule == "constant" || c.lr_schedule == "cosine", "lr_schedule", "\"constant\" or \"cosine\"",
              c.lr_schedule);
  check_range(c.warmup_steps >= 0, "warmup_steps", ">= 0", c.warmup_steps);
  check_range(finite(c.beta1) && c.beta1 >= 0 && c.beta1 < 1, "beta1", "in [0, 1)", c.beta1);
  check_range(finite(c.beta2) && c.beta2 >= 0 && c.beta2 < 1, "beta2", "in [0, 1)", c.beta2);
  check_range(finite(c.adam_eps) && c.adam_eps > 0, "adam_eps", "> 0", c.adam_eps);
  check_range(finite(c.weight_decay) && c.weight_decay >= 0, "weight_decay", ">= 0", c.weight_decay);
  check_range(finite(c.grad_clip) && c.grad_clip >= 0, "grad_clip", ">= 0", c.grad_clip);
  check_range(finite(c.lambda_inv) && c.lambda_inv >= 0, "lambda_inv", ">= 0", c.lambda_inv);
  check_range(finite(c.lambda_cls) && c.lambda_cls >= 0, "lambda_cls", ">= 0", c.lambda_cls);
  check_range(finite(c.lambda_norm) && c.lambda_norm >= 0, "lambda_norm", ">= 0", c.lambda_norm);
  check_range(c.lambda_inv > 0 || c.lambda_cls > 0, "lambda_inv", "lambda_inv > 0 or lambda_cls > 0 (else nothing is learned)",
              c.lambda_inv);
  check_range(finite(c.cls_image_weight) && c.cls_image_weight >= 0, "cls_image_weight", ">= 0", c.cls_image_weight);
  check_range(c.timestep_min >= 0, "timestep_min", ">= 0", c.timestep_min);
  check_range(c.timestep_max == -1 || c.timestep_max >= c.timestep_min, "timestep_max", "-1 or >= timestep_min",
              c.timestep_max);
  check_range(c.vectors >= 1 && c.vectors <= 16, "vectors", "in [1, 16]", c.vectors);
  check_range(!c.subspace.empty(), "subspace", "\"auto\", \"none\" or a file", c.subspace);
  check_range(c.subspace_words == "all" || c.subspace_words == "known", "subspace_words", "\"all\" or \"known\"",
              c.subspace_words);
  check_range(finite(c.subspace_tolerance) && c.subspace_tolerance > 0 && c.subspace_tolerance < 1,
              "subspace_tolerance", "in (0, 1)", c.subspace_tolerance);
  check_range(c.subspace_max_words == 0 || c.subspace_max_words >= 2, "subspace_max_words",
              "0 (every word) or >= 2", c.subspace_max_words);
  check_range(!c.templates.empty(), "templates", "at least one template", std::string("[]"));
  for (const auto& t : c.templates) {
    std::vector<std::string> names;
    try {
      names = text::template_placeholders(t);
    } catch (Error& e) {
      e.key("templates");
      throw;
    }
    for (const auto& n : names) {
      check_range(n == "token" || n == "parent", "templates", "only the placeholders {token} and {parent}", t);
    }
    check_range(std::count(names.begin(), names.end(), "token") == 1, "templates",
                "every template uses {token} once", t);
  }
  for (const auto& p : c.negative_prompts) check_range(!p.empty(), "negative_prompts", "non-empty prompts", p);
  check_range(finite(c.crop_jitter) && c.crop_jitter >= 0 && c.crop_jitter <= 0.5, "crop_jitter", "in [0, 0.5]",
              c.crop_jitter);
  check_range(c.variants >= 1 && c.variants <= 64, "variants", "in [1, 64]", c.variants);
  check_range(c.max_negative_images >= 0, "max_negative_images", ">= 0", c.max_negative_images);
  check_range(c.checkpoint_every >= 0, "checkpoint_every", ">= 0", c.checkpoint_every);
}

}  // namespace ctok::token
