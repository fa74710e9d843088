// Narrow C API over libsentencepiece. Built as libctok_spm_shim.so, the only binary that
// links sentencepiece; the ctok library dlopen()s it with RTLD_LOCAL | RTLD_DEEPBIND so
// sentencepiece's private protobuf copy never meets libtorch's (architecture.md,
// "Known trap"). Keep it tiny: no C++ types cross this boundary.
//
// Every function that can fail takes an error buffer and writes a NUL-terminated message
// there (truncated to err_len). Memory handed out by the shim is released with
// ctok_spm_free_buffer.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CTOK_SPM_SHIM_API_VERSION 1

typedef struct ctok_spm ctok_spm;

// The API version the shim was built with; the loader refuses a different one.
int ctok_spm_api_version(void);

// Loads a .model file. Returns NULL on failure with the reason in err.
ctok_spm* ctok_spm_load(const char* path, char* err, size_t err_len);
void ctok_spm_free(ctok_spm* model);

// Encodes len bytes of UTF-8 text. On success returns the number of pieces n >= 0 and sets
// *out_ids to n ids and *out_pieces to n NUL-terminated pieces laid end to end
// (*out_pieces_len bytes in all). Both buffers must be released with
// ctok_spm_free_buffer. Returns -1 on failure with the reason in err.
int64_t ctok_spm_encode(const ctok_spm* model, const char* text, size_t len, int32_t** out_ids,
                        char** out_pieces, size_t* out_pieces_len, char* err, size_t err_len);
void ctok_spm_free_buffer(void* buffer);

// Copies the piece of id (NUL-terminated, truncated to buf_len) into buf and returns the
// piece's full length in bytes, or -1 if id is out of range.
int64_t ctok_spm_id_to_piece(const ctok_spm* model, int32_t id, char* buf, size_t buf_len);
// The id of a piece exactly as stored in the vocabulary, or -1 if there is none.
int32_t ctok_spm_piece_to_id(const ctok_spm* model, const char* piece, size_t len);

int32_t ctok_spm_vocab_size(const ctok_spm* model);
// Special ids as set in the model; -1 where the model has none.
int32_t ctok_spm_bos_id(const ctok_spm* model);
int32_t ctok_spm_eos_id(const ctok_spm* model);
int32_t ctok_spm_pad_id(const ctok_spm* model);
int32_t ctok_spm_unk_id(const ctok_spm* model);
// 1 if id is the unknown piece, a control piece (bos/eos/pad) or unused; else 0.
int ctok_spm_is_unknown(const ctok_spm* model, int32_t id);
int ctok_spm_is_control(const ctok_spm* model, int32_t id);

#ifdef __cplusplus
}  // extern "C"
#endif
