// Tokenizers: CLIP BPE (identical to OpenAI's, id for id) and SentencePiece, behind one
// interface, with custom tokens ("<my-dress>") split out before ordinary tokenisation
// and mapped to reserved ids beyond the vocabulary.
//
//   auto tok = ctok::text::load_tokenizer("clip-bpe:bpe_simple_vocab_16e6.txt.gz");
//   ctok::text::CustomTokens custom;                          // one request's table
//   int64_t id = custom.add(*tok, "<my-dress>");              // id >= tok->vocab_size()
//   ctok::text::Encoding e = tok->encode("a photo of a <my-dress> dress", 77, custom);
//   // e.ids: bos ... eos pad...; e.eos_index; e.custom = {{5, "<my-dress>"}}
//
// The tokenizer itself holds no custom tokens and never changes after loading: one
// tokenizer (and the bundle holding it) serves many concurrent requests, each with its own
// table, where the same string may stand for different vectors.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ctok::text {

struct Encoding {
  std::vector<int64_t> ids;         // exactly context_length ids: bos, tokens, eos, then pad
  std::vector<std::string> pieces;  // one per id up to and including eos (no padding)
  int64_t eos_index = 0;            // position of eos in ids
  int64_t truncated = 0;            // tokens dropped to fit context_length (0 if none)
  // Positions of custom tokens in ids, with their token strings, in order.
  std::vector<std::pair<int64_t, std::string>> custom;
};

struct SpecialIds {
  int64_t bos = -1, eos = -1, pad = -1;
};

// A piece of text between custom tokens, or one custom token (custom_id >= 0).
struct Segment {
  std::string text;
  int64_t custom_id = -1;
};

class Tokenizer;

// The custom token strings of one request, in order: the k-th has the reserved id
// vocab_size() + k of the tokenizer it was built against. A plain value, cheap to copy.
class CustomTokens {
 public:
  // Registers `token` (checked with tok.check_custom_token); returns its reserved id. The
  // same string twice returns the same id. All adds must use tokenizers of one vocab size.
  int64_t add(const Tokenizer& tok, const std::string& token);
  int64_t id(const std::string& token) const;          // -1 if not in the table
  const std::string* token(int64_t id) const;          // nullptr if id is not a custom id here
  const std::vector<std::string>& tokens() const { return tokens_; }
  bool empty() const { return tokens_.empty(); }
  size_t size() const { return tokens_.size(); }

 private:
  int64_t first_id_ = 0;
  std::vector<std::string> tokens_;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Ordinary tokenisation of text without custom tokens: no bos/eos.
  virtual std::vector<int64_t> encode_plain(const std::string& text) const = 0;
  virtual std::string id_to_piece(int64_t id) const = 0;  // ordinary ids only (bad_input otherwise)
  // The id of a piece exactly as stored in the vocabulary, or -1.
  virtual int64_t piece_to_id(const std::string& piece) const = 0;
  virtual int64_t vocab_size() const = 0;  // ordinary vocabulary; custom ids start here
  virtual std::string type() const = 0;    // "clip-bpe" or "sentencepiece"

  const SpecialIds& special() const { return special_; }
  void set_special(SpecialIds ids) { special_ = ids; }

  // Whether `token` can be a custom token: bad_input if the string is empty, not UTF-8,
  // contains whitespace, or the tokenizer already knows it as a single piece.
  void check_custom_token(const std::string& token) const;

  // Full encoding: the table's custom tokens split out, bos + tokens + eos, truncated (eos
  // kept) and padded to context_length. A special id < 0 is left out (e.g. a SentencePiece
  // model without bos); without eos, eos_index is the last kept position.
  // Throws bad_input if context_length cannot hold bos and eos.
  Encoding encode(const std::string& text, int64_t context_length, const CustomTokens& custom = {}) const;

  // The text cut at the table's custom tokens (exact string match anywhere, the longest
  // token first where several start at one place), in order; text between them is
  // tokenised on its own by encode_plain.
  std::vector<Segment> split_custom(const std::string& text, const CustomTokens& custom) const;

 protected:
  // Why `token` is already one ordinary piece (for the error message), or "" if it is
  // not. The default: encode_plain(token) gives a single id.
  virtual std::string known_as_single_piece(const std::string& token) const;

 private:
  SpecialIds special_;
};

// CLIP BPE from a bpe_simple_vocab_16e6.txt.gz merges file (read directly from the .gz).
// bos 49406 "<|startoftext|>", eos 49407 "<|endoftext|>", pad defaults to eos.
std::unique_ptr<Tokenizer> load_clip_bpe(const std::string& path);
// SentencePiece .model file, through the dlopen'ed shim; special ids from the model
// unless given (>= 0) in `special`.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path, SpecialIds special = {});
// "clip-bpe:FILE" or "sentencepiece:FILE".
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

}  // namespace ctok::text
