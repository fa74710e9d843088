// The safetensors reader (token files, reference.safetensors, feature caches) on arbitrary
// bytes. What it accepts must be self-consistent, convert without reading out of bounds,
// and survive serialize -> parse unchanged.
#include <cstring>

#include "ctok/core/safetensors.hpp"
#include "fuzz_common.hpp"

namespace {

bool same(const ctok::SafetensorsFile& a, const ctok::SafetensorsFile& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (const auto& [name, t] : a.tensors) {
    const ctok::TensorData* u = b.find(name);
    if (u == nullptr || u->dtype != t.dtype || u->shape != t.shape || u->bytes != t.bytes) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A private copy of exactly `size` bytes, so ASan sees any read past the end.
  std::vector<uint8_t> bytes(data, data + size);
  ctok::SafetensorsFile f;
  if (!ctok_fuzz::run_guarded([&] { f = ctok::parse_safetensors(bytes.data(), bytes.size(), "fuzz.safetensors"); }))
    return 0;
  for (const auto& [name, tensor] : f.tensors) {
    const ctok::TensorData& t = tensor;  // a plain reference: lambdas cannot capture bindings
    CTOK_FUZZ_CHECK(t.numel() >= 0, "negative element count");
    CTOK_FUZZ_CHECK(static_cast<uint64_t>(t.numel()) * ctok::dtype_size(t.dtype) == t.bytes.size(),
                    "bytes do not match dtype and shape");
    CTOK_FUZZ_CHECK(f.find(name) == &t, "find() misses a tensor");
    if (t.dtype != ctok::DType::kBool) {
      const std::vector<float> v = ctok::to_float32(t);
      CTOK_FUZZ_CHECK(static_cast<int64_t>(v.size()) == t.numel(), "to_float32 size");
    }
    ctok_fuzz::run_guarded([&] {
      const std::vector<int64_t> v = ctok::to_int64(t);
      CTOK_FUZZ_CHECK(static_cast<int64_t>(v.size()) == t.numel(), "to_int64 size");
    });
  }
  std::vector<uint8_t> again;
  CTOK_FUZZ_CHECK(ctok_fuzz::run_guarded([&] { again = ctok::serialize_safetensors(f); }),
                  "an accepted file cannot be written back");
  ctok::SafetensorsFile g;
  CTOK_FUZZ_CHECK(ctok_fuzz::run_guarded([&] { g = ctok::parse_safetensors(again.data(), again.size(), "again"); }),
                  "a written file cannot be read back");
  CTOK_FUZZ_CHECK(same(f, g), "serialize -> parse changed the contents");
  return 0;
}
