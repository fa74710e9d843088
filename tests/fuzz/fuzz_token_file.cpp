// The custom-token file reader (ctok-token/1, diffusers learned_embeds, AUTOMATIC1111
// emb_params) on arbitrary bytes, through a real file as the tools read it. What it accepts
// holds finite vectors of the announced size, and what it can write back reads back the same.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ctok/token/token_file.hpp"
#include "fuzz_common.hpp"

namespace {

std::string g_dir;

void put(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  CTOK_FUZZ_CHECK(f != nullptr, "cannot write the scratch file");
  if (size > 0) CTOK_FUZZ_CHECK(std::fwrite(data, 1, size, f) == size, "short write");
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string tmpl = ctok_fuzz::env_or("TMPDIR", "/tmp") + "/ctok-fuzz-token.XXXXXX";
  CTOK_FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
  g_dir = tmpl;
  std::atexit([] {
    std::remove((g_dir + "/fuzz-token.safetensors").c_str());
    std::remove((g_dir + "/again.safetensors").c_str());
    ::rmdir(g_dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = g_dir + "/fuzz-token.safetensors";
  put(path, data, size);
  ctok::token::TokenFile t;
  if (!ctok_fuzz::run_guarded([&] { t = ctok::token::read_token_file(path); })) return 0;
  CTOK_FUZZ_CHECK(!t.token.empty(), "empty token string accepted");
  CTOK_FUZZ_CHECK(t.n_vectors > 0 && t.width > 0, "empty token accepted");
  CTOK_FUZZ_CHECK(static_cast<int64_t>(t.vectors.size()) == t.n_vectors * t.width, "vector count");
  for (float v : t.vectors) CTOK_FUZZ_CHECK(std::isfinite(v), "non-finite vector value accepted");
  ctok_fuzz::run_guarded([&] { ctok::token::check_width(t, 24); });
  (void)ctok::token::vector_norms(t);

  std::vector<uint8_t> bytes;
  if (!ctok_fuzz::run_guarded([&] { bytes = ctok::token::serialize_token_file(t); })) return 0;
  const std::string again_path = g_dir + "/again.safetensors";
  put(again_path, bytes.data(), bytes.size());
  ctok::token::TokenFile u;
  CTOK_FUZZ_CHECK(ctok_fuzz::run_guarded([&] { u = ctok::token::read_token_file(again_path); }),
                  "a token file we wrote cannot be read back");
  CTOK_FUZZ_CHECK(u.token == t.token && u.n_vectors == t.n_vectors && u.width == t.width &&
                      u.vectors == t.vectors && u.parent == t.parent,
                  "write -> read changed the token");
  return 0;
}
