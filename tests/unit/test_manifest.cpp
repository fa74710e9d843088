// Bundle manifest: the fixture bundle parses into every field; broken manifests are
// refused with messages naming the key (and the file where a file is missing).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/model/manifest.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using ctok::json::Json;
using ctok::model::FileCheck;

namespace {

const std::string kTiny = std::string(CTOK_TEST_DATA) + "/tiny_bundle";

// A copy of the tiny bundle in a temporary directory, with bundle.json editable.
class ManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The fixture is committed (tests/data/tiny_bundle): its absence is a failure, not a skip.
    ASSERT_TRUE(fs::exists(kTiny + "/bundle.json")) << "fixture bundle missing: " << kTiny;
    for (const auto& e : fs::directory_iterator(kTiny)) fs::copy(e.path(), fs::path(dir_) / e.path().filename());
    json_ = ctok::json::parse_file(kTiny + "/bundle.json");
  }
  void reset() { json_ = ctok::json::parse_file(kTiny + "/bundle.json"); }
  void save() { ctok::write_file_atomic(dir_ + "/bundle.json", json_.dump(2)); }
  std::string load_error() {
    save();
    return ctok::test::expect_bad_input([&] { ctok::model::load_manifest(dir_); });
  }

  ctok::test::TempDir tmp_{"ctok_manifest"};
  std::string dir_ = tmp_.path();
  Json json_;
};

}  // namespace

TEST_F(ManifestTest, TinyBundleParsesEveryField) {
  const auto m = ctok::model::load_manifest(kTiny);
  EXPECT_EQ(m.format, "ctok-bundle");
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.name, json_["name"].get<std::string>());
  EXPECT_EQ(m.tokenizer.type, ctok::model::TokenizerType::kSentencePiece);
  EXPECT_EQ(m.tokenizer.file, "tokenizer.model");
  EXPECT_EQ(m.tokenizer_spec(), "sentencepiece:" + kTiny + "/tokenizer.model");
  EXPECT_EQ(m.text.file, "text_encoder.pt");
  EXPECT_EQ(m.text.context_length, json_["text"]["context_length"].get<int64_t>());
  EXPECT_EQ(m.text.width, json_["text"]["width"].get<int64_t>());
  EXPECT_EQ(m.text.feature_dim, json_["text"]["feature_dim"].get<int64_t>());
  EXPECT_EQ(m.text.vocab_size, json_["text"]["vocab_size"].get<int64_t>());
  EXPECT_EQ(m.text.bos_id, json_["text"]["bos_id"].get<int64_t>());
  EXPECT_EQ(m.text.eos_id, json_["text"]["eos_id"].get<int64_t>());
  EXPECT_EQ(m.text.pad_id, json_["text"]["pad_id"].get<int64_t>());
  EXPECT_EQ(m.image.size, json_["image"]["size"].get<int64_t>());
  EXPECT_EQ(m.image.resize, "bicubic");
  EXPECT_EQ(m.image.crop, "center");
  EXPECT_DOUBLE_EQ(m.image.mean[1], json_["image"]["mean"][1].get<double>());
  EXPECT_DOUBLE_EQ(m.image.std[2], json_["image"]["std"][2].get<double>());
  EXPECT_EQ(m.image.feature_dim, json_["image"]["feature_dim"].get<int64_t>());
  EXPECT_DOUBLE_EQ(m.logit_scale, json_["logit_scale"].get<double>());
  ASSERT_TRUE(m.diffusion.has_value());
  EXPECT_EQ(m.diffusion->unet, "unet.pt");
  EXPECT_TRUE(m.diffusion->has_vae());
  EXPECT_EQ(m.diffusion->latent_channels, json_["diffusion"]["latent_channels"].get<int64_t>());
  EXPECT_EQ(m.diffusion->latent_size, json_["diffusion"]["latent_size"].get<int64_t>());
  EXPECT_DOUBLE_EQ(m.diffusion->latent_scale, json_["diffusion"]["latent_scale"].get<double>());
  EXPECT_EQ(m.diffusion->num_train_timesteps, json_["diffusion"]["num_train_timesteps"].get<int64_t>());
  EXPECT_EQ(ctok::model::enum_name(m.diffusion->beta_schedule), json_["diffusion"]["beta_schedule"].get<std::string>());
  EXPECT_DOUBLE_EQ(m.diffusion->beta_end, json_["diffusion"]["beta_end"].get<double>());
  EXPECT_EQ(m.diffusion->prediction, ctok::model::Prediction::kEpsilon);
  EXPECT_FALSE(m.sha256.empty());
  EXPECT_EQ(m.path_of("unet.pt"), kTiny + "/unet.pt");
  // Loading from the bundle.json path itself works too.
  EXPECT_EQ(ctok::model::load_manifest(kTiny + "/bundle.json").name, m.name);
}

TEST_F(ManifestTest, TinyBundleSha256Verifies) {
  const auto m = ctok::model::load_manifest(kTiny);
  const auto checks = ctok::model::verify_sha256("", m);
  ASSERT_GE(checks.size(), 3u);
  for (const auto& c : checks) {
    EXPECT_TRUE(c.status == FileCheck::kOk || c.status == FileCheck::kUnlisted)
        << c.file << " " << ctok::model::file_check_status_name(c.status);
    EXPECT_EQ(c.actual.size(), 64u) << c.file;
  }
  EXPECT_NO_THROW(ctok::model::require_sha256_match(m));
}

TEST_F(ManifestTest, Sha256MismatchListed) {
  ctok::write_file_atomic(dir_ + "/unet.pt", std::string("tampered"));
  const auto m = ctok::model::load_manifest(dir_);
  int mismatches = 0;
  for (const auto& c : ctok::model::verify_sha256("", m)) {
    if (c.status == FileCheck::kMismatch) {
      ++mismatches;
      EXPECT_EQ(c.file, "unet.pt");
      EXPECT_EQ(c.key, "diffusion.unet");
    }
  }
  EXPECT_EQ(mismatches, json_["sha256"].contains("unet.pt") ? 1 : 0);
  if (json_["sha256"].contains("unet.pt")) {
    try {
      ctok::model::require_sha256_match(m);
      FAIL();
    } catch (const ctok::Error& e) {
      EXPECT_NE(std::string(e.what()).find("unet.pt"), std::string::npos) << e.what();
    }
  }
}

TEST_F(ManifestTest, NewerVersionRefused) {
  json_["version"] = 2;
  json_["new_section"] = Json::object();  // unknown keys of a newer version: the version error wins
  const std::string msg = load_error();
  EXPECT_NE(msg.find("version 2 is newer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected version 1"), std::string::npos) << msg;
}

TEST_F(ManifestTest, WrongFormatRefused) {
  json_["format"] = "something-else";
  EXPECT_NE(load_error().find("not a ctok bundle"), std::string::npos);
}

TEST_F(ManifestTest, MissingRequiredKeyNamed) {
  json_["text"].erase("width");
  const std::string msg = load_error();
  EXPECT_NE(msg.find("text.width: missing required key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bundle.json"), std::string::npos) << msg;
}

TEST_F(ManifestTest, WrongTypeNamed) {
  json_["text"]["context_length"] = "16";
  const std::string msg = load_error();
  EXPECT_NE(msg.find("text.context_length: wrong type (expected integer, found string"), std::string::npos) << msg;
}

TEST_F(ManifestTest, UnknownKeyRejected) {
  json_["image"]["sise"] = 32;
  EXPECT_NE(load_error().find("image.sise"), std::string::npos);
}

TEST_F(ManifestTest, BadValuesRejected) {
  json_["text"]["width"] = 0;
  EXPECT_NE(load_error().find("text.width"), std::string::npos);
  reset();
  json_["text"]["eos_id"] = json_["text"]["vocab_size"];
  EXPECT_NE(load_error().find("text.eos_id"), std::string::npos);
  reset();
  json_["tokenizer"]["type"] = "wordpiece";
  std::string msg = load_error();
  EXPECT_NE(msg.find("sentencepiece | clip-bpe"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.type"), std::string::npos) << msg;
  reset();
  json_["image"]["mean"] = {0.5, 0.5};
  EXPECT_NE(load_error().find("image.mean"), std::string::npos);
  reset();
  json_["diffusion"]["prediction"] = "sample";
  EXPECT_NE(load_error().find("diffusion.prediction"), std::string::npos);
  reset();
  json_["diffusion"].erase("vae_decoder");
  EXPECT_NE(load_error().find("vae_decoder"), std::string::npos);
  reset();
  json_["sha256"]["unet.pt"] = "abc";
  EXPECT_NE(load_error().find("sha256.unet.pt"), std::string::npos);
  reset();
  json_["image"]["resize"] = "bilinear";  // not implemented by the image pipeline
  EXPECT_NE(load_error().find("image.resize"), std::string::npos);
  reset();
  json_["logit_scale"] = -1;
  EXPECT_NE(load_error().find("logit_scale"), std::string::npos);
}

TEST_F(ManifestTest, MissingFileNamesPathAndKey) {
  fs::remove(dir_ + "/image_encoder.pt");
  const std::string msg = load_error();
  EXPECT_NE(msg.find(dir_ + "/image_encoder.pt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("image.file"), std::string::npos) << msg;
}

TEST_F(ManifestTest, MissingDirectoryAndManifest) {
  try {
    ctok::model::load_manifest(dir_ + "/nope");
    FAIL();
  } catch (const ctok::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }
  fs::remove(dir_ + "/bundle.json");
  try {
    ctok::model::load_manifest(dir_);
    FAIL();
  } catch (const ctok::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bundle.json"), std::string::npos);
  }
}

TEST_F(ManifestTest, InvalidJsonNamesLine) {
  ctok::write_file_atomic(dir_ + "/bundle.json", std::string("{\n \"format\": \"ctok-bundle\",\n \"version\": ,\n}"));
  try {
    ctok::model::load_manifest(dir_);
    FAIL();
  } catch (const ctok::Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
}

TEST_F(ManifestTest, DiffusionIsOptional) {
  json_.erase("diffusion");
  save();
  const auto m = ctok::model::load_manifest(dir_);
  EXPECT_FALSE(m.diffusion.has_value());
  for (const auto& [key, file] : m.files()) EXPECT_EQ(key.find("diffusion"), std::string::npos);
}

TEST(Manifest, ClipBpePixelSpaceParses) {
  // parse_manifest does not touch the filesystem.
  Json j = {{"format", "ctok-bundle"},
            {"version", 1},
            {"name", "sd-like"},
            {"tokenizer", {{"type", "clip-bpe"}, {"file", "bpe_simple_vocab_16e6.txt.gz"}}},
            {"text",
             {{"file", "t.pt"},
              {"context_length", 77},
              {"width", 768},
              {"feature_dim", 768},
              {"vocab_size", 49408},
              {"bos_id", 49406},
              {"eos_id", 49407},
              {"pad_id", 49407}}},
            {"image",
             {{"file", "i.pt"},
              {"size", 224},
              {"mean", {0.48145466, 0.4578275, 0.40821073}},
              {"std", {0.26862954, 0.26130258, 0.27577711}},
              {"feature_dim", 768}}},
            {"logit_scale", 100.0},
            {"diffusion",
             {{"unet", "u.pt"},
              {"image_size", 64},
              {"num_train_timesteps", 1000},
              {"beta_schedule", "squaredcos_cap_v2"},
              {"prediction", "v_prediction"}}}};
  const auto m = ctok::model::parse_manifest(j, "/b", "mem");
  EXPECT_EQ(m.tokenizer.type, ctok::model::TokenizerType::kClipBpe);
  EXPECT_EQ(m.tokenizer_spec(), "clip-bpe:/b/bpe_simple_vocab_16e6.txt.gz");
  EXPECT_EQ(m.image.resize, "bicubic");  // default
  ASSERT_TRUE(m.diffusion.has_value());
  EXPECT_FALSE(m.diffusion->has_vae());
  EXPECT_EQ(m.diffusion->latent_channels, 3);
  EXPECT_EQ(m.diffusion->latent_size, 64);
  EXPECT_EQ(m.files().size(), 4u);
  j["version"] = 0;
  EXPECT_THROW(ctok::model::parse_manifest(j, "/b", "mem"), ctok::Error);
  EXPECT_THROW(ctok::model::parse_manifest(Json::array(), "/b", "mem"), ctok::Error);
}

TEST(Manifest, DefaultBundleDirHonoursEnvironment) {
  const char* old = std::getenv("CTOK_BUNDLE");
  const std::string saved = old ? old : "";
  ::setenv("CTOK_BUNDLE", "/some/where/bundle", 1);
  EXPECT_EQ(ctok::model::default_bundle_dir(), "/some/where/bundle");
  ::unsetenv("CTOK_BUNDLE");
  const std::string d = ctok::model::default_bundle_dir();
  EXPECT_NE(d.find("models/default"), std::string::npos) << d;
  if (!saved.empty()) ::setenv("CTOK_BUNDLE", saved.c_str(), 1);
}
