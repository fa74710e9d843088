// CLIP's byte-level BPE (OpenAI simple_tokenizer.py), private to the library; the
// public entry point is load_clip_bpe() in ctok/text/tokenizer.hpp. Exposed here for the
// tests and bench (cache control, pre-tokenisation).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ctok/text/tokenizer.hpp"

namespace ctok::text {

class ClipBpeTokenizer final : public Tokenizer {
 public:
  // Reads a bpe_simple_vocab_16e6.txt(.gz) merges file; bad_input naming the file if it
  // is missing, truncated, not UTF-8 or not a merges list of the expected length.
  explicit ClipBpeTokenizer(const std::string& path);

  std::vector<int64_t> encode_plain(const std::string& text) const override;
  std::string id_to_piece(int64_t id) const override;
  int64_t piece_to_id(const std::string& piece) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  std::string type() const override { return "clip-bpe"; }

  // basic_clean + whitespace_clean + lower + the pre-split regex: the words BPE sees.
  std::vector<std::string> pre_tokenize(const std::string& text) const;
  // The BPE cache (word -> ids) is shared by all threads; the bench clears it.
  void clear_cache() const;
  size_t cache_size() const;

  static constexpr int kMerges = 49152 - 256 - 2;  // as simple_tokenizer.py slices them

 private:
  std::vector<int32_t> bpe(const std::string& word) const;

  std::vector<std::string> vocab_;                    // id -> piece
  std::unordered_map<std::string, int32_t> encoder_;  // piece -> id (last one wins)
  struct Merge {
    int32_t rank, merged;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> merge
  std::array<int32_t, 256> byte_id_{};          // byte -> id of its symbol
  std::array<int32_t, 256> byte_end_id_{};      // byte -> id of symbol + '</w>'
  int32_t sot_ = -1, eot_ = -1;

  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace ctok::text
