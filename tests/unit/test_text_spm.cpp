// SentencePiece through the dlopen'ed shim: parity with Python's sentencepiece on the
// committed fixture, special ids, bad files, shim discovery, and libtorch in the same
// process (architecture.md, "Known trap").
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "ctok/core/error.hpp"
#include "ctok/text/tokenizer.hpp"
#include "text/sentencepiece_tokenizer.hpp"

namespace fs = std::filesystem;
using ctok::text::SentencePieceTokenizer;
using ctok::text::SpecialIds;

namespace {

const std::string kModel = std::string(CTOK_TEST_DATA) + "/text/spm-tiny.model";
const std::string kExpected = std::string(CTOK_TEST_DATA) + "/text/spm-tiny-expected.json";

std::string maps() {
  std::ifstream in("/proc/self/maps");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Recorded before main: the process must start without sentencepiece in it.
const bool kSentencepieceAtStartup = maps().find("libsentencepiece") != std::string::npos;

nlohmann::json expected() {
  std::ifstream in(kExpected);
  EXPECT_TRUE(in.good()) << "missing " << kExpected;
  return nlohmann::json::parse(in);
}

void expect_bad_model(const std::string& path, const std::string& fragment) {
  try {
    ctok::text::load_sentencepiece(path);
    ADD_FAILURE() << "accepted " << path;
  } catch (const ctok::Error& e) {
    EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput) << e.what();
    EXPECT_EQ(e.file_context(), path);
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(SentencePiece, ParityWithPythonFixture) {
  const auto ex = expected();
  SentencePieceTokenizer tok(kModel, {});
  EXPECT_EQ(tok.vocab_size(), ex.at("vocab_size").get<int64_t>());
  ASSERT_GE(ex.at("cases").size(), 8u);
  for (const auto& c : ex.at("cases")) {
    const std::string text = c.at("text");
    const auto got = tok.encode_with_pieces(text);
    EXPECT_EQ(got.ids, c.at("ids").get<std::vector<int64_t>>()) << "\"" << text << "\"";
    EXPECT_EQ(got.pieces, c.at("pieces").get<std::vector<std::string>>()) << "\"" << text << "\"";
    EXPECT_EQ(tok.encode_plain(text), got.ids);
  }
}

TEST(SentencePiece, VocabularyAndSpecialIds) {
  const auto ex = expected();
  auto tok = ctok::text::load_sentencepiece(kModel);
  const auto pieces = ex.at("pieces").get<std::vector<std::string>>();
  ASSERT_EQ(static_cast<int64_t>(pieces.size()), tok->vocab_size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    EXPECT_EQ(tok->id_to_piece(static_cast<int64_t>(i)), pieces[i]);
    EXPECT_EQ(tok->piece_to_id(pieces[i]), static_cast<int64_t>(i)) << pieces[i];
  }
  EXPECT_EQ(tok->piece_to_id("no-such-piece"), -1);
  EXPECT_EQ(tok->piece_to_id("<unk>"), ex.at("unk").get<int64_t>());
  EXPECT_EQ(tok->special().bos, 1);
  EXPECT_EQ(tok->special().eos, 2);
  EXPECT_EQ(tok->special().pad, 0);
  EXPECT_THROW(tok->id_to_piece(tok->vocab_size()), ctok::Error);
  EXPECT_THROW(tok->id_to_piece(-1), ctok::Error);
}

TEST(SentencePiece, EncodeAddsBosEosAndPads) {
  auto tok = ctok::text::load_sentencepiece(kModel);
  const auto plain = tok->encode_plain("a photo of a red dress");
  const auto e = tok->encode("a photo of a red dress", 16);
  std::vector<int64_t> want{1};
  want.insert(want.end(), plain.begin(), plain.end());
  want.push_back(2);
  ASSERT_LE(want.size(), 16u);
  EXPECT_EQ(e.eos_index, static_cast<int64_t>(want.size()) - 1);
  want.resize(16, 0);
  EXPECT_EQ(e.ids, want);
  EXPECT_EQ(e.pieces.front(), "<s>");
  EXPECT_EQ(e.pieces.back(), "</s>");

  const auto cut = tok->encode("a photo of a red dress", 4);
  EXPECT_EQ(cut.ids, (std::vector<int64_t>{1, plain[0], plain[1], 2}));
  EXPECT_EQ(cut.truncated, static_cast<int64_t>(plain.size()) - 2);
  EXPECT_EQ(cut.eos_index, 3);
}

TEST(SentencePiece, SpecialIdsFromTheCallerWin) {
  SpecialIds sp;
  sp.bos = 5;
  sp.eos = 6;
  sp.pad = 7;
  auto tok = ctok::text::load_sentencepiece(kModel, sp);
  const auto e = tok->encode("", 4);
  EXPECT_EQ(e.ids, (std::vector<int64_t>{5, 6, 7, 7}));
  SpecialIds too_big;
  too_big.pad = 1000;
  EXPECT_THROW(ctok::text::load_sentencepiece(kModel, too_big), ctok::Error);
}

TEST(SentencePiece, LoadTokenizerSpec) {
  auto tok = ctok::text::load_tokenizer("sentencepiece:" + kModel);
  EXPECT_EQ(tok->type(), "sentencepiece");
  EXPECT_THROW(ctok::text::load_tokenizer("spm:" + kModel), ctok::Error);
}

TEST(SentencePiece, MissingAndCorruptModels) {
  expect_bad_model("/nonexistent/model.model", "cannot open");
  expect_bad_model(std::string(CTOK_TEST_DATA) + "/text", "not a regular file");
  const fs::path dir = fs::temp_directory_path() / ("ctok-spm-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& data) {
    const std::string p = (dir / name).string();
    std::ofstream(p, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
    return p;
  };
  std::ifstream in(kModel, std::ios::binary);
  const std::string model(std::istreambuf_iterator<char>(in), {});
  ASSERT_GT(model.size(), 1000u);
  expect_bad_model(write("empty.model", ""), "not a valid SentencePiece model");
  expect_bad_model(write("text.model", "this is not a model\n"), "not a valid SentencePiece model");
  expect_bad_model(write("half.model", model.substr(0, model.size() / 2)), "not a valid SentencePiece model");
  fs::remove_all(dir);
}

TEST(SentencePiece, ThreadsShareOneModel) {
  auto tok = ctok::text::load_sentencepiece(kModel);
  const auto want = tok->encode_plain("a cropped photo of the blue striped skirt");
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i)
        bad[t] += tok->encode_plain("a cropped photo of the blue striped skirt") != want;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

TEST(SentencePieceShim, ProcessStartsWithoutSentencepiece) {
  EXPECT_FALSE(kSentencepieceAtStartup)
      << "libsentencepiece was loaded before main: something links it directly";
}

TEST(SentencePieceShim, LibtorchAndSentencePieceInOneProcess) {
  // This executable links libtorch through the ctok library; the shim brings
  // sentencepiece and its private protobuf in with RTLD_LOCAL | RTLD_DEEPBIND.
  const at::Tensor t = at::ones({2, 3});
  EXPECT_FLOAT_EQ(t.sum().item<float>(), 6.0f);
  auto tok = ctok::text::load_sentencepiece(kModel);
  EXPECT_FALSE(tok->encode_plain("a photo of a red dress").empty());
  const std::string m = maps();
  EXPECT_NE(m.find("libtorch"), std::string::npos) << "libtorch is not in this process";
  EXPECT_NE(m.find("libsentencepiece"), std::string::npos) << "sentencepiece is not in this process";
  EXPECT_NE(m.find("libctok_spm_shim"), std::string::npos);
  // Both again, after each other, and an error path through the shim.
  EXPECT_FLOAT_EQ((at::ones({4}) * 2).sum().item<float>(), 8.0f);
  EXPECT_THROW(ctok::text::load_sentencepiece(std::string(CTOK_TEST_DATA) + "/text/spm-tiny-expected.json"),
               ctok::Error);
  EXPECT_FALSE(SentencePieceTokenizer::shim_path().empty());
}

TEST(SentencePieceShim, ExplicitShimPathThatDoesNotLoadIsAClearError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: the shim loads once
  EXPECT_EXIT(
      {
        ::setenv("CTOK_SPM_SHIM", "/nonexistent/libctok_spm_shim.so", 1);
        try {
          ctok::text::load_sentencepiece(kModel);
        } catch (const ctok::Error& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::exit(e.kind() == ctok::ErrorKind::kRuntime ? 3 : 4);
        }
        std::exit(5);
      },
      ::testing::ExitedWithCode(3), "tried:\n  /nonexistent/libctok_spm_shim.so: not found");
}

TEST(SentencePieceShim, ShimFromTheEnvironmentIsUsed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string shim = SentencePieceTokenizer::shim_path();
  EXPECT_EXIT(
      {
        ::setenv("CTOK_SPM_SHIM", shim.c_str(), 1);
        auto tok = ctok::text::load_sentencepiece(kModel);
        std::fprintf(stderr, "loaded from %s\n", SentencePieceTokenizer::shim_path().c_str());
        std::exit(tok->vocab_size() == 100 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "loaded from " + shim);
}
