// The attribute subspace of a token (docs/method.md §1): v = Q c, Q an orthonormal basis of
// the span of the attribute words' input embeddings.
//
//   ctok::token::Subspace s = ctok::token::build_subspace(bundle, attributes.subspace_words(), {});
//   torch::Tensor c = ctok::token::project(s, ctok::token::word_embedding(bundle, "shoe"));
//   torch::Tensor v = ctok::token::expand(s, c);          // [n, width], in span(Q)
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "ctok/model/bundle.hpp"

namespace ctok::token {

struct SubspaceOptions {
  bool drop_unknown = false;  // drop words the tokenizer spells letter by letter (no piece)
  double tolerance = 1e-4;    // drop directions with singular value < tolerance * largest
};

struct Subspace {
  std::vector<std::string> words;    // the words kept, in order (they span the subspace)
  std::vector<std::string> dropped;  // words left out by drop_unknown, with the reason
  torch::Tensor basis;               // Q [width, k] float32 on the bundle's device, orthonormal columns
  int64_t dim() const { return basis.defined() ? basis.size(1) : 0; }
};

// The input embedding of a word: the mean of its pieces' rows of token_embedding
// [width] float32 on the bundle's device. bad_input for an empty word.
torch::Tensor word_embedding(const model::Bundle& bundle, const std::string& word);
// True when the tokenizer has a piece of two or more characters for part of the word (it is
// not spelled letter by letter and has no unknown piece).
bool tokenizer_knows(const model::Bundle& bundle, const std::string& word);
// The mean L2 norm of the vocabulary's embedding rows (r of the norm term).
double mean_vocab_norm(const model::Bundle& bundle);

// bad_input when no word is left or the basis is empty.
Subspace build_subspace(const model::Bundle& bundle, const std::vector<std::string>& words, const SubspaceOptions& options);
// c = Q^T v (v [n, width] or [width]) and v = c Q^T.
torch::Tensor project(const Subspace& s, const torch::Tensor& v);
torch::Tensor expand(const Subspace& s, const torch::Tensor& c);

}  // namespace ctok::token
