#include "ctok/token/learner.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/random.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/data/concepts.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/token/losses.hpp"
#include "image_cache.hpp"
#include "learner_impl.hpp"

namespace ctok::token {
namespace fs = std::filesystem;

namespace {

std::string fmt_double(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

std::string losses_text(const StepLosses& l) {
  return "total " + fmt_double(l.total) + ", inversion " + fmt_double(l.inv) + ", classification text " +
         fmt_double(l.cls_text) + ", image " + fmt_double(l.cls_image) + ", norm " + fmt_double(l.norm);
}

// A sub-batch of tokenised prompts (rows of `all`), custom slots re-indexed.
model::PromptBatch select_prompts(const model::PromptBatch& all, const std::vector<int64_t>& rows) {
  model::PromptBatch b;
  auto index = torch::tensor(rows, torch::kLong);
  b.ids = all.ids.index_select(0, index);
  b.eos_index = all.eos_index.index_select(0, index);
  b.token_lengths = all.token_lengths;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    b.prompts.push_back(all.prompts[static_cast<std::size_t>(rows[i])]);
    b.truncated.push_back(all.truncated[static_cast<std::size_t>(rows[i])]);
    for (const auto& s : all.slots) {
      if (s.batch != rows[i]) continue;
      model::TokenSlot t = s;
      t.batch = static_cast<int64_t>(i);
      b.slots.push_back(t);
    }
  }
  return b;
}

}  // namespace



void Learner::Impl::setup() {
  validate(cfg);
  device = bundle.device();
  if (req.token.empty()) throw bad_input("the token string is empty").key("token").expected("e.g. <my-dress>");
  if (req.parent.find_first_not_of(" \t") == std::string::npos) {
    throw bad_input("the parent concept is empty").key("parent").expected("a word such as dress");
  }
  // A string the tokenizer already knows as one piece cannot be told apart from that word.
  bundle.tokenizer().check_custom_token(req.token);
  if (use_inv()) {
    if (!bundle.has_diffusion()) {
      throw bad_input("the inversion loss (lambda_inv " + fmt_double(cfg.lambda_inv) + ") needs a UNet, and bundle " +
                      bundle.name() + " has none (no \"diffusion\" section in bundle.json); use --lambda-inv 0 "
                      "for the classification loss alone, or a bundle with diffusion models")
          .file(bundle.path_of("bundle.json"))
          .key("diffusion");
    }
    if (!bundle.diffusion_loaded()) {
      throw bad_input("the inversion loss needs the bundle loaded with its UNet (load_diffusion)").key("lambda_inv");
    }
    diffusion = std::make_unique<model::DiffusionModel>(bundle);
    const int T = bundle.schedule().num_train_timesteps();
    if (cfg.timestep_min >= T || cfg.timestep_max >= T) {
      throw bad_input("inversion timesteps outside the bundle's schedule").key("timestep_max")
          .expected("< " + std::to_string(T)).found(std::to_string(std::max(cfg.timestep_min, cfg.timestep_max)));
    }
  }
  if (req.images.empty()) throw bad_input("no concept image given").key("images").expected("at least one image");

  // Attribute file: required under "auto" and for a path; under "none" the parent's file is
  // still used for sibling negatives when one exists.
  if (cfg.subspace == "auto") {
    attributes = read_attribute_file(find_attribute_file(req.parent, req.attributes_dir));
  } else if (cfg.subspace != "none") {
    if (!file_exists(cfg.subspace)) {
      throw bad_input("attribute file for --subspace does not exist").file(cfg.subspace)
          .expected("auto, none or an attribute JSON file");
    }
    attributes = read_attribute_file(cfg.subspace);
  } else if (cfg.sibling_negatives && cfg.negative_prompts.empty()) {
    try {
      attributes = read_attribute_file(find_attribute_file(req.parent, req.attributes_dir));
    } catch (const Error&) {
      spdlog::info("no attribute file for \"{}\": negatives are the parent alone", req.parent);
    }
  }
  if (attributes && attributes->parent != req.parent) {
    spdlog::warn("attribute file {} is for the parent \"{}\", the token's parent is \"{}\"", attributes->path,
                 attributes->parent, req.parent);
  }

  vocab_norm = mean_vocab_norm(bundle);
  init_word = cfg.init_word.empty() ? req.parent : cfg.init_word;
  torch::Tensor e0 = word_embedding(bundle, init_word).reshape({1, -1}).repeat({cfg.vectors, 1});
  if (cfg.subspace != "none") {
    SubspaceOptions so;
    so.drop_unknown = cfg.subspace_words == "known";
    so.tolerance = cfg.subspace_tolerance;
    subspace = build_subspace(bundle, attributes->subspace_words(cfg.subspace_max_words), so);
    if (!subspace->dropped.empty()) {
      std::string d;
      for (const auto& w : subspace->dropped) d += (d.empty() ? "" : ", ") + w;
      spdlog::info("subspace: left out {} word(s) the tokenizer has no piece for: {}", subspace->dropped.size(), d);
    }
    spdlog::info("subspace: {} words span {} dimensions of {}", subspace->words.size(), subspace->dim(),
                 bundle.width());
    param = project(*subspace, e0.to(device)).detach().clone();
  } else {
    param = e0.to(device).detach().clone();
  }
  param = param.to(torch::kFloat32).contiguous();
  adam_m = torch::zeros_like(param);
  adam_v = torch::zeros_like(param);

  setup_images();  // first: an unusable image set is the likelier mistake
  setup_prompts();
  if (use_cls() && n_negatives == 0) {
    if (!use_inv()) {
      throw bad_input("nothing to learn: the inversion loss is off (lambda_inv 0) and the classification loss "
                      "has no negative images (a classification loss over the concept's images alone makes a hub "
                      "token, so it is off without negatives)")
          .key("negatives").expected("negative images (--negatives DIR, --negatives-from ROOT, or generated), "
                                     "or lambda_inv > 0");
    }
    spdlog::warn("classification loss off: no negative images (over the concept's images alone it would make a "
                 "hub token); learning with the inversion loss only. Give --negatives DIR or --negatives-from "
                 "ROOT, or let ctok-learn generate them.");
  } else if (use_cls()) {
    spdlog::info("classification loss: {} negative image(s), {} with a class prompt, {} as \"not the token\"",
                 n_negatives, n_labelled, n_negatives - n_labelled);
  } else if (use_inv()) {
    spdlog::info("inversion loss only (lambda_cls 0, the default: on the default bundle the classification loss "
                 "costs category accuracy; --lambda-cls 0.1 or --config configs/learn/retrieval.json for retrieval); "
                 "{} negative image(s) for the hub check", n_negatives);
  }
}

void Learner::Impl::setup_prompts() {
  // Templates whose token does not fit in the context (after truncation) are left out.
  std::vector<std::string> kept_templates;
  std::vector<int64_t> kept_rows;
  model::PromptBatch tokenized;
  {
    std::vector<std::string> all;
    for (const auto& t : cfg.templates) all.push_back(fill_template(t, req.token, req.parent));
    model::PromptBatch b = clip.tokenize(all, std::map<std::string, int64_t>{{req.token, cfg.vectors}});
    for (std::size_t i = 0; i < all.size(); ++i) {
      int64_t n = 0;
      for (const auto& s : b.slots) n += s.batch == static_cast<int64_t>(i);
      if (n == cfg.vectors) {
        kept_rows.push_back(static_cast<int64_t>(i));
        kept_templates.push_back(cfg.templates[i]);
        token_prompts.push_back(all[i]);
      } else {
        spdlog::warn("template \"{}\" left out: the token does not fit in the context of {} tokens", cfg.templates[i],
                     bundle.context_length());
      }
    }
    tokenized = std::move(b);
  }
  if (token_prompts.empty()) {
    throw bad_input("no template keeps the token inside the text context of " + std::to_string(bundle.context_length()) +
                    " tokens").key("templates");
  }
  templates = kept_templates;
  token_batch = select_prompts(tokenized, kept_rows);
  if (!want_features()) return;
  std::vector<std::vector<std::string>> negatives;  // per template
  if (!cfg.negative_prompts.empty()) {
    negatives.assign(templates.size(), cfg.negative_prompts);
    negative_words = cfg.negative_prompts;  // a label matches a custom prompt by its full text
  } else {
    negative_words = negative_class_words(req.parent, cfg.sibling_negatives && attributes ? &*attributes : nullptr);
    for (const auto& t : templates) {
      std::vector<std::string> ps;
      for (const auto& w : negative_words) ps.push_back(fill_template(t, "", w));
      negatives.push_back(ps);
    }
  }
  std::vector<int64_t> targets;
  n_labelled = 0;
  for (const auto& l : negative_labels) {
    auto it = l.empty() ? negative_words.end() : std::find(negative_words.begin(), negative_words.end(), l);
    targets.push_back(it == negative_words.end() ? -1 : static_cast<int64_t>(it - negative_words.begin()));
    n_labelled += targets.back() >= 0;
  }
  negative_targets = torch::tensor(targets, torch::TensorOptions().dtype(torch::kLong)).to(device);
  negative_prompts0 = negatives.front();
  std::vector<std::string> flat;
  for (const auto& ps : negatives) flat.insert(flat.end(), ps.begin(), ps.end());
  torch::NoGradGuard no_grad;
  auto enc = clip.encode_text(flat);
  const int64_t T = static_cast<int64_t>(negatives.size()), m = static_cast<int64_t>(negatives.front().size());
  negative_features = model::l2_normalize(enc.features).reshape({T, m, -1}).to(device).contiguous();
}

void Learner::Impl::setup_images() {
  ImageCacheRequest ir;
  ir.positives = req.images;
  ir.negatives = want_features() ? req.negatives : std::vector<ImageSource>{};
  ir.max_negatives = cfg.max_negative_images;
  ir.negative_seed = cfg.seed;
  ir.variants = cfg.variants;
  ir.flip = cfg.flip;
  ir.crop_jitter = cfg.crop_jitter;
  ir.want_features = want_features();
  ir.want_latents = use_inv();
  ir.cache_dir = cfg.cache_dir;
  ImageCache cache = build_image_cache(bundle, clip, diffusion.get(), ir);
  n_images = static_cast<int>(cache.positive_paths.size());
  n_negatives = cache.negative_features.defined() ? static_cast<int>(cache.negative_features.size(0)) : 0;
  variants = cfg.variants;
  image_paths = cache.positive_paths;
  data_sha256 = cache.data_sha256;
  if (cache.features.defined()) features = model::l2_normalize(cache.features).to(device).contiguous();
  if (cache.latents.defined()) latents = cache.latents.to(device).contiguous();
  if (n_negatives > 0) negative_image_features = model::l2_normalize(cache.negative_features).to(device).contiguous();
  negative_labels = cache.negative_labels;
  negative_labels.resize(static_cast<std::size_t>(n_negatives));
}

double Learner::Impl::lr_at(int s) const {
  const double base = subspace ? cfg.subspace_lr : cfg.lr;
  double f = 1.0;
  if (cfg.warmup_steps > 0 && s < cfg.warmup_steps) f = static_cast<double>(s + 1) / (cfg.warmup_steps + 1);
  if (cfg.lr_schedule == "cosine") {
    const double progress = cfg.steps > 1 ? std::min(1.0, static_cast<double>(s) / (cfg.steps - 1)) : 0.0;
    f *= 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return base * f;
}

Learner::Impl::StepPlan Learner::Impl::plan(int s) const {
  StepPlan pl;
  pl.s = s;
  SplitMix64 rng(mix_seed(cfg.seed, static_cast<uint64_t>(s), 0x1));
  const int B = cfg.batch;
  pl.B = B;
  // Images: an epoch-style permutation so a batch repeats an image only when it must.
  std::vector<int64_t> perm(static_cast<std::size_t>(n_images));
  std::vector<int64_t> idx, var, tsteps;
  for (int b = 0; b < B; ++b) {
    if (b % n_images == 0) {
      for (int i = 0; i < n_images; ++i) perm[static_cast<std::size_t>(i)] = i;
      for (std::size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
    }
    idx.push_back(perm[static_cast<std::size_t>(b % n_images)]);
  }
  for (int b = 0; b < B; ++b) var.push_back(static_cast<int64_t>(rng.below(static_cast<uint64_t>(variants))));
  for (int b = 0; b < B; ++b) pl.tmpl.push_back(static_cast<int64_t>(rng.below(templates.size())));
  if (use_inv()) {
    const int T = bundle.schedule().num_train_timesteps();
    const int lo = cfg.timestep_min, hi = cfg.timestep_max < 0 ? T - 1 : cfg.timestep_max;
    for (int b = 0; b < B; ++b) tsteps.push_back(lo + static_cast<int64_t>(rng.below(static_cast<uint64_t>(hi - lo + 1))));
  }
  // Unique templates of this batch, in first-use order.
  std::vector<int64_t> item_to_uniq;
  for (int64_t t : pl.tmpl) {
    auto it = std::find(pl.uniq.begin(), pl.uniq.end(), t);
    if (it == pl.uniq.end()) {
      item_to_uniq.push_back(static_cast<int64_t>(pl.uniq.size()));
      pl.uniq.push_back(t);
    } else {
      item_to_uniq.push_back(it - pl.uniq.begin());
    }
  }
  std::vector<int64_t> flat(static_cast<std::size_t>(B));
  for (int b = 0; b < B; ++b) flat[static_cast<std::size_t>(b)] = idx[static_cast<std::size_t>(b)] * variants + var[static_cast<std::size_t>(b)];
  auto opts_long = torch::TensorOptions().dtype(torch::kLong);
  pl.flat_t = torch::tensor(flat, opts_long).to(device);
  pl.map_t = torch::tensor(item_to_uniq, opts_long).to(device);
  pl.prompts = select_prompts(token_batch, pl.uniq);
  if (use_inv()) {
    torch::NoGradGuard no_grad;
    const auto shape = diffusion->latent_shape();
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(mix_seed(cfg.seed, static_cast<uint64_t>(s), 0x2));
    torch::Tensor noise = torch::randn({B, shape[0], shape[1], shape[2]}, gen, torch::TensorOptions().dtype(torch::kFloat32)).to(device);
    pl.t = torch::tensor(tsteps, opts_long).to(device);
    torch::Tensor z0 = latents.index_select(0, pl.flat_t);
    const auto& sched = bundle.schedule();
    pl.zt = sched.add_noise(z0, noise, pl.t).to(torch::kFloat32);
    pl.target = sched.training_target(z0, noise, pl.t).to(torch::kFloat32);
  }
  return pl;
}

// The losses of a planned step from the shared passes' outputs: hidden [U, L, W] and
// features_u [U, F] of the plan's prompts, pred [B, ...] the UNet's output (undefined without
// the inversion loss).
torch::Tensor Learner::Impl::finish(const StepPlan& pl, const torch::Tensor& v, const torch::Tensor& features_u,
                                    const torch::Tensor& pred, StepLosses& out) const {
  auto opts_long = torch::TensorOptions().dtype(torch::kLong);
  torch::Tensor loss = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  if (use_inv()) {
    torch::Tensor l_inv = torch::mse_loss(pred, pl.target);
    out.inv = l_inv.item<double>();
    loss = loss + cfg.lambda_inv * l_inv;
  }
  if (use_text_side() || use_image_side()) {
    const double scale = bundle.logit_scale();
    torch::Tensor tf = model::l2_normalize(features_u.to(device));  // [U, F]
    torch::Tensor g = features.index_select(0, pl.flat_t);                 // [B, F]
    torch::Tensor l_cls = torch::zeros({}, loss.options());
    if (use_text_side()) {
      // Every image, positives and negatives, over the class prompts [token, n_1 .. n_m].
      // A positive's target is the token prompt; a negative's its own class prompt when its
      // label names one, else "not the token": -log(1 - p(token)). Positives and negatives
      // weigh half each (a batch has B positives and up to max_negative_images negatives).
      torch::Tensor ti = tf.index_select(0, pl.map_t);                     // [B, F]
      torch::Tensor tmpl_t = torch::tensor(pl.tmpl, opts_long).to(device);
      torch::Tensor logits = scale * class_logits(g, ti, negative_features.index_select(0, tmpl_t));  // [B, 1 + m]
      torch::Tensor l_pos = torch::nn::functional::cross_entropy(logits, torch::zeros({pl.B}, opts_long.device(device)));
      // Negative j is seen through template uniq[j % U] (the templates this step drew).
      const int64_t M = n_negatives, U = static_cast<int64_t>(pl.uniq.size());
      std::vector<int64_t> slot(static_cast<std::size_t>(M)), ntmpl(static_cast<std::size_t>(M));
      for (int64_t j = 0; j < M; ++j) {
        slot[static_cast<std::size_t>(j)] = j % U;
        ntmpl[static_cast<std::size_t>(j)] = pl.uniq[static_cast<std::size_t>(j % U)];
      }
      torch::Tensor nlogits = scale * class_logits(negative_image_features,
                                                   tf.index_select(0, torch::tensor(slot, opts_long).to(device)),
                                                   negative_features.index_select(0, torch::tensor(ntmpl, opts_long).to(device)));
      torch::Tensor l_neg = negative_text_loss(nlogits, negative_targets).mean();
      torch::Tensor l_text = 0.5 * (l_pos + l_neg);
      out.cls_text = l_text.item<double>();
      l_cls = l_cls + l_text;
    }
    if (use_image_side()) {
      torch::Tensor l_img = image_side_loss(tf, g, negative_image_features, scale);
      out.cls_image = l_img.item<double>();
      l_cls = l_cls + cfg.cls_image_weight * l_img;
    }
    loss = loss + cfg.lambda_cls * l_cls;
  }
  {
    torch::Tensor norms = v.norm(2, 1);
    torch::Tensor l_norm = (norms - vocab_norm).pow(2).mean();
    out.norm = l_norm.item<double>();
    if (cfg.lambda_norm > 0) loss = loss + cfg.lambda_norm * l_norm;
    out.vector_norm = norms.mean().item<double>();
  }
  out.total = loss.item<double>();
  out.lr = lr_at(pl.s);
  if (!std::isfinite(out.total)) {
    throw runtime_failure("the loss is " + std::string(std::isnan(out.total) ? "NaN" : "Inf") + " at step " +
                          std::to_string(pl.s + 1) + " (" + losses_text(out) + ")");
  }
  return loss;
}

void Learner::Impl::check_grad(const torch::Tensor& grad, int s, const StepLosses& out) const {
  if (!torch::isfinite(grad).all().item<bool>()) {
    throw runtime_failure("the gradient is NaN/Inf at step " + std::to_string(s + 1) + " (" + losses_text(out) + ")");
  }
}

// Losses of step s at the current parameter; with grad_out, the gradient too. The cohort
// learner runs the same plan / finish with the text encoder and UNet passes of many tokens
// batched together.
StepLosses Learner::Impl::compute(int s, torch::Tensor* grad_out) {
  StepPlan pl = plan(s);
  torch::Tensor p = param.detach().clone().requires_grad_(grad_out != nullptr);
  torch::Tensor v = subspace ? expand(*subspace, p) : p;
  model::TokenVectors tokens{{req.token, v}};
  auto enc = clip.encode(pl.prompts, tokens);
  torch::Tensor pred;
  if (use_inv()) pred = diffusion->unet(pl.zt, pl.t, enc.hidden.index_select(0, pl.map_t));
  StepLosses out;
  torch::Tensor loss = finish(pl, v, enc.features, pred, out);
  if (grad_out) {
    auto grads = torch::autograd::grad({loss}, {p});
    *grad_out = grads.at(0).detach();
    check_grad(*grad_out, s, out);
  }
  return out;
}

HubCheck Learner::Impl::hub_check() const {
  HubCheck h;
  if (!features.defined() || !negative_features.defined()) return h;
  torch::NoGradGuard no_grad;
  model::TokenVectors tokens{{req.token, current_vectors().detach()}};
  auto enc = clip.encode(select_prompts(token_batch, {0}), tokens);
  torch::Tensor t0 = model::l2_normalize(enc.features.to(device)).reshape({-1});  // [F]
  torch::Tensor prompts = negative_features[0];                                   // [m, F]
  auto won = [&](const torch::Tensor& images) {
    torch::Tensor tok = torch::matmul(images, t0);                                // [N]
    torch::Tensor best = std::get<0>(torch::matmul(images, prompts.t()).max(1));  // [N]
    return tok.gt(best).to(torch::kFloat64).mean().item<double>();
  };
  torch::Tensor plain = features.index_select(
      0, torch::arange(0, static_cast<int64_t>(n_images) * variants, variants,
                       torch::TensorOptions().dtype(torch::kLong)).to(device));
  h.positives = n_images;
  h.positives_won = won(plain);
  if (n_negatives > 0) {
    h.negatives = n_negatives;
    h.negatives_won = won(negative_image_features);
  }
  return h;
}

std::string Learner::Impl::fingerprint_config() const {
  nlohmann::json j = fingerprint_json(cfg);
  j["token"] = req.token;
  j["parent"] = req.parent;
  if (subspace) j["subspace_words_used"] = subspace->words;
  return j.dump();
}

Learner::Learner(const model::Bundle& bundle, LearnRequest request)
    : impl_(std::make_unique<Impl>(bundle, std::move(request))) {
  impl_->setup();
}
Learner::~Learner() = default;

const LearnRequest& Learner::request() const { return impl_->req; }
const LearnConfig& Learner::config() const { return impl_->cfg; }
int Learner::steps_done() const { return impl_->step; }
int Learner::usable_images() const { return impl_->n_images; }
int Learner::usable_negatives() const { return impl_->n_negatives; }
const Subspace* Learner::subspace() const { return impl_->subspace ? &*impl_->subspace : nullptr; }
const AttributeSet* Learner::attributes() const { return impl_->attributes ? &*impl_->attributes : nullptr; }
double Learner::vocab_norm() const { return impl_->vocab_norm; }
const std::vector<std::string>& Learner::token_prompts() const { return impl_->token_prompts; }
const std::vector<std::string>& Learner::negative_prompts() const { return impl_->negative_prompts0; }
bool Learner::text_side_on() const { return impl_->use_text_side(); }
int Learner::labelled_negatives() const { return impl_->n_labelled; }
HubCheck Learner::hub_check() const { return impl_->hub_check(); }

torch::Tensor Learner::vectors() const {
  torch::NoGradGuard g;
  return impl_->current_vectors().detach().to(torch::kCPU, torch::kFloat32).contiguous();
}
torch::Tensor Learner::parameter() const { return impl_->param.detach().to(torch::kCPU).contiguous(); }

const std::vector<StepLosses>& Learner::recent_losses() const { return impl_->recent; }

nlohmann::json Learner::loss_curve(int max_points) const {
  const std::vector<float>& c = impl_->curve;
  const int64_t n = static_cast<int64_t>(c.size() / 4);
  const int64_t every = std::max<int64_t>(1, (n + std::max(1, max_points) - 1) / std::max(1, max_points));
  nlohmann::json j = {{"every", every}, {"step", nlohmann::json::array()}};
  const char* names[4] = {"total", "inversion", "classification_text", "classification_image"};
  for (const char* k : names) j[k] = nlohmann::json::array();
  for (int64_t b = 0; b < n; b += every) {  // block means: the curve of `every` steps each
    const int64_t e = std::min(n, b + every);
    double s[4] = {0, 0, 0, 0};
    for (int64_t i = b; i < e; ++i)
      for (int k = 0; k < 4; ++k) s[k] += c[4 * i + k];
    j["step"].push_back(e);
    for (int k = 0; k < 4; ++k) {
      const double v = s[k] / static_cast<double>(e - b);
      j[names[k]].push_back(std::isfinite(v) ? nlohmann::json(std::round(v * 1e5) / 1e5) : nlohmann::json());
    }
  }
  return j;
}

StepLosses Learner::forward_backward(int s) {
  torch::Tensor grad;
  return impl_->compute(s, &grad);
}

StepLosses Learner::step() {
  torch::Tensor grad;
  StepLosses losses = impl_->compute(impl_->step, &grad);
  return impl_->apply(losses, grad);
}

StepLosses Learner::Impl::apply(StepLosses losses, torch::Tensor grad) {
  Impl& m = *this;
  const int s = m.step;
  const LearnConfig& c = m.cfg;
  torch::NoGradGuard no_grad;
  if (c.grad_clip > 0) {
    const double n = grad.norm().item<double>();
    if (n > c.grad_clip) grad = grad * (c.grad_clip / n);
  }
  // AdamW (decoupled weight decay), as torch.optim.AdamW.
  const double lr = losses.lr;
  const double bc1 = 1.0 - std::pow(c.beta1, s + 1), bc2 = 1.0 - std::pow(c.beta2, s + 1);
  torch::Tensor p = m.param.clone();
  torch::Tensor am = m.adam_m * c.beta1 + grad * (1.0 - c.beta1);
  torch::Tensor av = m.adam_v * c.beta2 + grad * grad * (1.0 - c.beta2);
  if (c.weight_decay > 0) p.mul_(1.0 - lr * c.weight_decay);
  torch::Tensor denom = (av / bc2).sqrt() + c.adam_eps;
  p.sub_(am / denom * (lr / bc1));
  if (!torch::isfinite(p).all().item<bool>()) {
    throw runtime_failure("the token's parameter became NaN/Inf at step " + std::to_string(s + 1) +
                          " (learning rate " + fmt_double(lr) + " too large?)");
  }
  m.param = p;
  m.adam_m = am;
  m.adam_v = av;
  m.step = s + 1;
  losses.vector_norm = m.current_vectors().norm(2, 1).mean().item<double>();
  m.recent.push_back(losses);
  for (double x : {losses.total, losses.inv, losses.cls_text, losses.cls_image}) m.curve.push_back(static_cast<float>(x));
  if (m.recent.size() > Impl::kRecent) m.recent.erase(m.recent.begin());
  return losses;
}

void Learner::save_checkpoint(const std::string& path, double seconds) const {
  const Impl& m = *impl_;
  SafetensorsFile f;
  auto put = [&](const char* name, const torch::Tensor& t) {
    torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    f.tensors[name] = make_f32({c.size(0), c.size(1)}, c.data_ptr<float>());
  };
  put("param", m.param);
  put("adam_m", m.adam_m);
  put("adam_v", m.adam_v);
  const int64_t step = m.step;
  f.tensors["step"] = make_i64({1}, &step);
  if (!m.curve.empty()) f.tensors["curve"] = make_f32({static_cast<int64_t>(m.curve.size() / 4), 4}, m.curve.data());
  f.metadata["format"] = kCheckpointFormat;
  f.metadata["token"] = m.req.token;
  f.metadata["parent"] = m.req.parent;
  f.metadata["bundle"] = m.bundle.name();
  f.metadata["bundle_sha256"] = m.bundle_id();
  f.metadata["config"] = to_json(m.cfg).dump();
  f.metadata["fingerprint"] = m.fingerprint_config();
  f.metadata["data_sha256"] = m.data_sha256;
  f.metadata["param_kind"] = m.subspace ? "coefficients" : "vectors";
  f.metadata["seconds"] = fmt_double(seconds);
  nlohmann::json recent = nlohmann::json::array();
  for (const auto& l : m.recent) recent.push_back({l.total, l.inv, l.cls_text, l.cls_image, l.norm, l.vector_norm, l.lr});
  f.metadata["recent_losses"] = recent.dump();
  ensure_parent_dir(path);
  write_safetensors(path, f);  // atomic
}

double Learner::load_checkpoint(const std::string& path) {
  Impl& m = *impl_;
  SafetensorsFile f = read_safetensors(path);
  auto meta = [&](const std::string& key) -> std::string {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) {
      throw bad_input("not a ctok-learn checkpoint: metadata key missing").file(path).key(key)
          .expected(kCheckpointFormat);
    }
    return it->second;
  };
  if (meta("format") != kCheckpointFormat) {
    throw bad_input("not a checkpoint this build reads").file(path).key("format").expected(kCheckpointFormat)
        .found(meta("format"));
  }
  if (meta("bundle_sha256") != m.bundle_id()) {
    throw bad_input("the checkpoint was made with another bundle (" + meta("bundle") + ", text encoder sha256 " +
                    meta("bundle_sha256").substr(0, 12) + "...), this run uses " + m.bundle.name() + " (" +
                    m.bundle_id().substr(0, 12) + "...)")
        .file(path).key("bundle_sha256");
  }
  if (meta("token") != m.req.token || meta("parent") != m.req.parent) {
    throw bad_input("the checkpoint is for the token " + meta("token") + " (parent \"" + meta("parent") +
                    "\"), this run learns " + m.req.token + " (parent \"" + m.req.parent + "\")")
        .file(path).key("token");
  }
  if (meta("fingerprint") != m.fingerprint_config()) {
    std::string diffs;
    try {
      const auto then = nlohmann::json::parse(meta("fingerprint"));
      const auto now = nlohmann::json::parse(m.fingerprint_config());
      for (auto it = now.begin(); it != now.end(); ++it) {
        if (!then.contains(it.key()) || then[it.key()] != it.value()) {
          std::string was = then.contains(it.key()) ? then[it.key()].dump() : "absent";
          if (was.size() > 60) was = was.substr(0, 57) + "...";
          std::string is = it.value().dump();
          if (is.size() > 60) is = is.substr(0, 57) + "...";
          diffs += (diffs.empty() ? "" : "; ") + it.key() + ": checkpoint " + was + ", now " + is;
        }
      }
      for (auto it = then.begin(); it != then.end(); ++it)
        if (!now.contains(it.key())) diffs += (diffs.empty() ? "" : "; ") + it.key() + " only in the checkpoint";
    } catch (const nlohmann::json::exception&) {
      diffs = "unreadable fingerprint";
    }
    throw bad_input("the checkpoint was made with another learning config").file(path).key("config")
        .found(diffs.empty() ? "different fingerprint" : diffs);
  }
  if (meta("data_sha256") != m.data_sha256) {
    throw bad_input("the checkpoint was made from other images (or other negatives)").file(path).key("data_sha256");
  }
  auto get = [&](const char* name) {
    const TensorData* t = f.find(name);
    if (!t || t->dtype != DType::kF32 || t->shape.size() != 2 || t->shape[0] != m.param.size(0) ||
        t->shape[1] != m.param.size(1)) {
      throw bad_input("checkpoint tensor missing or of the wrong shape").file(path).key(name)
          .expected("F32 [" + std::to_string(m.param.size(0)) + ", " + std::to_string(m.param.size(1)) + "]");
    }
    std::vector<float> v = to_float32(*t);
    return torch::from_blob(v.data(), {m.param.size(0), m.param.size(1)}, torch::kFloat32).clone().to(m.device);
  };
  torch::Tensor p = get("param"), am = get("adam_m"), av = get("adam_v");
  const TensorData* st = f.find("step");
  if (!st || st->numel() != 1) throw bad_input("checkpoint has no step").file(path).key("step");
  const int64_t step = to_int64(*st).at(0);
  if (step < 0 || step > (1 << 30)) throw bad_input("checkpoint step out of range").file(path).key("step");
  if (!torch::isfinite(p).all().item<bool>() || !torch::isfinite(am).all().item<bool>() ||
      !torch::isfinite(av).all().item<bool>()) {
    throw bad_input("checkpoint holds NaN/Inf values").file(path);
  }
  std::vector<StepLosses> recent;
  try {
    // Non-finite values (a norm that overflowed) are stored as null.
    auto num = [](const nlohmann::json& x) { return x.is_null() ? std::nan("") : x.get<double>(); };
    for (const auto& r : nlohmann::json::parse(meta("recent_losses"))) {
      StepLosses l;
      l.total = num(r.at(0));
      l.inv = num(r.at(1));
      l.cls_text = num(r.at(2));
      l.cls_image = num(r.at(3));
      l.norm = num(r.at(4));
      l.vector_norm = num(r.at(5));
      l.lr = num(r.at(6));
      recent.push_back(l);
    }
  } catch (const nlohmann::json::exception& e) {
    throw bad_input(std::string("checkpoint metadata recent_losses is malformed: ") + e.what()).file(path);
  }
  m.param = p;
  m.adam_m = am;
  m.adam_v = av;
  m.step = static_cast<int>(step);
  m.recent = recent;
  m.curve.clear();
  if (const TensorData* c = f.find("curve"); c && c->dtype == DType::kF32 && c->shape.size() == 2 && c->shape[1] == 4 &&
                                              c->shape[0] == step) {
    m.curve = to_float32(*c);
  }
  double seconds = 0;
  try {
    seconds = std::stod(meta("seconds"));
  } catch (const std::exception&) {
  }
  return seconds;
}

TokenFile Learner::token_file(const nlohmann::json& metrics) const {
  const Impl& m = *impl_;
  TokenFile t;
  t.token = m.req.token;
  torch::Tensor v = vectors();
  t.n_vectors = v.size(0);
  t.width = v.size(1);
  t.vectors.assign(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
  t.parent = m.req.parent;
  t.bundle = m.bundle.name();
  t.bundle_sha256 = m.bundle_id();
  if (m.subspace) {
    t.subspace_words = m.subspace->words;
    torch::Tensor c = parameter().to(torch::kFloat64).reshape({-1});
    t.coefficients.assign(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  }
  nlohmann::json cfg = to_json(m.cfg);
  cfg["init_word"] = m.init_word;
  cfg["attribute_file"] = m.attributes ? fs::path(m.attributes->path).filename().string() : "";
  cfg["negative_prompts_used"] = m.negative_prompts0;
  cfg["images"] = m.n_images;
  cfg["negative_images"] = m.n_negatives;
  cfg["negative_images_labelled"] = m.n_labelled;
  cfg["negatives"] = m.req.negatives_source.empty() ? nlohmann::json{{"kind", m.n_negatives > 0 ? "given" : "none"}}
                                                     : m.req.negatives_source;
  if (!m.req.source.empty()) cfg["source"] = m.req.source;
  t.config = cfg;
  t.metrics = metrics;
  return t;
}

namespace {

// Keeps the CSV header and the rows up to `step` (a resumed run rewrites what follows).
void prepare_log(const std::string& path, int step) {
  static const char* kHeader = "step,loss,inv,cls_text,cls_image,norm,vector_norm,lr,seconds";
  std::string kept = std::string(kHeader) + "\n";
  if (step > 0 && file_exists(path)) {
    std::istringstream in(read_text_file(path));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const auto comma = line.find(',');
      if (comma == std::string::npos) continue;
      try {
        if (std::stoi(line.substr(0, comma)) <= step) kept += line + "\n";
      } catch (const std::exception&) {
      }
    }
  }
  ensure_parent_dir(path);
  write_file_atomic(path, kept);
}

}  // namespace

void finish_result(Learner& learner, LearnResult& result) {
  StepLosses mean;
  const std::vector<StepLosses>& recent = learner.recent_losses();
  for (const auto& l : recent) {
    mean.total += l.total / recent.size();
    mean.inv += l.inv / recent.size();
    mean.cls_text += l.cls_text / recent.size();
    mean.cls_image += l.cls_image / recent.size();
    mean.norm += l.norm / recent.size();
  }
  const torch::Tensor v = learner.vectors();
  result.metrics = {{"steps", result.steps_done},
                    {"seconds", std::round(result.seconds * 1000) / 1000},
                    {"loss", mean.total},
                    {"inversion", mean.inv},
                    {"classification_text", mean.cls_text},
                    {"classification_image", mean.cls_image},
                    {"norm_term", mean.norm},
                    {"losses_over_last_steps", recent.size()},
                    {"vector_norm", v.norm(2, 1).mean().item<double>()},
                    {"vocab_mean_norm", learner.vocab_norm()},
                    {"subspace_dim", learner.subspace() ? learner.subspace()->dim() : 0},
                    {"loss_curve", learner.loss_curve()}};
  const HubCheck hub = learner.hub_check();
  if (hub.positives > 0) {
    result.metrics["hub_check"] = {{"template", learner.token_prompts().front()},
                                   {"negative_prompts", learner.negative_prompts()},
                                   {"positives", hub.positives},
                                   {"positives_won", hub.positives_won},
                                   {"negatives", hub.negatives},
                                   {"negatives_won", hub.negatives_won},
                                   {"hub", hub.hub()}};
    if (hub.negatives > 0) {
      spdlog::info("hub check: the token prompt wins over the negative class prompts on {:.0f}% of the concept "
                   "images and {:.0f}% of the negative images", 100 * hub.positives_won, 100 * hub.negatives_won);
    } else {
      spdlog::info("hub check: the token prompt wins over the negative class prompts on {:.0f}% of the concept "
                   "images (no negative images to check it against)", 100 * hub.positives_won);
    }
    if (hub.hub()) {
      spdlog::warn("the token looks like a hub: its prompt wins on {:.0f}% of the negative images, not only on the "
                   "concept's; it will pick out the parent rather than the concept ({})",
                   100 * hub.negatives_won,
                   learner.config().lambda_cls > 0
                       ? "try other negatives or a smaller lambda_cls"
                       : "it was learned without the classification loss: more --steps, or --lambda-cls 0.1 to "
                         "train it against these negatives");
    }
  }
  result.token = learner.token_file(result.metrics);
}

LearnResult learn(Learner& learner, const RunOptions& options) {
  const LearnConfig& c = learner.config();
  LearnResult result;
  double seconds_before = 0;
  if (!options.resume_path.empty()) {
    seconds_before = learner.load_checkpoint(options.resume_path);
    spdlog::info("resumed from {} at step {}", options.resume_path, learner.steps_done());
  }
  const int start = learner.steps_done();
  std::ofstream log;
  if (!options.log_path.empty()) {
    prepare_log(options.log_path, start);
    log.open(options.log_path, std::ios::app);
    if (!log) throw bad_input("cannot write the log file").file(options.log_path);
  }
  ProgressOptions po;
  po.label = "learn " + learner.request().token;
  po.unit = "step";
  po.enabled = options.progress && !log_quiet();
  Progress progress(c.steps, po);
  if (start > 0) progress.advance(std::min(start, c.steps));

  std::string last_checkpoint = options.resume_path;
  int last_checkpoint_step = start;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int s = start; s < c.steps; ++s) {
    StepLosses l;
    try {
      l = learner.step();
    } catch (const Error& e) {
      progress.finish();
      std::string where = last_checkpoint.empty()
                              ? "no checkpoint was written before it"
                              : "the last good checkpoint is " + last_checkpoint + " (step " +
                                    std::to_string(last_checkpoint_step) + "), left as it was";
      throw runtime_failure("learning stopped: " + e.message() + "; " + where +
                            ". Try a smaller --lr or other loss weights.");
    }
    if (log) {
      log << (s + 1) << ',' << fmt_double(l.total) << ',' << fmt_double(l.inv) << ',' << fmt_double(l.cls_text) << ','
          << fmt_double(l.cls_image) << ',' << fmt_double(l.norm) << ',' << fmt_double(l.vector_norm) << ','
          << fmt_double(l.lr) << ',' << fmt_double(elapsed()) << '\n';
      log.flush();
    }
    char suffix[160];
    std::snprintf(suffix, sizeof suffix, "loss %.4f inv %.4f cls %.4f/%.4f |v| %.3f", l.total, l.inv, l.cls_text,
                  l.cls_image, l.vector_norm);
    progress.set_suffix(suffix);
    progress.advance();
    if (options.on_step) options.on_step(s + 1, l);
    result.last = l;
    const bool last = s + 1 == c.steps;
    const bool stop = options.stop && options.stop->load();
    if (!options.checkpoint_path.empty() && !last &&
        (stop || (c.checkpoint_every > 0 && (s + 1) % c.checkpoint_every == 0))) {
      learner.save_checkpoint(options.checkpoint_path, elapsed());
      last_checkpoint = options.checkpoint_path;
      last_checkpoint_step = s + 1;
    }
    if (stop && !last) {
      progress.finish();
      result.status = LearnStatus::kInterrupted;
      result.steps_done = s + 1;
      result.seconds = elapsed();
      result.checkpoint_path = options.checkpoint_path;
      return result;
    }
  }
  progress.finish();
  result.steps_done = learner.steps_done();
  result.seconds = elapsed();
  finish_result(learner, result);
  if (!options.checkpoint_path.empty() && options.keep_checkpoint) {
    learner.save_checkpoint(options.checkpoint_path, result.seconds);
  }
  return result;
}

}  // namespace ctok::token
