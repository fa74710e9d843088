// CLIP side of a bundle: prompts with custom tokens -> hidden states and features, image
// batches -> features.
//
//   ctok::model::ClipModel clip(bundle);
//   ctok::model::TokenVectors tokens{{"<my-dress>", v}};      // v: [n_vectors, width]
//   auto enc = clip.encode_text({"a photo of a <my-dress> dress in blue"}, tokens);
//   torch::Tensor t = ctok::model::l2_normalize(enc.features);  // [B, feature_dim]
//   torch::Tensor g = ctok::model::l2_normalize(clip.encode_images(pixels));
//
// The input embeddings are token_embedding[ids] with the rows at a custom token's
// positions replaced by that token's vectors, so gradients flow to `v` when it requires
// grad. A token with n vectors takes n consecutive positions. The custom tokens belong to
// the request (the PromptBatch carries its own table), never to the bundle: one
// `const Bundle&` serves concurrent requests whose tables give one string different vectors. Pooling uses the eos position the tokenizer
// reports, never argmax(ids): custom ids are beyond eos.
//
// Without gradients (no vector requires grad, or grad mode off) the networks run in
// inference mode; the results are ordinary tensors either way (safe to use in a loss).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"

namespace ctok::model {

// Custom token vectors by token string: [n_vectors, width] float, any device.
using TokenVectors = std::map<std::string, torch::Tensor>;

struct TokenSlot {  // where one vector of a custom token sits in a batch
  int64_t batch = 0, position = 0;
  std::string token;
  int64_t row = 0;  // which of the token's vectors
};

// Tokenised prompts (tokenize once, encode many times with changing vectors).
struct PromptBatch {
  std::vector<std::string> prompts;
  torch::Tensor ids;        // [B, L] int64 CPU; custom positions hold the token's reserved id
  torch::Tensor eos_index;  // [B] int64 CPU
  std::vector<TokenSlot> slots;
  std::vector<int64_t> truncated;               // per prompt: tokens cut to fit the context
  std::map<std::string, int64_t> token_lengths; // n_vectors of each token used
  text::CustomTokens custom;                    // this batch's token table (reserved ids)
};

struct TextEncoding {
  torch::Tensor hidden;     // [B, L, width], the bundle's dtype and device (UNet conditioning)
  torch::Tensor features;   // [B, feature_dim] float32, not normalised
  torch::Tensor eos_index;  // [B] int64 CPU
};

class ClipModel {
 public:
  explicit ClipModel(const Bundle& bundle);  // the bundle must outlive this object

  const Bundle& bundle() const { return bundle_; }

  // Checks every vector ([n, width], finite) and every string (Tokenizer::check_custom_token).
  // bad_input: width != text.width, a string the tokenizer knows as one piece, ...
  void check_tokens(const TokenVectors& tokens) const;

  // Tokenises prompts. bad_input for a "<...>" word that is not one of `token_lengths` and
  // not a piece of the vocabulary (an unknown custom token); a prompt longer than the
  // context is truncated (eos kept) with a warning that says how many tokens were cut.
  PromptBatch tokenize(const std::vector<std::string>& prompts,
                       const std::map<std::string, int64_t>& token_lengths) const;
  PromptBatch tokenize(const std::vector<std::string>& prompts, const TokenVectors& tokens) const;

  // Input embeddings [B, L, width] in the bundle's dtype with the custom rows in place.
  torch::Tensor embed(const PromptBatch& batch, const TokenVectors& tokens) const;
  TextEncoding encode(const PromptBatch& batch, const TokenVectors& tokens) const;
  TextEncoding encode_text(const std::vector<std::string>& prompts, const TokenVectors& tokens = {}) const;
  // The text encoder on given embeddings (reference checks, custom pipelines).
  TextEncoding encode_embeds(const torch::Tensor& embeds, const torch::Tensor& eos_index) const;

  // pixels [B, 3, size, size] normalised per the manifest -> features [B, F] float32,
  // not normalised. Runs in chunks of `batch_size`, in inference mode.
  torch::Tensor encode_images(const torch::Tensor& pixels, int64_t batch_size = 64) const;
  torch::Tensor encode_images(const std::vector<image::FloatImage>& images, int64_t batch_size = 64) const;

 private:
  const Bundle& bundle_;
};

// [B, 3, H, W] float32 CPU tensor from preprocessed images (all the same size).
torch::Tensor stack_images(const std::vector<image::FloatImage>& images);
// x / ||x|| along the last dimension (differentiable; zero rows stay zero).
torch::Tensor l2_normalize(const torch::Tensor& x);

// The bundle's image preprocessing for the image encoder (size, mean, std of bundle.json).
image::Preprocess image_preprocess(const Bundle& bundle);

}  // namespace ctok::model
