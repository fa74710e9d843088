// The token learner (docs/method.md §1, docs/learning.md): inversion loss, classification
// loss (text side against negative prompts, image side against negative images), the
// attribute subspace or a free vector, AdamW, checkpoints that resume bit-identically.
//
//   ctok::token::LearnRequest r;
//   r.token = "<my-dress>"; r.parent = "dress"; r.config = read_learn_config(path);
//   for (auto& f : ctok::data::list_images("photos/")) r.images.push_back({f});
//   ctok::token::Learner learner(bundle, r);         // validates, decodes, caches latents/features
//   ctok::token::RunOptions o; o.checkpoint_path = "my-dress.ckpt";
//   ctok::token::LearnResult res = ctok::token::learn(learner, o);
//   ctok::token::write_token_file("my-dress.safetensors", res.token);
//
// Reproducibility: every random draw of step s (images, augmentation variants, templates,
// timesteps, noise) comes from generators seeded with (seed, s), so a run resumed from a
// checkpoint at step s continues exactly as the uninterrupted run (same machine, same
// thread count).
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/attributes.hpp"
#include "ctok/token/learn_config.hpp"
#include "ctok/token/subspace.hpp"
#include "ctok/token/token_file.hpp"

namespace ctok::token {

// "ctok-learn-checkpoint/1"
inline constexpr const char* kCheckpointFormat = "ctok-learn-checkpoint/1";

struct ImageSource {
  std::string path;
  std::optional<image::Box> box;  // crop (a DeepFashion2 item), else the whole image
  // A negative's class word ("sandal"; the parent word for another item of the parent).
  // The text side of the classification loss targets the negative class prompt of that
  // word; "" or a word without a prompt: "not the token", -log(1 - p(token prompt | x)).
  std::string label;
};

struct LearnRequest {
  std::string token;                   // the token string, e.g. "<my-dress>"
  std::string parent;                  // the parent concept text, e.g. "dress"
  LearnConfig config;
  std::vector<ImageSource> images;     // the concept's images (at least one usable)
  std::vector<ImageSource> negatives;  // other items of the parent (classification loss, both sides)
  // Where the negatives came from ({"kind": "folder" | "df2" | "generated" | "none", ...}),
  // recorded in the token file's config.
  nlohmann::json negatives_source = nlohmann::json::object();
  std::string attributes_dir;          // where subspace "auto" looks; "" : default_attributes_dir()
  nlohmann::json source = nlohmann::json::object();  // recorded in the token file (e.g. the DF2 concept)
};

// The end-of-run hub check (method.md §1): on how many images the token prompt (first
// template) scores above every negative class prompt. A token that wins on most negatives
// is a hub: its prompt is near every image of the parent, not the concept's alone.
struct HubCheck {
  int positives = 0, negatives = 0;             // images checked
  double positives_won = 0, negatives_won = 0;  // shares in [0, 1] (0 when none checked)
  bool hub() const { return negatives > 0 && negatives_won > 0.5; }
};

struct StepLosses {
  double total = 0, inv = 0, cls_text = 0, cls_image = 0, norm = 0;
  double vector_norm = 0;  // mean |v| over the token's vectors after the step
  double lr = 0;           // learning rate used by the step
};

class Learner {
 public:
  // Validates everything (bad_input): config ranges, the token string (not a known single
  // piece), the inversion loss needs a bundle loaded with its UNet, at least one usable
  // concept image (unreadable files are named), the attribute file under subspace "auto".
  // Then decodes the images and computes latents and image features once.
  Learner(const model::Bundle& bundle, LearnRequest request);
  ~Learner();
  Learner(const Learner&) = delete;
  Learner& operator=(const Learner&) = delete;

  const LearnRequest& request() const;
  const LearnConfig& config() const;
  int steps_done() const;
  int usable_images() const;
  int usable_negatives() const;
  const Subspace* subspace() const;  // nullptr for a free vector
  const AttributeSet* attributes() const;  // nullptr when no attribute file is used
  double vocab_norm() const;          // r
  const std::vector<std::string>& token_prompts() const;     // one per template
  const std::vector<std::string>& negative_prompts() const;  // of the first template (log)
  // The classification loss's text side runs only with negative images (a text side over
  // positives alone makes hub tokens); false also when lambda_cls is 0.
  bool text_side_on() const;
  // Negative images whose label names a negative class prompt (the rest: "not the token").
  int labelled_negatives() const;
  // The hub check at the current vectors (plain images, first template).
  HubCheck hub_check() const;

  const std::vector<StepLosses>& recent_losses() const;  // the last 10 steps (kept across a resume)
  // Every step's losses so far as block means, at most `max_points` points: {"every": k,
  // "step": [...], "total": [...], "inversion": [...], "classification_text": [...],
  // "classification_image": [...]} (kept across a resume; the token file's metrics.loss_curve).
  nlohmann::json loss_curve(int max_points = 100) const;
  torch::Tensor vectors() const;    // current v [n, width] float32 CPU
  torch::Tensor parameter() const;  // current c [n, k] (subspace) or v, float32 CPU

  // One AdamW step (step index steps_done()). Throws runtime_failure ("... is NaN/Inf at
  // step N ...") when the loss, gradient or updated parameter is not finite; the state
  // then stays at the last good step.
  StepLosses step();
  // The losses of step `s` at the current parameter, with the backward pass, no update
  // (benchmarks, tests).
  StepLosses forward_backward(int s);

  // Checkpoint = parameter, AdamW moments, step, fingerprints (bundle, config, data).
  void save_checkpoint(const std::string& path, double seconds) const;
  // bad_input naming what differs when the checkpoint belongs to another bundle, config,
  // token, parent or image set. Returns the seconds recorded in it.
  double load_checkpoint(const std::string& path);

  // The token file for the current vectors (metrics given by the caller).
  TokenFile token_file(const nlohmann::json& metrics) const;

  struct Impl;
  Impl& internals() { return *impl_; }  // the token module's cohort learner (src/token/learner_impl.hpp)

 private:
  std::unique_ptr<Impl> impl_;
};

struct RunOptions {
  std::string checkpoint_path;  // "" : no checkpoints
  std::string resume_path;      // "" : start fresh
  bool keep_checkpoint = false; // true: also write a checkpoint of the final state (to extend the run later)
  std::string log_path;         // per-step CSV ("" : none)
  bool progress = true;         // progress bar / periodic lines
  const std::atomic<bool>* stop = nullptr;                    // set by Ctrl-C; checked after each step
  std::function<void(int step, const StepLosses&)> on_step;   // after each step (1-based count)
};

enum class LearnStatus { kDone, kInterrupted };

struct LearnResult {
  LearnStatus status = LearnStatus::kDone;
  int steps_done = 0;
  double seconds = 0;
  StepLosses last;
  nlohmann::json metrics;       // what the token file records
  TokenFile token;              // filled when done
  std::string checkpoint_path;  // written on interruption
};

// Runs the remaining steps with checkpoints, log and progress. A NaN/Inf loss throws a
// runtime_failure that names the step and the last good checkpoint (left untouched). The
// checkpoint file is left in place: the caller removes it once the token file is written
// (so a crash in between still has something to resume from).
LearnResult learn(Learner& learner, const RunOptions& options);

}  // namespace ctok::token
