#include "ctok/token/subspace.hpp"

#include "ctok/core/error.hpp"

namespace ctok::token {

namespace {

std::vector<int64_t> word_ids(const model::Bundle& bundle, const std::string& word) {
  if (word.find_first_not_of(" \t\r\n") == std::string::npos) throw bad_input("an empty word has no embedding");
  std::vector<int64_t> ids = bundle.tokenizer().encode_plain(word);
  if (ids.empty()) throw bad_input("the word \"" + word + "\" encodes to no piece");
  return ids;
}

// The piece without the word-boundary markers of SentencePiece ("\u2581") and CLIP BPE ("</w>").
std::string bare_piece(std::string p) {
  const std::string sp = "\xE2\x96\x81";
  if (p.compare(0, sp.size(), sp) == 0) p = p.substr(sp.size());
  if (p.size() >= 4 && p.compare(p.size() - 4, 4, "</w>") == 0) p = p.substr(0, p.size() - 4);
  return p;
}

std::size_t utf8_length(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

torch::Tensor word_embedding(const model::Bundle& bundle, const std::string& word) {
  const auto ids = word_ids(bundle, word);
  const torch::Tensor& table = bundle.token_embedding();
  auto index = torch::tensor(ids, torch::kLong).to(table.device());
  return table.index_select(0, index).to(torch::kFloat32).mean(0);
}

bool tokenizer_knows(const model::Bundle& bundle, const std::string& word) {
  const auto ids = word_ids(bundle, word);
  bool has_long_piece = false;
  for (int64_t id : ids) {
    const std::string piece = bundle.tokenizer().id_to_piece(id);
    if (piece == "<unk>" || piece == "<|unk|>") return false;
    if (utf8_length(bare_piece(piece)) >= 2) has_long_piece = true;
  }
  return has_long_piece || ids.size() == 1;
}

double mean_vocab_norm(const model::Bundle& bundle) {
  torch::NoGradGuard no_grad;
  return bundle.token_embedding().to(torch::kFloat64).norm(2, 1).mean().item<double>();
}

Subspace build_subspace(const model::Bundle& bundle, const std::vector<std::string>& words, const SubspaceOptions& options) {
  torch::NoGradGuard no_grad;
  Subspace s;
  std::vector<torch::Tensor> rows;
  for (const auto& w : words) {
    if (std::find(s.words.begin(), s.words.end(), w) != s.words.end()) continue;
    if (options.drop_unknown && !tokenizer_knows(bundle, w)) {
      s.dropped.push_back(w);
      continue;
    }
    s.words.push_back(w);
    rows.push_back(word_embedding(bundle, w).to(torch::kFloat64));
  }
  if (rows.empty()) {
    throw bad_input("no attribute word is left to span the subspace")
        .found(std::to_string(s.dropped.size()) + " words dropped as unknown to the tokenizer");
  }
  // B^T = U S V^T: the columns of U with a singular value above tolerance span the rows of B.
  torch::Tensor bt = torch::stack(rows).t().cpu().contiguous();  // [W, n]
  auto svd = torch::linalg::svd(bt, /*full_matrices=*/false, c10::nullopt);
  const torch::Tensor u = std::get<0>(svd), sv = std::get<1>(svd);
  const double top = sv.numel() ? sv[0].item<double>() : 0.0;
  int64_t k = 0;
  for (int64_t i = 0; i < sv.size(0); ++i)
    if (sv[i].item<double>() > options.tolerance * top) ++k;
  if (k == 0 || top <= 0) throw bad_input("the attribute words' embeddings span no direction (all zero)");
  s.basis = u.slice(1, 0, k).to(torch::kFloat32).contiguous().to(bundle.token_embedding().device());
  return s;
}

torch::Tensor project(const Subspace& s, const torch::Tensor& v) {
  return torch::matmul(v.to(s.basis.device(), torch::kFloat32), s.basis);
}

torch::Tensor expand(const Subspace& s, const torch::Tensor& c) { return torch::matmul(c, s.basis.t()); }

}  // namespace ctok::token
