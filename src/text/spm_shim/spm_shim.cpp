// The SentencePiece shim (see spm_shim.h). Built with hidden visibility; only the
// functions below are exported.
#include "text/spm_shim/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#define CTOK_SHIM_EXPORT __attribute__((visibility("default")))

struct ctok_spm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void set_error(char* err, size_t err_len, const std::string& message) {
  if (err == nullptr || err_len == 0) return;
  const size_t n = message.size() < err_len - 1 ? message.size() : err_len - 1;
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

}  // namespace

extern "C" {

CTOK_SHIM_EXPORT int ctok_spm_api_version(void) { return CTOK_SPM_SHIM_API_VERSION; }

CTOK_SHIM_EXPORT ctok_spm* ctok_spm_load(const char* path, char* err, size_t err_len) {
  try {
    auto* model = new ctok_spm;
    const auto status = model->processor.Load(path);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      delete model;
      return nullptr;
    }
    return model;
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("sentencepiece: ") + e.what());
  } catch (...) {
    set_error(err, err_len, "sentencepiece: unknown exception");
  }
  return nullptr;
}

CTOK_SHIM_EXPORT void ctok_spm_free(ctok_spm* model) { delete model; }

CTOK_SHIM_EXPORT int64_t ctok_spm_encode(const ctok_spm* model, const char* text, size_t len,
                                         int32_t** out_ids, char** out_pieces, size_t* out_pieces_len,
                                         char* err, size_t err_len) {
  *out_ids = nullptr;
  *out_pieces = nullptr;
  *out_pieces_len = 0;
  try {
    sentencepiece::ImmutableSentencePieceText spt;
    const auto status = model->processor.Encode(std::string_view(text, len), spt.mutable_proto());
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      return -1;
    }
    const auto all = spt.pieces();
    const size_t n = all.size();
    size_t total = 0;
    for (const auto& p : all) total += p.piece().size() + 1;
    auto* ids = static_cast<int32_t*>(std::malloc((n ? n : 1) * sizeof(int32_t)));
    auto* pieces = static_cast<char*>(std::malloc(total ? total : 1));
    if (ids == nullptr || pieces == nullptr) {
      std::free(ids);
      std::free(pieces);
      set_error(err, err_len, "out of memory");
      return -1;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; ++i) {
      const auto& p = all[i];
      ids[i] = static_cast<int32_t>(p.id());
      std::memcpy(pieces + at, p.piece().data(), p.piece().size());
      at += p.piece().size();
      pieces[at++] = '\0';
    }
    *out_ids = ids;
    *out_pieces = pieces;
    *out_pieces_len = total;
    return static_cast<int64_t>(n);
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("sentencepiece: ") + e.what());
  } catch (...) {
    set_error(err, err_len, "sentencepiece: unknown exception");
  }
  return -1;
}

CTOK_SHIM_EXPORT void ctok_spm_free_buffer(void* buffer) { std::free(buffer); }

CTOK_SHIM_EXPORT int64_t ctok_spm_id_to_piece(const ctok_spm* model, int32_t id, char* buf, size_t buf_len) {
  if (id < 0 || id >= model->processor.GetPieceSize()) return -1;
  const std::string& piece = model->processor.IdToPiece(id);
  set_error(buf, buf_len, piece);
  return static_cast<int64_t>(piece.size());
}

CTOK_SHIM_EXPORT int32_t ctok_spm_piece_to_id(const ctok_spm* model, const char* piece, size_t len) {
  const std::string_view p(piece, len);
  const int id = model->processor.PieceToId(p);
  // PieceToId answers unk_id for unknown pieces; only the unk piece itself maps there.
  if (id < 0 || (id == model->processor.unk_id() && model->processor.IdToPiece(id) != p)) return -1;
  return id;
}

CTOK_SHIM_EXPORT int32_t ctok_spm_vocab_size(const ctok_spm* model) {
  return model->processor.GetPieceSize();
}
CTOK_SHIM_EXPORT int32_t ctok_spm_bos_id(const ctok_spm* model) { return model->processor.bos_id(); }
CTOK_SHIM_EXPORT int32_t ctok_spm_eos_id(const ctok_spm* model) { return model->processor.eos_id(); }
CTOK_SHIM_EXPORT int32_t ctok_spm_pad_id(const ctok_spm* model) { return model->processor.pad_id(); }
CTOK_SHIM_EXPORT int32_t ctok_spm_unk_id(const ctok_spm* model) { return model->processor.unk_id(); }

CTOK_SHIM_EXPORT int ctok_spm_is_unknown(const ctok_spm* model, int32_t id) {
  if (id < 0 || id >= model->processor.GetPieceSize()) return 1;
  return model->processor.IsUnknown(id) || model->processor.IsUnused(id) ? 1 : 0;
}
CTOK_SHIM_EXPORT int ctok_spm_is_control(const ctok_spm* model, int32_t id) {
  if (id < 0 || id >= model->processor.GetPieceSize()) return 0;
  return model->processor.IsControl(id) ? 1 : 0;
}

}  // extern "C"
