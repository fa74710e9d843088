// bundle.json validation on arbitrary bytes: strict JSON parsing, then the manifest rules.
// Bundles are trusted as a whole (TorchScript is code), but the manifest is read before
// anything runs and must refuse nonsense with a message, never crash.
#include "ctok/core/json.hpp"
#include "ctok/model/manifest.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j;
  if (!ctok_fuzz::run_guarded([&] { j = ctok::json::parse_string(text, "bundle.json"); })) return 0;
  (void)ctok::json::describe(j);
  ctok::model::Manifest m;
  if (!ctok_fuzz::run_guarded([&] { m = ctok::model::parse_manifest(j, "/nonexistent-bundle", "bundle.json"); }))
    return 0;
  CTOK_FUZZ_CHECK(m.version == ctok::model::kBundleVersion, "accepted another version");
  CTOK_FUZZ_CHECK(m.text.context_length > 0 && m.text.width > 0 && m.text.vocab_size > 0,
                  "accepted non-positive text sizes");
  CTOK_FUZZ_CHECK(!m.tokenizer.file.empty() && !m.text.file.empty() && !m.image.file.empty(),
                  "accepted a manifest without its required files");
  (void)m.tokenizer_spec();
  for (const auto& [key, file] : m.files()) {
    CTOK_FUZZ_CHECK(!key.empty() && !file.empty(), "empty file entry");
    (void)m.path_of(file);
  }
  return 0;
}
