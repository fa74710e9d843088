#include "ctok/core/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ctok's safetensors code assumes a little-endian host"
#endif

namespace ctok {
namespace {

constexpr std::size_t kMaxHeaderBytes = 100u * 1024 * 1024;

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4}, {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},   {DType::kBool, "BOOL", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d;
  }
  throw runtime_failure("invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// numel * dtype_size, or false on overflow / negative dims.
bool byte_count(const std::vector<int64_t>& shape, std::size_t elem, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(elem), &n)) return false;
  *out = n;
  return true;
}

// A JSON integer as a non-negative int64, or an error naming the tensor and field.
int64_t non_negative(const json::Json& v, const std::string& origin, const std::string& where) {
  if (!v.is_number_integer()) {
    throw bad_input("not an integer").file(origin).key(where).found(json::describe(v));
  }
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw bad_input("value too large").file(origin).key(where).found(std::to_string(u));
    }
    return static_cast<int64_t>(u);
  }
  int64_t s = v.get<int64_t>();
  if (s < 0) throw bad_input("negative value").file(origin).key(where).found(std::to_string(s));
  return s;
}

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      mantissa &= 0x3ffu;
      bits = sign | (exponent << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / nan
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename T>
void convert_all(const TensorData& t, std::vector<float>* out) {
  const std::size_t n = t.bytes.size() / sizeof(T);
  out->resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, t.bytes.data() + i * sizeof(T), sizeof(T));
    (*out)[i] = static_cast<float>(v);
  }
}

template <typename T>
void convert_all_i64(const TensorData& t, std::vector<int64_t>* out) {
  const std::size_t n = t.bytes.size() / sizeof(T);
  out->resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, t.bytes.data() + i * sizeof(T), sizeof(T));
    (*out)[i] = static_cast<int64_t>(v);
  }
}

void check_consistent(const std::string& name, const TensorData& t) {
  uint64_t expected = 0;
  if (!byte_count(t.shape, dtype_size(t.dtype), &expected)) {
    throw bad_input("invalid shape " + shape_text(t.shape)).key(name);
  }
  if (expected != t.bytes.size()) {
    throw bad_input("tensor bytes do not match dtype and shape " + dtype_name(t.dtype) + " " + shape_text(t.shape))
        .key(name)
        .expected(std::to_string(expected) + " bytes")
        .found(std::to_string(t.bytes.size()) + " bytes");
  }
}

}  // namespace

std::size_t dtype_size(DType dtype) { return info(dtype).size; }
std::string dtype_name(DType dtype) { return info(dtype).name; }

DType dtype_from_name(const std::string& name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return d.dtype;
  }
  throw bad_input("unknown dtype \"" + name + "\"")
      .expected("one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
}

int64_t TensorData::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorData* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

SafetensorsFile parse_safetensors(const uint8_t* data, std::size_t size, const std::string& origin) {
  if (size < 8) {
    throw bad_input("not a safetensors file: too short for the 8-byte header length")
        .file(origin)
        .found(std::to_string(size) + " bytes");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > size - 8) {
    throw bad_input("safetensors header length exceeds the file size")
        .file(origin)
        .expected("<= " + std::to_string(size - 8))
        .found(std::to_string(header_len));
  }
  if (header_len > kMaxHeaderBytes) {
    throw bad_input("safetensors header is implausibly large")
        .file(origin)
        .expected("<= " + std::to_string(kMaxHeaderBytes) + " bytes")
        .found(std::to_string(header_len));
  }
  if (header_len < 2 || data[8] != '{') {
    throw bad_input("safetensors header is not a JSON object").file(origin);
  }
  const std::string header_text(reinterpret_cast<const char*>(data + 8), static_cast<std::size_t>(header_len));
  json::Json header = json::parse_string(header_text, origin + " (safetensors header)");
  if (!header.is_object()) throw bad_input("safetensors header is not a JSON object").file(origin);

  const uint8_t* section = data + 8 + header_len;
  const uint64_t section_size = size - 8 - header_len;

  SafetensorsFile file;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json::Json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        throw bad_input("__metadata__ must be an object of strings").file(origin).found(json::describe(entry));
      }
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          throw bad_input("__metadata__ values must be strings")
              .file(origin)
              .key("__metadata__." + m.key())
              .found(json::describe(m.value()));
        }
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor \"" + name + "\"";
    if (!entry.is_object()) throw bad_input("entry is not an object").file(origin).key(where);
    for (const char* required : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(required)) {
        throw bad_input(std::string("missing \"") + required + "\"").file(origin).key(where);
      }
    }
    for (auto f = entry.begin(); f != entry.end(); ++f) {
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets") {
        throw bad_input("unknown field \"" + f.key() + "\"").file(origin).key(where);
      }
    }
    const json::Json& dtype_json = entry["dtype"];
    if (!dtype_json.is_string()) {
      throw bad_input("dtype is not a string").file(origin).key(where).found(json::describe(dtype_json));
    }
    TensorData t;
    try {
      t.dtype = dtype_from_name(dtype_json.get<std::string>());
    } catch (Error& e) {
      throw e.file(origin).key(where);
    }
    const json::Json& shape = entry["shape"];
    if (!shape.is_array()) throw bad_input("shape is not an array").file(origin).key(where);
    if (shape.size() > 64) throw bad_input("too many dimensions").file(origin).key(where);
    for (std::size_t d = 0; d < shape.size(); ++d) {
      t.shape.push_back(non_negative(shape[d], origin, where + " shape[" + std::to_string(d) + "]"));
    }
    const json::Json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) {
      throw bad_input("data_offsets must be [begin, end]").file(origin).key(where).found(json::describe(offsets));
    }
    const uint64_t begin = static_cast<uint64_t>(non_negative(offsets[0], origin, where + " data_offsets[0]"));
    const uint64_t end = static_cast<uint64_t>(non_negative(offsets[1], origin, where + " data_offsets[1]"));
    if (begin > end) {
      throw bad_input("data_offsets begin is after end")
          .file(origin)
          .key(where)
          .found("[" + std::to_string(begin) + ", " + std::to_string(end) + "]");
    }
    if (end > section_size) {
      throw bad_input("data_offsets run past the end of the data section")
          .file(origin)
          .key(where)
          .expected("end <= " + std::to_string(section_size))
          .found(std::to_string(end));
    }
    uint64_t bytes = 0;
    if (!byte_count(t.shape, dtype_size(t.dtype), &bytes)) {
      throw bad_input("shape " + shape_text(t.shape) + " overflows").file(origin).key(where);
    }
    if (bytes != end - begin) {
      throw bad_input("dtype and shape do not match the byte range")
          .file(origin)
          .key(where)
          .expected(dtype_name(t.dtype) + " " + shape_text(t.shape) + " = " + std::to_string(bytes) + " bytes")
          .found(std::to_string(end - begin) + " bytes");
    }
    spans.push_back({begin, end, name});
    file.tensors.emplace(name, std::move(t));
  }

  // Tensors must tile the data section: no overlap, no gap, nothing left over
  // (the same rule as the reference implementation).
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t cursor = 0;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    if (s.begin < cursor) {
      throw bad_input("tensor \"" + s.name + "\" overlaps tensor \"" + spans[i - 1].name + "\"").file(origin);
    }
    if (s.begin > cursor) {
      throw bad_input("bytes " + std::to_string(cursor) + ".." + std::to_string(s.begin) +
                      " of the data section belong to no tensor (before tensor \"" + s.name + "\")")
          .file(origin);
    }
    cursor = s.end;
  }
  if (cursor != section_size) {
    throw bad_input("the data section has bytes that belong to no tensor")
        .file(origin)
        .expected(std::to_string(cursor) + " bytes after the header")
        .found(std::to_string(section_size));
  }
  for (const Span& s : spans) {
    TensorData& t = file.tensors[s.name];
    t.bytes.assign(section + s.begin, section + s.end);
  }
  return file;
}

SafetensorsFile read_safetensors(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw bad_input(std::string("cannot open file: ") + std::strerror(errno)).file(path);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw bad_input("not a regular file").file(path);
  }
  const std::size_t size = static_cast<std::size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return parse_safetensors(nullptr, 0, path);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    // Fall back to an ordinary read (for example on filesystems without mmap).
    std::vector<uint8_t> bytes = read_file(path);
    return parse_safetensors(bytes.data(), bytes.size(), path);
  }
  struct Unmap {
    void* p;
    std::size_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};
  return parse_safetensors(static_cast<const uint8_t*>(map), size, path);
}

std::vector<uint8_t> serialize_safetensors(const SafetensorsFile& file) {
  // Written by hand so that __metadata__ comes first (as the reference writer does); the
  // tensors follow in name order, their data in the same order.
  const auto strict = json::Json::error_handler_t::strict;
  std::string text = "{";
  if (!file.metadata.empty()) {
    json::Json meta = json::Json::object();
    for (const auto& [k, v] : file.metadata) meta[k] = v;
    text += "\"__metadata__\":" + meta.dump(-1, ' ', false, strict);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    if (name == "__metadata__") throw bad_input("a tensor cannot be named __metadata__");
    check_consistent(name, t);
    json::Json entry = {{"dtype", dtype_name(t.dtype)},
                        {"shape", t.shape},
                        {"data_offsets", {offset, offset + t.bytes.size()}}};
    if (text.size() > 1) text += ",";
    text += json::Json(name).dump(-1, ' ', false, strict) + ":" + entry.dump(-1, ' ', false, strict);
    offset += t.bytes.size();
  }
  text += "}";
  // Pad with spaces so the data section starts 8-byte aligned.
  while ((8 + text.size()) % 8 != 0) text += ' ';
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& [name, t] : file.tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  std::vector<uint8_t> bytes;
  try {
    bytes = serialize_safetensors(file);
  } catch (Error& e) {
    if (e.file_context().empty()) e.file(path);
    throw;
  }
  write_file_atomic(path, bytes);
}

TensorData make_tensor(DType dtype, std::vector<int64_t> shape, const void* data) {
  TensorData t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  uint64_t bytes = 0;
  if (!byte_count(t.shape, dtype_size(dtype), &bytes)) throw bad_input("invalid shape " + shape_text(t.shape));
  t.bytes.resize(static_cast<std::size_t>(bytes));
  if (bytes > 0) std::memcpy(t.bytes.data(), data, static_cast<std::size_t>(bytes));
  return t;
}

TensorData make_f32(std::vector<int64_t> shape, const float* values) {
  return make_tensor(DType::kF32, std::move(shape), values);
}

TensorData make_i64(std::vector<int64_t> shape, const int64_t* values) {
  return make_tensor(DType::kI64, std::move(shape), values);
}

float f16_to_float(uint16_t bits) { return half_bits_to_float(bits); }

float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

std::vector<float> to_float32(const TensorData& tensor) {
  std::vector<float> out;
  switch (tensor.dtype) {
    case DType::kF32:
      out.resize(tensor.bytes.size() / 4);
      if (!out.empty()) std::memcpy(out.data(), tensor.bytes.data(), out.size() * 4);
      break;
    case DType::kF64:
      convert_all<double>(tensor, &out);
      break;
    case DType::kF16:
    case DType::kBF16: {
      const std::size_t n = tensor.bytes.size() / 2;
      out.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        uint16_t h = static_cast<uint16_t>(tensor.bytes[2 * i] | (tensor.bytes[2 * i + 1] << 8));
        out[i] = tensor.dtype == DType::kF16 ? half_bits_to_float(h) : bf16_to_float(h);
      }
      break;
    }
    case DType::kI64:
      convert_all<int64_t>(tensor, &out);
      break;
    case DType::kI32:
      convert_all<int32_t>(tensor, &out);
      break;
    case DType::kI16:
      convert_all<int16_t>(tensor, &out);
      break;
    case DType::kI8:
      convert_all<int8_t>(tensor, &out);
      break;
    case DType::kU8:
      convert_all<uint8_t>(tensor, &out);
      break;
    case DType::kBool:
      throw bad_input("cannot convert a BOOL tensor to float32");
  }
  return out;
}

std::vector<int64_t> to_int64(const TensorData& tensor) {
  std::vector<int64_t> out;
  switch (tensor.dtype) {
    case DType::kI64:
      convert_all_i64<int64_t>(tensor, &out);
      break;
    case DType::kI32:
      convert_all_i64<int32_t>(tensor, &out);
      break;
    case DType::kI16:
      convert_all_i64<int16_t>(tensor, &out);
      break;
    case DType::kI8:
      convert_all_i64<int8_t>(tensor, &out);
      break;
    case DType::kU8:
      convert_all_i64<uint8_t>(tensor, &out);
      break;
    default:
      throw bad_input("expected an integer tensor").expected("I64, I32, I16, I8 or U8").found(dtype_name(tensor.dtype));
  }
  return out;
}

}  // namespace ctok
