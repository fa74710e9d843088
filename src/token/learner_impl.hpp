// Private to the token module: the learner's state and the phases of one step (plan, the
// shared text-encoder and UNet passes, finish, apply), shared by the solo learner
// (learner.cpp) and the cohort learner (cohort.cpp), which batches the passes of many tokens.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/token/attributes.hpp"
#include "ctok/token/learner.hpp"
#include "ctok/token/subspace.hpp"

namespace ctok::token {

struct Learner::Impl {
  const model::Bundle& bundle;
  LearnRequest req;
  LearnConfig cfg;
  mutable model::ClipModel clip;  // encode() is not const; the learner's prompts are fixed
  std::unique_ptr<model::DiffusionModel> diffusion;
  torch::Device device{torch::kCPU};

  std::optional<AttributeSet> attributes;
  std::optional<Subspace> subspace;
  double vocab_norm = 0;
  std::string init_word;

  std::vector<std::string> templates;          // the config's templates that fit the context
  std::vector<std::string> token_prompts;      // one per template
  std::vector<std::string> negative_prompts0;  // negatives of the first template (for logs)
  std::vector<std::string> negative_words;     // [m] the class word of each negative prompt
  model::PromptBatch token_batch;              // token_prompts tokenised
  torch::Tensor negative_features;             // [T, m, F] normalised (with image features)

  int n_images = 0, n_negatives = 0, variants = 1;
  torch::Tensor features;           // [N * V, F] normalised positives (lambda_cls > 0)
  torch::Tensor latents;            // [N * V, C, h, w] (lambda_inv > 0)
  torch::Tensor negative_image_features;  // [M, F] normalised (may be empty)
  std::vector<std::string> negative_labels;  // [M]
  torch::Tensor negative_targets;         // [M] long: index into the negative prompts, -1 "not the token"
  int n_labelled = 0;
  std::vector<std::string> image_paths;   // usable positives
  std::string data_sha256;                // fingerprint of images + boxes (+ negatives)

  // Optimisation state.
  torch::Tensor param;  // [n, k] or [n, W] float32 on device, leaf
  torch::Tensor adam_m, adam_v;
  int step = 0;
  std::vector<StepLosses> recent;  // the last kRecent steps (checkpointed: metrics survive a resume)
  static constexpr std::size_t kRecent = 10;
  // Every step's losses (total, inversion, classification text, classification image):
  // the loss curve of the token file's metrics (checkpointed).
  std::vector<float> curve;  // 4 per step

  Impl(const model::Bundle& b, LearnRequest r) : bundle(b), req(std::move(r)), cfg(req.config), clip(b) {}

  bool use_inv() const { return cfg.lambda_inv > 0; }
  bool use_cls() const { return cfg.lambda_cls > 0; }
  // Image features (and the negative prompts) are computed whenever the image encoder is
  // loaded: the classification loss needs them and the hub check uses them in every run.
  bool want_features() const { return use_cls() || bundle.image_loaded(); }
  // No text side without negatives: over positives alone its optimum is a hub token.
  bool use_text_side() const { return use_cls() && n_negatives > 0; }
  bool use_image_side() const { return use_cls() && cfg.cls_image_weight > 0 && n_negatives > 0; }
  HubCheck hub_check() const;

  void setup();
  void setup_prompts();
  void setup_images();
  torch::Tensor current_vectors() const {
    return subspace ? expand(*subspace, param) : param;
  }
  double lr_at(int s) const;
  // One step's random draws and the inputs of its text-encoder and UNet passes.
  struct StepPlan {
    int s = 0, B = 0;
    std::vector<int64_t> tmpl, uniq;  // template per item; the unique ones, in first-use order
    torch::Tensor flat_t, map_t;      // [B] rows of features/latents; [B] item -> row of uniq
    model::PromptBatch prompts;       // the token prompts of uniq
    torch::Tensor zt, t, target;      // inversion: noisy latents, timesteps, target (or undefined)
  };
  StepPlan plan(int s) const;
  torch::Tensor finish(const StepPlan& pl, const torch::Tensor& v, const torch::Tensor& features_u,
                       const torch::Tensor& pred, StepLosses& out) const;
  void check_grad(const torch::Tensor& grad, int s, const StepLosses& out) const;
  StepLosses compute(int s, torch::Tensor* grad_out);
  // AdamW on a gradient of step `step` (the caller computed it); updates the state.
  StepLosses apply(StepLosses losses, torch::Tensor grad);
  std::string fingerprint_config() const;
  std::string bundle_id() const { return bundle.text_encoder_sha256(); }
};

// The metrics of a finished run (mean losses of the last steps, norms, the hub check; the
// hub check also logged) and the token file.
void finish_result(Learner& learner, LearnResult& result);

}  // namespace ctok::token
