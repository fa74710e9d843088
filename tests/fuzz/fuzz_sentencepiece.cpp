// SentencePiece (through the dlopen'ed shim) with custom-token splitting on arbitrary bytes.
// Input: the text (the leading bytes); the last bytes choose a context length and an id.
// The shim: $CTOK_SPM_SHIM (the fuzz build's own by default); the model: $CTOK_SPM_MODEL,
// else the fixture bundle's tokenizer.model.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdlib>
#include <memory>

#include "fuzz_tokenizer.hpp"

namespace {

std::unique_ptr<ctok::text::Tokenizer> g_tok;
ctok::text::CustomTokens g_custom;  // the tokens every input is encoded with

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::getenv("CTOK_SPM_SHIM") == nullptr) ::setenv("CTOK_SPM_SHIM", CTOK_FUZZ_SHIM, 1);
  const std::string model =
      ctok_fuzz::env_or("CTOK_SPM_MODEL", CTOK_SOURCE_DIR "/tests/data/tiny_bundle/tokenizer.model");
  g_tok = ctok::text::load_sentencepiece(model);
  int n = 0;
  for (const char* t : {"<my-dress>", "<my-dress-v2>", "<a>", "<a>>", "<\xc3\xbc-token>", "x<y"})
    n += ctok_fuzz::run_guarded([&] { g_custom.add(*g_tok, t); });
  CTOK_FUZZ_CHECK(n >= 4, "custom tokens could not be registered");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const int64_t ctx = in.ConsumeIntegralInRange<int64_t>(-1, 96);
  const int64_t any_id = in.ConsumeIntegralInRange<int64_t>(-2, 100);
  const std::string text = in.ConsumeRemainingBytesAsString();

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
  return 0;
}
