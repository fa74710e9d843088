// safetensors reader/writer. Files are untrusted: every length, offset, dtype and shape
// is checked against the bytes actually present before anything is read.
//
//   ctok::SafetensorsFile f = ctok::read_safetensors("x.safetensors");
//   const ctok::TensorData* t = f.find("text.features");   // nullptr if absent
//   std::vector<float> v = ctok::to_float32(*t);
//   ctok::write_safetensors("y.safetensors", f);             // atomic
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ctok {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

std::size_t dtype_size(DType dtype);
std::string dtype_name(DType dtype);                // "F32", "I64", ...
DType dtype_from_name(const std::string& name);     // throws bad_input on unknown names

struct TensorData {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // C order, little endian, exactly numel * dtype_size bytes

  int64_t numel() const;
};

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::map<std::string, TensorData> tensors;

  const TensorData* find(const std::string& name) const;
};

// Parse from memory; `origin` names the source in error messages. Checks: header length
// against the size (and <= 100 MB), header is a JSON object without duplicate keys, every
// entry has exactly dtype/shape/data_offsets, known dtype, non-negative dims, numel *
// dtype size (overflow-checked) == end - begin, and the tensors tile the data section
// exactly (no overlap, no gap, no trailing bytes); __metadata__ is string -> string.
// Every violation throws ctok::Error of kind bad_input.
SafetensorsFile parse_safetensors(const uint8_t* data, std::size_t size, const std::string& origin);
SafetensorsFile read_safetensors(const std::string& path);
std::vector<uint8_t> serialize_safetensors(const SafetensorsFile& file);
// Keys sorted, __metadata__ first (omitted when empty), header padded with spaces to
// 8-byte alignment. Atomic: temporary file in the same directory, fsync, rename.
void write_safetensors(const std::string& path, const SafetensorsFile& file);

// Convenience constructors/converters.
TensorData make_f32(std::vector<int64_t> shape, const float* values);
TensorData make_i64(std::vector<int64_t> shape, const int64_t* values);
// Any dtype: copies numel * dtype_size bytes from `data` (little endian, C order).
TensorData make_tensor(DType dtype, std::vector<int64_t> shape, const void* data);
// Scalar conversions of the 16-bit float formats (bit patterns as stored).
float f16_to_float(uint16_t bits);
float bf16_to_float(uint16_t bits);
// F32/F16/BF16/F64 and integer types converted to float32; throws on bool.
std::vector<float> to_float32(const TensorData& tensor);
std::vector<int64_t> to_int64(const TensorData& tensor);  // integer dtypes only

}  // namespace ctok
