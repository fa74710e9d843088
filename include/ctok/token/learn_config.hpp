// The learning configuration of a custom token (docs/learning.md, configs/learn/default.json).
//
//   ctok::token::LearnConfig c = ctok::token::read_learn_config("configs/learn/default.json");
//   c.steps = 100;                                  // command-line flags override the file
//   ctok::token::validate(c);                       // bad_input naming the field
//   nlohmann::json j = ctok::token::to_json(c);     // recorded in the token file
//
// One struct, one place for the defaults: the JSON reader starts from a default-constructed
// LearnConfig and replaces the fields the file names; unknown keys and wrong types are errors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctok::token {

struct LearnConfig {
  // --- optimisation
  int steps = 300;                  // optimisation steps
  int batch = 4;                    // concept images (with augmentation) per step
  double lr = 5e-3;                 // AdamW learning rate of the free vector v
  double subspace_lr = 2e-2;        // AdamW learning rate of the coefficients c (subspace on)
  std::string lr_schedule = "constant";  // "constant" | "cosine" (to 0 at the last step)
  int warmup_steps = 0;             // linear warm-up from 0 over this many steps
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;  // AdamW moments
  double weight_decay = 0.0;        // AdamW decoupled weight decay
  double grad_clip = 0.0;           // clip the gradient norm to this (0: off)
  uint64_t seed = 0;                // every random draw of a step derives from (seed, step)

  // --- losses: L = lambda_inv L_inv + lambda_cls L_cls + lambda_norm (|v| - r)^2
  double lambda_inv = 1.0;          // inversion (denoising) loss; needs a bundle with a UNet
  // Classification loss (text side + image side). Off by default: on the default bundle it
  // costs hidden-category accuracy at every weight tried, on the tuning identities and on
  // validation (docs/results.md "Tuning"); configs/learn/retrieval.json turns it on (0.1),
  // which helps identity retrieval.
  double lambda_cls = 0.0;
  double lambda_norm = 0.0;         // pull |v| towards r, the mean norm of the vocabulary
  double cls_image_weight = 1.0;    // weight of the image-side term inside L_cls
  int timestep_min = 0;             // inversion timesteps drawn uniformly from
  int timestep_max = -1;            //   [timestep_min, timestep_max]; -1: the last one

  // --- the token
  int vectors = 1;                  // vectors per token (rows of the token file tensor)
  std::string init_word;            // start from this word's embedding; empty: the parent
  // "auto" (configs/attributes/<parent>.json) | "none" | a file. Default none: the free vector
  // beat the attribute subspace on both tuning tasks (docs/results.md "Tuning").
  std::string subspace = "none";
  std::string subspace_words = "known";  // "all" | "known": drop words the tokenizer only
                                         //   spells letter by letter (it has no piece for them)
  double subspace_tolerance = 1e-4; // drop basis directions with singular value < tol * max
  int subspace_max_words = 0;       // > 0: at most this many attribute words span the subspace,
                                    //   the parent first, then round-robin over colours,
                                    //   patterns, materials, shapes, siblings (0: every word)

  // --- prompts
  // Templates with {token} and {parent}; one is drawn per image and step.
  std::vector<std::string> templates = {
      "a photo of a {token} {parent}",      "a rendering of a {token} {parent}",
      "a cropped photo of the {token} {parent}", "a photo of my {token} {parent}",
      "a close-up photo of a {token} {parent}",  "a bright photo of a {token} {parent}",
      "a dark photo of a {token} {parent}",      "a good photo of a {token} {parent}"};
  // Negative class prompts of the text-side classification loss. Empty: the parent alone
  // and each sibling category of the attribute file, in the same template as the token.
  std::vector<std::string> negative_prompts;
  bool sibling_negatives = true;    // add the attribute file's siblings to the default negatives

  // --- images
  bool flip = true;                 // augmentation: horizontal flip (odd variants)
  double crop_jitter = 0.08;        // augmentation: each box side moves by up to this fraction
  int variants = 8;                 // augmented versions per image (0 is the plain image)
  int max_negative_images = 64;     // negative images used by the image-side loss (0: none)

  // --- bookkeeping (not part of the checkpoint fingerprint)
  int checkpoint_every = 50;        // write a checkpoint every N steps (0: only at the end / Ctrl-C)
  std::string cache_dir;            // on-disk cache of latents and image features ("" : memory only)
};

// Every key of the JSON form, in order (the CLI help and docs list them).
const std::vector<std::string>& learn_config_keys();

LearnConfig learn_config_from_json(const nlohmann::json& json, const std::string& origin);
// `base` with the keys present in `json` replaced.
LearnConfig merge_learn_config(const LearnConfig& base, const nlohmann::json& json, const std::string& origin);
// The whole method of docs/method.md: the defaults with the classification loss (0.1) and
// the attribute subspace ("auto") on. The base of ctok-eval's method table
// (eval::method_base_config) and of the learner's own tests.
LearnConfig whole_method_config();
// `base` (default: the defaults) with the file's keys replaced, validated.
LearnConfig read_learn_config(const std::string& path, const LearnConfig& base = LearnConfig{});
nlohmann::json to_json(const LearnConfig& config);
// bad_input naming the first field out of range.
void validate(const LearnConfig& config);
// The fields that change the learned vectors (what a checkpoint must agree with).
nlohmann::json fingerprint_json(const LearnConfig& config);

}  // namespace ctok::token
