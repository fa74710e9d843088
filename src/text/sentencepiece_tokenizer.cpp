// SentencePiece through the dlopen'ed shim (src/text/spm_shim/). sentencepiece is never
// linked into the ctok library or an executable: its private protobuf copy and libtorch's
// libprotobuf crash the process before main (architecture.md, "Known trap").
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/text/tokenizer.hpp"
#include "text/sentencepiece_tokenizer.hpp"
#include "text/spm_shim/spm_shim.h"

#if defined(__SANITIZE_ADDRESS__)
#define CTOK_ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CTOK_ASAN_BUILD 1
#endif
#endif
#ifndef CTOK_ASAN_BUILD
#define CTOK_ASAN_BUILD 0
#endif

namespace ctok::text {
namespace detail {

struct SpmShimApi {
  decltype(&ctok_spm_api_version) api_version = nullptr;
  decltype(&ctok_spm_load) load = nullptr;
  decltype(&ctok_spm_free) free_model = nullptr;
  decltype(&ctok_spm_encode) encode = nullptr;
  decltype(&ctok_spm_free_buffer) free_buffer = nullptr;
  decltype(&ctok_spm_id_to_piece) id_to_piece = nullptr;
  decltype(&ctok_spm_piece_to_id) piece_to_id = nullptr;
  decltype(&ctok_spm_vocab_size) vocab_size = nullptr;
  decltype(&ctok_spm_bos_id) bos_id = nullptr;
  decltype(&ctok_spm_eos_id) eos_id = nullptr;
  decltype(&ctok_spm_pad_id) pad_id = nullptr;
  decltype(&ctok_spm_unk_id) unk_id = nullptr;
  decltype(&ctok_spm_is_unknown) is_unknown = nullptr;
  decltype(&ctok_spm_is_control) is_control = nullptr;
  std::string path;
};

}  // namespace detail
namespace {

using ShimApi = detail::SpmShimApi;
constexpr const char* kShimName = "libctok_spm_shim.so";

template <typename F>
bool bind(void* handle, const char* name, F& fn, std::string& error) {
  fn = reinterpret_cast<F>(::dlsym(handle, name));
  if (fn == nullptr) error = std::string("missing symbol ") + name;
  return fn != nullptr;
}

bool open_shim(const std::string& path, ShimApi& api, std::string& error) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    error = "not found";
    return false;
  }
  ::dlerror();
#if CTOK_ASAN_BUILD
  // AddressSanitizer aborts on RTLD_DEEPBIND (google/sanitizers#611), and without it the
  // shim's protobuf meets libtorch's again. A separate link namespace isolates the shim
  // at least as well; used only in sanitizer builds (scripts/sanitize.sh, tests/fuzz).
  void* handle = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
  if (handle == nullptr) {
    const char* e = ::dlerror();
    error = e != nullptr ? e : "dlopen failed";
    return false;
  }
  const bool ok = bind(handle, "ctok_spm_api_version", api.api_version, error) &&
                  bind(handle, "ctok_spm_load", api.load, error) &&
                  bind(handle, "ctok_spm_free", api.free_model, error) &&
                  bind(handle, "ctok_spm_encode", api.encode, error) &&
                  bind(handle, "ctok_spm_free_buffer", api.free_buffer, error) &&
                  bind(handle, "ctok_spm_id_to_piece", api.id_to_piece, error) &&
                  bind(handle, "ctok_spm_piece_to_id", api.piece_to_id, error) &&
                  bind(handle, "ctok_spm_vocab_size", api.vocab_size, error) &&
                  bind(handle, "ctok_spm_bos_id", api.bos_id, error) &&
                  bind(handle, "ctok_spm_eos_id", api.eos_id, error) &&
                  bind(handle, "ctok_spm_pad_id", api.pad_id, error) &&
                  bind(handle, "ctok_spm_unk_id", api.unk_id, error) &&
                  bind(handle, "ctok_spm_is_unknown", api.is_unknown, error) &&
                  bind(handle, "ctok_spm_is_control", api.is_control, error);
  if (ok && api.api_version() != CTOK_SPM_SHIM_API_VERSION) {
    error = "API version " + std::to_string(api.api_version()) + ", expected " +
            std::to_string(CTOK_SPM_SHIM_API_VERSION);
    ::dlclose(handle);
    return false;
  }
  if (!ok) {
    ::dlclose(handle);
    return false;
  }
  api.path = path;
  return true;  // the handle stays open for the life of the process
}

// Loaded once per process; a failure is remembered and reported again on later calls.
const ShimApi& shim() {
  static std::once_flag once;
  static ShimApi api;
  static std::string failure;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("CTOK_SPM_SHIM"); env != nullptr && *env != '\0') {
      candidates.push_back(env);  // an explicit choice is the only one tried
    } else {
      if (const std::string dir = executable_dir(); !dir.empty()) candidates.push_back(dir + "/../lib/" + kShimName);
#ifdef CTOK_INSTALL_LIBDIR
      candidates.push_back(std::string(CTOK_INSTALL_LIBDIR) + "/" + kShimName);
#endif
#ifdef CTOK_SHIM_BUILD_PATH
      candidates.push_back(CTOK_SHIM_BUILD_PATH);
#endif
    }
    std::string tried;
    for (const std::string& path : candidates) {
      std::string error;
      if (open_shim(path, api, error)) return;
      tried += "\n  " + path + ": " + error;
    }
    failure = "cannot load the SentencePiece shim " + std::string(kShimName) +
              " (set CTOK_SPM_SHIM to its path); tried:" + tried;
  });
  if (api.load == nullptr) throw runtime_failure(failure);
  return api;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path, SpecialIds special)
    : api_(&shim()), path_(path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw bad_input("cannot open the SentencePiece model").file(path);
  if (!S_ISREG(st.st_mode)) throw bad_input("the SentencePiece model is not a regular file").file(path);
  char err[1024] = {0};
  model_ = api_->load(path.c_str(), err, sizeof err);
  if (model_ == nullptr) throw bad_input("not a valid SentencePiece model").file(path).found(err);
  vocab_size_ = api_->vocab_size(model_);
  unk_ = api_->unk_id(model_);
  SpecialIds sp;
  sp.bos = special.bos >= 0 ? special.bos : api_->bos_id(model_);
  sp.eos = special.eos >= 0 ? special.eos : api_->eos_id(model_);
  sp.pad = special.pad >= 0 ? special.pad : api_->pad_id(model_);
  if (sp.pad < 0) sp.pad = 0;  // a model without a pad piece: pad with id 0
  for (const int64_t id : {sp.bos, sp.eos, sp.pad})
    if (id >= vocab_size_)
      throw bad_input("special id beyond the SentencePiece vocabulary")
          .file(path)
          .expected("< " + std::to_string(vocab_size_))
          .found(std::to_string(id));
  set_special(sp);
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (model_ != nullptr) api_->free_model(model_);
}

SentencePieceTokenizer::Pieces SentencePieceTokenizer::encode_with_pieces(const std::string& text) const {
  int32_t* ids = nullptr;
  char* pieces = nullptr;
  size_t pieces_len = 0;
  char err[1024] = {0};
  const int64_t n =
      api_->encode(model_, text.data(), text.size(), &ids, &pieces, &pieces_len, err, sizeof err);
  if (n < 0) throw runtime_failure("SentencePiece failed to encode text").file(path_).found(err);
  Pieces out;
  out.ids.assign(ids, ids + n);
  size_t at = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string piece(pieces + at);
    at += piece.size() + 1;
    out.pieces.push_back(piece);
  }
  api_->free_buffer(ids);
  api_->free_buffer(pieces);
  return out;
}

std::vector<int64_t> SentencePieceTokenizer::encode_plain(const std::string& text) const {
  return encode_with_pieces(text).ids;
}

std::string SentencePieceTokenizer::id_to_piece(int64_t id) const {
  if (id < 0 || id >= vocab_size_)
    throw bad_input("token id out of range")
        .expected("0.." + std::to_string(vocab_size_ - 1))
        .found(std::to_string(id));
  char buf[256];
  const int64_t len = api_->id_to_piece(model_, static_cast<int32_t>(id), buf, sizeof buf);
  if (len < static_cast<int64_t>(sizeof buf)) return std::string(buf, static_cast<size_t>(len));
  std::string big(static_cast<size_t>(len) + 1, '\0');
  api_->id_to_piece(model_, static_cast<int32_t>(id), big.data(), big.size());
  big.resize(static_cast<size_t>(len));
  return big;
}

int64_t SentencePieceTokenizer::piece_to_id(const std::string& piece) const {
  return api_->piece_to_id(model_, piece.data(), piece.size());
}

std::string SentencePieceTokenizer::known_as_single_piece(const std::string& token) const {
  if (const int64_t id = piece_to_id(token); id >= 0)
    return "it is the vocabulary piece id " + std::to_string(id);
  const std::vector<int64_t> ids = encode_plain(token);
  if (ids.size() == 1 && ids[0] != unk_ && !api_->is_unknown(model_, static_cast<int32_t>(ids[0])))
    return "it encodes to the single piece \"" + id_to_piece(ids[0]) + "\", id " + std::to_string(ids[0]);
  return {};
}

std::string SentencePieceTokenizer::shim_path() { return shim().path; }

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path, SpecialIds special) {
  return std::make_unique<SentencePieceTokenizer>(path, special);
}

}  // namespace ctok::text
