// CLIP BPE with custom-token splitting on arbitrary bytes (invalid UTF-8 included).
// Input: the text (the leading bytes); the last bytes choose a context length and an id.
// The merges file: $CTOK_CLIP_MERGES, else <shared>/clip/bpe_simple_vocab_16e6.txt.gz.
#include <fuzzer/FuzzedDataProvider.h>

#include <memory>

#include "fuzz_tokenizer.hpp"
#include "text/clip_bpe.hpp"
#include "text/unicode.hpp"

namespace {

std::unique_ptr<ctok::text::ClipBpeTokenizer> g_tok;
ctok::text::CustomTokens g_custom;  // the tokens every input is encoded with

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string merges = ctok_fuzz::env_or(
      "CTOK_CLIP_MERGES", CTOK_SHARED_DIR "/clip/bpe_simple_vocab_16e6.txt.gz");
  g_tok = std::make_unique<ctok::text::ClipBpeTokenizer>(merges);
  g_tok->set_special({49406, 49407, 49407});
  // Overlapping tokens: the longest match must win ("<a>>" over "<a>").
  int n = 0;
  for (const char* t : {"<my-dress>", "<my-dress-v2>", "<a>", "<a>>", "<\xc3\xbc-token>", "x<y"})
    n += ctok_fuzz::run_guarded([&] { g_custom.add(*g_tok, t); });
  CTOK_FUZZ_CHECK(n >= 4, "custom tokens could not be registered");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ctok::text;
  FuzzedDataProvider in(data, size);
  const int64_t ctx = in.ConsumeIntegralInRange<int64_t>(-1, 96);
  const int64_t any_id = in.ConsumeIntegralInRange<int64_t>(-2, 49420);
  const std::string text = in.ConsumeRemainingBytesAsString();

  // Unicode layer: replacement decoding always gives valid UTF-8; valid input round-trips.
  const std::u32string cps = unicode::decode_utf8(text);
  const std::string re = unicode::encode_utf8(cps);
  CTOK_FUZZ_CHECK(unicode::is_valid_utf8(re), "decode_utf8 produced an invalid code point");
  if (unicode::is_valid_utf8(text)) CTOK_FUZZ_CHECK(re == text, "valid UTF-8 did not round-trip");
  (void)unicode::to_lower(cps);
  (void)unicode::html_unescape(cps);
  (void)unicode::whitespace_clean(cps);

  g_tok->clear_cache();  // each input replays alone, whatever ran before
  ctok_fuzz::run_guarded([&] {
    for (const std::string& w : g_tok->pre_tokenize(text)) CTOK_FUZZ_CHECK(!w.empty(), "empty pre-token");
  });
  ctok_fuzz::run_guarded([&] {
    for (int64_t id : g_tok->encode_plain(text)) {
      CTOK_FUZZ_CHECK(id >= 0 && id < g_tok->vocab_size(), "plain id outside the vocabulary");
      (void)g_tok->id_to_piece(id);
    }
  });
  ctok_fuzz::run_guarded([&] { (void)g_tok->id_to_piece(any_id); });
  ctok_fuzz::run_guarded([&] { (void)g_tok->piece_to_id(text); });
  ctok_fuzz::check_split(*g_tok, g_custom, text);
  ctok_fuzz::check_encoding(*g_tok, g_custom, text, ctx);
  ctok_fuzz::fuzz_custom_tokens(text, ctx);
  return 0;
}
