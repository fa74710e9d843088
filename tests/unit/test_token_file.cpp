// Custom token files: ctok-token/1 round trip, diffusers / A1111 files, width checks,
// corrupt and unsupported files.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/token/token_file.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;

namespace {

class TokenFileTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return tmp_.file(name); }

  static ctok::token::TokenFile sample() {
    ctok::token::TokenFile t;
    t.token = "<my-dress>";
    t.n_vectors = 2;
    t.width = 4;
    t.vectors = {1, 2, 3, 4, -0.5f, 0.25f, 0, 3};
    t.parent = "dress";
    t.bundle = "fashionworld-tiny";
    t.bundle_sha256 = std::string(64, 'a');
    t.subspace_words = {"red", "striped", "long"};
    t.coefficients = {0.5, -1.25, 2.0};
    t.config = {{"steps", 100}, {"lr", 0.01}};
    t.metrics = {{"loss", 0.123}, {"seconds", 4.5}};
    t.extra["note"] = "hello";
    return t;
  }

  // A raw safetensors file with the given tensors and metadata.
  void write_raw(const std::string& p, std::map<std::string, ctok::TensorData> tensors,
                 std::map<std::string, std::string> meta = {}) {
    ctok::SafetensorsFile f;
    f.tensors = std::move(tensors);
    f.metadata = std::move(meta);
    ctok::write_safetensors(p, f);
  }

  static std::string error_of(const std::string& p) {
    try {
      ctok::token::read_token_file(p);
    } catch (const ctok::Error& e) {
      EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "accepted " << p;
    return "";
  }

  ctok::test::TempDir tmp_{"ctok_tok"};
  std::string dir_ = tmp_.path();
};

}  // namespace

TEST_F(TokenFileTest, RoundTrip) {
  const auto t = sample();
  ctok::token::write_token_file(path("tok.safetensors"), t);
  const auto r = ctok::token::read_token_file(path("tok.safetensors"));
  EXPECT_EQ(r.token, t.token);
  EXPECT_EQ(r.n_vectors, 2);
  EXPECT_EQ(r.width, 4);
  EXPECT_EQ(r.vectors, t.vectors);
  EXPECT_EQ(r.parent, "dress");
  EXPECT_EQ(r.bundle, t.bundle);
  EXPECT_EQ(r.bundle_sha256, t.bundle_sha256);
  EXPECT_EQ(r.subspace_words, t.subspace_words);
  EXPECT_EQ(r.coefficients, t.coefficients);
  EXPECT_EQ(r.config, t.config);
  EXPECT_EQ(r.metrics, t.metrics);
  EXPECT_EQ(r.extra, t.extra);
  EXPECT_EQ(r.source_format, "ctok-token/1");
  EXPECT_EQ(r.source_path, path("tok.safetensors"));
  EXPECT_EQ(r.vector(1)[0], -0.5f);
  // Layout per the spec: one F32 [n, width] tensor named by the token; string metadata.
  const auto raw = ctok::read_safetensors(path("tok.safetensors"));
  ASSERT_EQ(raw.tensors.size(), 1u);
  const auto* tensor = raw.find("<my-dress>");
  ASSERT_NE(tensor, nullptr);
  EXPECT_EQ(tensor->dtype, ctok::DType::kF32);
  EXPECT_EQ(tensor->shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(raw.metadata.at("format"), "ctok-token/1");
  EXPECT_EQ(raw.metadata.at("subspace_words"), R"(["red","striped","long"])");
  EXPECT_EQ(raw.metadata.at("parent"), "dress");
  // Nothing else left in the directory (atomic write).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(TokenFileTest, EmptySubspaceWritesEmptyLists) {
  auto t = sample();
  t.subspace_words.clear();
  t.coefficients.clear();
  t.extra.clear();
  ctok::token::write_token_file(path("t.safetensors"), t);
  const auto raw = ctok::read_safetensors(path("t.safetensors"));
  EXPECT_EQ(raw.metadata.at("subspace_words"), "[]");
  EXPECT_EQ(raw.metadata.at("coefficients"), "[]");
  const auto r = ctok::token::read_token_file(path("t.safetensors"));
  EXPECT_TRUE(r.subspace_words.empty());
  EXPECT_TRUE(r.extra.empty());
}

TEST_F(TokenFileTest, DiffusersLearnedEmbeds2D) {
  std::vector<float> v(3 * 8);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.1f * static_cast<float>(i);
  write_raw(path("learned_embeds.safetensors"), {{"<cat-toy>", ctok::make_f32({3, 8}, v.data())}}, {{"format", "pt"}});
  const auto r = ctok::token::read_token_file(path("learned_embeds.safetensors"));
  EXPECT_EQ(r.token, "<cat-toy>");
  EXPECT_EQ(r.n_vectors, 3);
  EXPECT_EQ(r.width, 8);
  EXPECT_EQ(r.vectors, v);
  EXPECT_EQ(r.source_format, "diffusers");
  EXPECT_EQ(r.extra.at("format"), "pt");
}

TEST_F(TokenFileTest, DiffusersOneDimensionalIsOneVector) {
  std::vector<float> v(768, 0.5f);
  write_raw(path("e.safetensors"), {{"<sks>", ctok::make_f32({768}, v.data())}});
  const auto r = ctok::token::read_token_file(path("e.safetensors"));
  EXPECT_EQ(r.n_vectors, 1);
  EXPECT_EQ(r.width, 768);
  EXPECT_EQ(r.token, "<sks>");
}

TEST_F(TokenFileTest, HalfPrecisionIsConverted) {
  const uint16_t h[] = {0x3c00, 0xc000};  // 1, -2
  write_raw(path("h.safetensors"), {{"<h>", ctok::make_tensor(ctok::DType::kF16, {1, 2}, h)}});
  const auto r = ctok::token::read_token_file(path("h.safetensors"));
  EXPECT_EQ(r.vectors, (std::vector<float>{1.0f, -2.0f}));
}

TEST_F(TokenFileTest, Automatic1111TakesTheFileStem) {
  std::vector<float> v(2 * 4, 1.0f);
  write_raw(path("my-style.safetensors"), {{"emb_params", ctok::make_f32({2, 4}, v.data())}});
  EXPECT_EQ(ctok::token::read_token_file(path("my-style.safetensors")).token, "my-style");
}

TEST_F(TokenFileTest, WidthMismatchMessage) {
  auto t = sample();
  t.width = 768;
  t.n_vectors = 1;
  t.vectors.assign(768, 0.0f);
  EXPECT_NO_THROW(ctok::token::check_width(t, 768));
  try {
    ctok::token::check_width(t, 128);
    FAIL();
  } catch (const ctok::Error& e) {
    EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("token width 768 does not match bundle text.width 128"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("<my-dress>"), std::string::npos) << e.what();
  }
}

TEST_F(TokenFileTest, RejectsZeroOrSeveralTensors) {
  write_raw(path("none.safetensors"), {}, {{"format", "ctok-token/1"}});
  EXPECT_NE(error_of(path("none.safetensors")).find("no tensor"), std::string::npos);
  std::vector<float> v(4, 1.0f);
  write_raw(path("two.safetensors"),
            {{"clip_g", ctok::make_f32({1, 4}, v.data())}, {"clip_l", ctok::make_f32({1, 4}, v.data())}});
  const std::string msg = error_of(path("two.safetensors"));
  EXPECT_NE(msg.find("2 tensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("clip_g, clip_l"), std::string::npos) << msg;
}

TEST_F(TokenFileTest, RejectsNonFloatAndBadShapes) {
  const int64_t ids[] = {1, 2};
  write_raw(path("int.safetensors"), {{"<t>", ctok::make_i64({1, 2}, ids)}});
  EXPECT_NE(error_of(path("int.safetensors")).find("floating point"), std::string::npos);
  write_raw(path("zero.safetensors"), {{"<t>", ctok::make_f32({0, 4}, nullptr)}});
  EXPECT_NE(error_of(path("zero.safetensors")).find("n_vectors is 0"), std::string::npos);
  write_raw(path("w0.safetensors"), {{"<t>", ctok::make_f32({2, 0}, nullptr)}});
  EXPECT_NE(error_of(path("w0.safetensors")).find("width 0"), std::string::npos);
  std::vector<float> v(8, 1.0f);
  write_raw(path("3d.safetensors"), {{"<t>", ctok::make_f32({2, 2, 2}, v.data())}});
  EXPECT_NE(error_of(path("3d.safetensors")).find("3 dimensions"), std::string::npos);
  v[3] = std::numeric_limits<float>::quiet_NaN();
  write_raw(path("nan.safetensors"), {{"<t>", ctok::make_f32({2, 4}, v.data())}});
  EXPECT_NE(error_of(path("nan.safetensors")).find("non-finite"), std::string::npos);
}

TEST_F(TokenFileTest, RejectsBadMetadata) {
  std::vector<float> v(4, 1.0f);
  write_raw(path("newer.safetensors"), {{"<t>", ctok::make_f32({1, 4}, v.data())}},
            {{"format", "ctok-token/2"}, {"token", "<t>"}});
  std::string msg = error_of(path("newer.safetensors"));
  EXPECT_NE(msg.find("ctok-token/1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ctok-token/2"), std::string::npos) << msg;
  write_raw(path("mismatch.safetensors"), {{"<t>", ctok::make_f32({1, 4}, v.data())}},
            {{"format", "ctok-token/1"}, {"token", "<other>"}});
  EXPECT_NE(error_of(path("mismatch.safetensors")).find("does not match the tensor name"), std::string::npos);
  write_raw(path("notoken.safetensors"), {{"<t>", ctok::make_f32({1, 4}, v.data())}}, {{"format", "ctok-token/1"}});
  EXPECT_NE(error_of(path("notoken.safetensors")).find("__metadata__.token"), std::string::npos);
  write_raw(path("badjson.safetensors"), {{"<t>", ctok::make_f32({1, 4}, v.data())}},
            {{"format", "ctok-token/1"}, {"token", "<t>"}, {"config", "{not json"}});
  EXPECT_NE(error_of(path("badjson.safetensors")).find("__metadata__.config"), std::string::npos);
  write_raw(path("words.safetensors"), {{"<t>", ctok::make_f32({1, 4}, v.data())}},
            {{"format", "ctok-token/1"}, {"token", "<t>"}, {"subspace_words", "[1, 2]"}});
  EXPECT_NE(error_of(path("words.safetensors")).find("subspace_words"), std::string::npos);
}

TEST_F(TokenFileTest, RejectsCorruptFiles) {
  ctok::token::write_token_file(path("ok.safetensors"), sample());
  std::vector<uint8_t> bytes = ctok::read_file(path("ok.safetensors"));
  std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 3);
  ctok::write_file_atomic(path("cut.safetensors"), cut);
  EXPECT_NE(error_of(path("cut.safetensors")).find("cut.safetensors"), std::string::npos);
  ctok::write_file_atomic(path("text.safetensors"), std::string("hello, not a tensor file"));
  EXPECT_NE(error_of(path("text.safetensors")).find("text.safetensors"), std::string::npos);
  EXPECT_NE(error_of(path("absent.safetensors")).find("absent.safetensors"), std::string::npos);
}

TEST_F(TokenFileTest, WriterValidates) {
  auto t = sample();
  t.token = "two words";
  EXPECT_THROW(ctok::token::write_token_file(path("a.safetensors"), t), ctok::Error);
  t = sample();
  t.token.clear();
  EXPECT_THROW(ctok::token::write_token_file(path("a.safetensors"), t), ctok::Error);
  t = sample();
  t.vectors.pop_back();
  EXPECT_THROW(ctok::token::write_token_file(path("a.safetensors"), t), ctok::Error);
  t = sample();
  t.vectors[0] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(ctok::token::write_token_file(path("a.safetensors"), t), ctok::Error);
  t = sample();
  t.extra["format"] = "x";
  EXPECT_THROW(ctok::token::write_token_file(path("a.safetensors"), t), ctok::Error);
  EXPECT_FALSE(fs::exists(path("a.safetensors")));
}

TEST_F(TokenFileTest, VectorNorms) {
  auto t = sample();
  auto n = ctok::token::vector_norms(t);
  ASSERT_EQ(n.size(), 2u);
  EXPECT_NEAR(n[0], std::sqrt(30.0), 1e-9);
  EXPECT_NEAR(n[1], std::sqrt(0.25 + 0.0625 + 9), 1e-6);
}
