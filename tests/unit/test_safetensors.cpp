// safetensors: round trips of every dtype, and corrupted files that must be rejected with
// ctok::Error (bad_input), never a crash.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/safetensors.hpp"

namespace fs = std::filesystem;
using ctok::DType;

namespace {

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("ctok_st_" + std::to_string(::getpid()) + "_" + name)).string();
}

// A raw file: 8-byte length + header text + data.
std::vector<uint8_t> raw(const std::string& header, const std::vector<uint8_t>& data, int64_t length_override = -1) {
  std::vector<uint8_t> out;
  uint64_t n = length_override >= 0 ? static_cast<uint64_t>(length_override) : header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

ctok::Error parse_error(const std::vector<uint8_t>& bytes) {
  try {
    ctok::parse_safetensors(bytes.data(), bytes.size(), "corrupt.safetensors");
  } catch (const ctok::Error& e) {
    return e;
  }
  ADD_FAILURE() << "corrupt file accepted";
  return ctok::runtime_failure("accepted");
}

}  // namespace

TEST(Safetensors, DTypeNames) {
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32, DType::kI16,
                  DType::kI8, DType::kU8, DType::kBool}) {
    EXPECT_EQ(ctok::dtype_from_name(ctok::dtype_name(d)), d);
  }
  EXPECT_EQ(ctok::dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(ctok::dtype_size(DType::kF64), 8u);
  EXPECT_THROW(ctok::dtype_from_name("F8_E4M3"), ctok::Error);
}

TEST(Safetensors, RoundTripAllDTypes) {
  ctok::SafetensorsFile f;
  f.metadata["format"] = "test";
  f.metadata["json"] = R"({"a": [1, 2]})";
  const DType all[] = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64,
                       DType::kI32, DType::kI16, DType::kI8,  DType::kU8,   DType::kBool};
  int k = 0;
  for (DType d : all) {
    std::vector<uint8_t> data(ctok::dtype_size(d) * 6);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + k);
    if (d == DType::kBool) {
      for (auto& b : data) b &= 1;
    }
    f.tensors["t_" + ctok::dtype_name(d)] = ctok::make_tensor(d, {2, 3}, data.data());
    ++k;
  }
  f.tensors["scalar"] = ctok::make_tensor(DType::kF32, {}, std::vector<float>{3.5f}.data());
  f.tensors["empty"] = ctok::make_tensor(DType::kF32, {0, 4}, nullptr);

  const std::string path = temp_path("roundtrip.safetensors");
  ctok::write_safetensors(path, f);
  std::vector<uint8_t> bytes = ctok::read_file(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u) << "data section must start 8-byte aligned";
  std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  EXPECT_EQ(header.rfind("{\"__metadata__\":", 0), 0u) << header;

  ctok::SafetensorsFile g = ctok::read_safetensors(path);
  fs::remove(path);
  EXPECT_EQ(g.metadata, f.metadata);
  ASSERT_EQ(g.tensors.size(), f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    const ctok::TensorData* u = g.find(name);
    ASSERT_NE(u, nullptr) << name;
    EXPECT_EQ(u->dtype, t.dtype) << name;
    EXPECT_EQ(u->shape, t.shape) << name;
    EXPECT_EQ(u->bytes, t.bytes) << name;
  }
  EXPECT_EQ(g.find("absent"), nullptr);
  EXPECT_EQ(g.find("scalar")->numel(), 1);
  EXPECT_EQ(g.find("empty")->numel(), 0);
  // Serialising again gives the same bytes (deterministic writer).
  EXPECT_EQ(ctok::serialize_safetensors(g), bytes);
}

TEST(Safetensors, FloatConversions) {
  // F16: 1.0, -2.0, 65504 (max), smallest subnormal, +inf.
  const uint16_t f16[] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00};
  ctok::TensorData h = ctok::make_tensor(DType::kF16, {5}, f16);
  std::vector<float> v = ctok::to_float32(h);
  ASSERT_EQ(v.size(), 5u);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 65504.0f);
  EXPECT_FLOAT_EQ(v[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(v[4]));
  EXPECT_TRUE(std::isnan(ctok::f16_to_float(0x7e00)));
  // BF16: 1.0, -3.0, 0.15625
  const uint16_t bf16[] = {0x3f80, 0xc040, 0x3e20};
  v = ctok::to_float32(ctok::make_tensor(DType::kBF16, {3}, bf16));
  EXPECT_EQ(v, (std::vector<float>{1.0f, -3.0f, 0.15625f}));
  const double f64[] = {0.25, -1e10};
  v = ctok::to_float32(ctok::make_tensor(DType::kF64, {2}, f64));
  EXPECT_EQ(v, (std::vector<float>{0.25f, -1e10f}));
  const int8_t i8[] = {-5, 7};
  v = ctok::to_float32(ctok::make_tensor(DType::kI8, {2}, i8));
  EXPECT_EQ(v, (std::vector<float>{-5.0f, 7.0f}));
  const uint8_t b[] = {1, 0};
  EXPECT_THROW(ctok::to_float32(ctok::make_tensor(DType::kBool, {2}, b)), ctok::Error);
}

TEST(Safetensors, IntConversions) {
  const int64_t i64[] = {1LL << 40, -3};
  EXPECT_EQ(ctok::to_int64(ctok::make_i64({2}, i64)), (std::vector<int64_t>{1LL << 40, -3}));
  const int32_t i32[] = {-7, 9};
  EXPECT_EQ(ctok::to_int64(ctok::make_tensor(DType::kI32, {2}, i32)), (std::vector<int64_t>{-7, 9}));
  const uint8_t u8[] = {255};
  EXPECT_EQ(ctok::to_int64(ctok::make_tensor(DType::kU8, {1}, u8)), (std::vector<int64_t>{255}));
  const float f[] = {1.0f};
  EXPECT_THROW(ctok::to_int64(ctok::make_f32({1}, f)), ctok::Error);
}

TEST(Safetensors, WriterRejectsInconsistentTensor) {
  ctok::SafetensorsFile f;
  ctok::TensorData t;
  t.dtype = DType::kF32;
  t.shape = {2, 2};
  t.bytes.resize(12);  // needs 16
  f.tensors["bad"] = t;
  EXPECT_THROW(ctok::serialize_safetensors(f), ctok::Error);
  const std::string path = temp_path("never.safetensors");
  EXPECT_THROW(ctok::write_safetensors(path, f), ctok::Error);
  EXPECT_FALSE(fs::exists(path));
}

TEST(Safetensors, ReadsFileWrittenByReferenceImplementation) {
  // Bytes as written by safetensors.torch.save_file({"a": torch.tensor([1., 2.])},
  // metadata={"format": "pt"}) -- header order and padding differ from ours.
  const std::string header = R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<uint8_t> data(8);
  const float vals[] = {1.0f, 2.0f};
  std::memcpy(data.data(), vals, 8);
  auto bytes = raw(header + "   ", data);
  ctok::SafetensorsFile f = ctok::parse_safetensors(bytes.data(), bytes.size(), "ref");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(ctok::to_float32(*f.find("a")), (std::vector<float>{1.0f, 2.0f}));
}

TEST(Safetensors, MissingFileIsBadInput) {
  try {
    ctok::read_safetensors("/nonexistent/x.safetensors");
    FAIL();
  } catch (const ctok::Error& e) {
    EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.safetensors"), std::string::npos);
  }
}

// ---- corrupted files --------------------------------------------------------------

struct CorruptCase {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* message_part;  // must appear in the error
};

class Corrupt : public ::testing::TestWithParam<int> {};

static std::vector<CorruptCase> corrupt_cases() {
  const std::vector<uint8_t> d8(8, 0), d16(16, 0);
  auto h = [](const std::string& entries) { return "{" + entries + "}"; };
  std::vector<CorruptCase> c;
  c.push_back({"empty file", {}, "too short"});
  c.push_back({"truncated header length", {5, 0, 0}, "too short"});
  c.push_back({"header length > file", raw(h(""), {}, 1000), "exceeds the file size"});
  c.push_back({"header length huge", raw(h(""), {}, int64_t(1) << 62), "exceeds the file size"});
  c.push_back({"header length zero", raw("", d8, 0), "not a JSON object"});
  c.push_back({"non-JSON", raw("{this is not json}", {}), "invalid JSON"});
  c.push_back({"JSON array", raw("[1,2,3]", {}), "not a JSON object"});
  c.push_back({"truncated JSON", raw(R"({"a":{"dtype":"F32")", {}), "invalid JSON"});
  c.push_back({"entry not object", raw(h(R"("a":5)"), {}), "not an object"});
  c.push_back({"missing dtype", raw(h(R"("a":{"shape":[2],"data_offsets":[0,8]})"), d8), "missing \"dtype\""});
  c.push_back({"missing shape", raw(h(R"("a":{"dtype":"F32","data_offsets":[0,8]})"), d8), "missing \"shape\""});
  c.push_back({"missing offsets", raw(h(R"("a":{"dtype":"F32","shape":[2]})"), d8), "missing \"data_offsets\""});
  c.push_back({"unknown field", raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})"), d8),
               "unknown field"});
  c.push_back({"unknown dtype", raw(h(R"("a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]})"), d8),
               "unknown dtype"});
  c.push_back({"dtype not string", raw(h(R"("a":{"dtype":4,"shape":[2],"data_offsets":[0,8]})"), d8),
               "dtype is not a string"});
  c.push_back({"shape not array", raw(h(R"("a":{"dtype":"F32","shape":2,"data_offsets":[0,8]})"), d8),
               "shape is not an array"});
  c.push_back({"negative dim", raw(h(R"("a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), d8),
               "negative value"});
  c.push_back({"fractional dim", raw(h(R"("a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})"), d8),
               "not an integer"});
  c.push_back({"overflow shape", raw(h(R"("a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]})"), d8),
               "overflows"});
  c.push_back({"overflow by dtype",
               raw(h(R"("a":{"dtype":"F64","shape":[2305843009213693952,1],"data_offsets":[0,8]})"), d8), "overflows"});
  c.push_back({"dim > int64", raw(h(R"("a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]})"), d8),
               "too large"});
  c.push_back({"dtype x shape != bytes", raw(h(R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), d8),
               "do not match the byte range"});
  c.push_back({"offsets out of range", raw(h(R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), d8),
               "past the end"});
  c.push_back({"offsets reversed", raw(h(R"("a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), d8),
               "begin is after end"});
  c.push_back({"offsets not pair", raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0]})"), d8),
               "data_offsets must be"});
  c.push_back({"offsets negative", raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), d8),
               "negative"});
  c.push_back({"overlapping",
               raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})"),
                   d16),
               "overlaps"});
  c.push_back({"same range twice",
               raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"),
                   d8),
               "overlaps"});
  c.push_back({"gap (garbage)", raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})"), d16),
               "belong to no tensor"});
  c.push_back({"trailing garbage", raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), d16),
               "belong to no tensor"});
  c.push_back({"metadata non-string", raw(h(R"("__metadata__":{"format":1})"), {}), "must be strings"});
  c.push_back({"metadata not object", raw(h(R"("__metadata__":["a"])"), {}), "must be an object"});
  c.push_back({"deeply nested shape",
               raw(h(R"("a":{"dtype":"F32","shape":)" + std::string(50000, '[') + std::string(50000, ']') +
                     R"(,"data_offsets":[0,8]})"),
                   d8),
               "nested too deeply"});
  c.push_back({"number overflow", raw(h(R"("a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,8]})"), d8),
               "invalid JSON"});
  c.push_back({"duplicate tensor",
               raw(h(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"),
                   d8),
               "duplicate"});
  return c;
}

TEST_P(Corrupt, RejectedAsBadInput) {
  const CorruptCase c = corrupt_cases().at(static_cast<std::size_t>(GetParam()));
  ctok::Error e = parse_error(c.bytes);
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput) << c.name << ": " << e.what();
  EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << c.name << ": " << e.what();
  EXPECT_NE(std::string(e.what()).find("corrupt.safetensors"), std::string::npos) << c.name << ": " << e.what();
}

INSTANTIATE_TEST_SUITE_P(Cases, Corrupt, ::testing::Range(0, static_cast<int>(corrupt_cases().size())),
                         [](const ::testing::TestParamInfo<int>& info) {
                           std::string n = corrupt_cases().at(static_cast<std::size_t>(info.param)).name;
                           for (auto& ch : n) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

TEST(Safetensors, TruncationsOfAValidFileNeverCrash) {
  ctok::SafetensorsFile f;
  f.metadata["format"] = "ctok-token/1";
  std::vector<float> v(24, 0.5f);
  f.tensors["<tok>"] = ctok::make_f32({2, 12}, v.data());
  f.tensors["ids"] = ctok::make_i64({3}, std::vector<int64_t>{1, 2, 3}.data());
  std::vector<uint8_t> bytes = ctok::serialize_safetensors(f);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(ctok::parse_safetensors(bytes.data(), n, "trunc"), ctok::Error) << "length " << n;
  }
  EXPECT_NO_THROW(ctok::parse_safetensors(bytes.data(), bytes.size(), "full"));
  // Flipping single bytes in the header: either a clean error or a file that parses.
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  for (std::size_t i = 0; i < 8 + header_len; ++i) {
    for (uint8_t x : {uint8_t(0x01), uint8_t(0x20), uint8_t(0x80)}) {
      std::vector<uint8_t> b = bytes;
      b[i] ^= x;
      try {
        ctok::parse_safetensors(b.data(), b.size(), "flip");
      } catch (const ctok::Error&) {
      }
    }
  }
}
