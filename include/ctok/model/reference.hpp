// Self-test of a loaded bundle against its reference.safetensors (the exporter's inputs
// and outputs): proves the C++ runtime computes the same numbers as the Python side.
//
//   auto checks = ctok::model::check_reference(bundle);
//   for (auto& c : checks) std::cout << c.key << " " << c.max_abs_error << (c.passed ? " ok" : " FAIL");
//
// A value passes when |ours - reference| <= atol + rtol * |reference| everywhere.
// Default tolerances per precision (docs/bundle.md): fp32 1e-4/1e-4; fp16 and bf16 are
// compared loosely (3e-2/3e-2 and 1e-1/1e-1): they prove the wiring, not the numerics.
#pragma once

#include <string>
#include <vector>

#include "ctok/model/bundle.hpp"

namespace ctok::model {

struct Tolerance {
  double atol = 1e-4;  // absolute
  double rtol = 1e-4;  // relative to |reference|
};
Tolerance default_tolerance(Precision precision);

struct ReferenceCheck {
  std::string key;             // reference key checked, e.g. "text.hidden"
  bool passed = false;
  double max_abs_error = 0.0;  // max |ours - reference|
  double worst_ratio = 0.0;    // max |ours - ref| / (atol + rtol |ref|); passes when <= 1
  std::string note;            // what was computed from what
};

// The reference file of a bundle: bundle.json "reference", else reference.safetensors.
// Empty when the bundle has none.
std::string reference_path(const Bundle& bundle);

// Runs every check the loaded parts and the reference file allow: text.input_ids
// (tokenizer, exact), text.embeds, text.hidden and text.features (from the reference
// embeddings and end to end from the prompts), image.features, unet.out, vae.latents,
// vae.decoded. bad_input if the file is missing or malformed.
std::vector<ReferenceCheck> check_reference(const Bundle& bundle, const Tolerance& tolerance, const std::string& path = "");
std::vector<ReferenceCheck> check_reference(const Bundle& bundle);

}  // namespace ctok::model
