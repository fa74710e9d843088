// SentencePiece tokenizer over the dlopen'ed shim; private to the library (public entry
// point: load_sentencepiece in ctok/text/tokenizer.hpp). Exposed for tests and bench.
#pragma once

#include <string>
#include <vector>

#include "ctok/text/tokenizer.hpp"

struct ctok_spm;

namespace ctok::text {

namespace detail {
struct SpmShimApi;  // the shim's function table (sentencepiece_tokenizer.cpp)
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, SpecialIds special);
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode_plain(const std::string& text) const override;
  std::string id_to_piece(int64_t id) const override;
  int64_t piece_to_id(const std::string& piece) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  std::string type() const override { return "sentencepiece"; }

  struct Pieces {
    std::vector<int64_t> ids;
    std::vector<std::string> pieces;  // as SentencePiece reports them (unknown text kept)
  };
  Pieces encode_with_pieces(const std::string& text) const;

  // Where the shim was loaded from (loads it if needed; runtime_failure if it cannot).
  static std::string shim_path();

 protected:
  std::string known_as_single_piece(const std::string& token) const override;

 private:
  const detail::SpmShimApi* api_ = nullptr;
  ctok_spm* model_ = nullptr;
  std::string path_;
  int64_t vocab_size_ = 0;
  int64_t unk_ = -1;
};

}  // namespace ctok::text
