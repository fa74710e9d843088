// Bundle loading, validation errors, and parity with reference.safetensors: the C++
// runtime must compute the exporter's numbers (tolerances in docs/bundle.md).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "ctok/core/error.hpp"
#include "ctok/core/safetensors.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/diffusion.hpp"
#include "ctok/model/reference.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using namespace ctok::model;
using ctok::test::expect_bad_input;

namespace {

const std::string kTiny = std::string(CTOK_TEST_DATA) + "/tiny_bundle";
const std::string kDefault = std::string(CTOK_SOURCE_DIR) + "/models/default";

BundleOptions opts(const std::string& dir, bool diffusion = true) {
  BundleOptions o;
  o.dir = dir;
  o.load_diffusion = diffusion;
  return o;
}

// A writable copy of the fixture whose bundle.json `edit` may change.
class BundleCopy {
 public:
  template <typename F>
  explicit BundleCopy(F edit) {
    dir_ = fs::temp_directory_path() / ("ctok_model_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(dir_);
    fs::copy(kTiny, dir_, fs::copy_options::recursive);
    nlohmann::json j;
    std::ifstream(dir_ / "bundle.json") >> j;
    edit(j);
    std::ofstream(dir_ / "bundle.json") << j.dump(2);
  }
  ~BundleCopy() { fs::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }

 private:
  fs::path dir_;
  static inline int counter_ = 0;
};

}  // namespace

TEST(ModelBundle, LoadsTinyBundle) {
  Bundle b = Bundle::load(opts(kTiny));
  EXPECT_EQ(b.name(), "fixture-tiny");
  EXPECT_EQ(b.width(), 24);
  EXPECT_EQ(b.context_length(), 16);
  EXPECT_EQ(b.token_embedding().sizes(), (std::vector<int64_t>{76, 24}));
  EXPECT_FALSE(b.token_embedding().requires_grad());
  EXPECT_FALSE(b.token_embedding().is_inference());
  EXPECT_TRUE(b.diffusion_loaded());
  EXPECT_TRUE(b.has_vae());
  EXPECT_EQ(b.dtype(), torch::kFloat32);
  EXPECT_EQ(b.text_encoder_sha256().size(), 64u);
  for (const auto& p : b.text_encoder().parameters()) {
    EXPECT_FALSE(p.requires_grad());
    EXPECT_FALSE(p.is_inference());
  }
  EXPECT_TRUE(fs::path(b.dir()).is_absolute());
}

TEST(ModelBundle, MissingDirectoryNamesPath) {
  expect_bad_input([] { Bundle::load(opts("/nonexistent/bundle/dir")); }, {"/nonexistent/bundle/dir"});
}

TEST(ModelBundle, NewerVersionIsRefused) {
  BundleCopy c([](nlohmann::json& j) { j["version"] = 2; });
  expect_bad_input([&] { Bundle::load(opts(c.dir())); }, {"version"});
}

TEST(ModelBundle, Sha256MismatchNamesFileAndCanBeSkipped) {
  BundleCopy c([](nlohmann::json& j) { j["sha256"]["unet.pt"] = std::string(64, '0'); });
  expect_bad_input([&] { Bundle::load(opts(c.dir())); }, {"unet.pt"});
  BundleOptions o = opts(c.dir());
  o.verify_sha256 = false;
  EXPECT_NO_THROW(Bundle::load(o));
}

TEST(ModelBundle, EmbeddingWidthMismatchNamesBothNumbers) {
  BundleCopy c([](nlohmann::json& j) { j["text"]["width"] = 32; });
  expect_bad_input([&] { Bundle::load(opts(c.dir())); }, {"24", "32", "text"});
}

TEST(ModelBundle, FeatureDimMismatchFoundByDryForward) {
  BundleCopy c([](nlohmann::json& j) { j["image"]["feature_dim"] = 17; });
  expect_bad_input([&] { Bundle::load(opts(c.dir())); }, {"[1, 17]", "[1, 16]", "image_encoder.pt"});
}

TEST(ModelBundle, LatentSizeMismatchFoundByDryForward) {
  BundleCopy c([](nlohmann::json& j) { j["diffusion"]["image_size"] = 64; });
  expect_bad_input([&] { Bundle::load(opts(c.dir())); }, {"vae"});
}

TEST(ModelBundle, NoDiffusionSection) {
  BundleCopy c([](nlohmann::json& j) {
    j.erase("diffusion");
    for (const char* f : {"unet.pt", "vae_encoder.pt", "vae_decoder.pt"}) j["sha256"].erase(f);
  });
  expect_bad_input([&] { Bundle::load(opts(c.dir(), true)); }, {"diffusion"});
  Bundle b = Bundle::load(opts(c.dir(), false));
  EXPECT_FALSE(b.has_diffusion());
  expect_bad_input([&] { DiffusionModel d(b); }, {"diffusion"});
}

TEST(ModelBundle, CudaWithoutCudaIsBadInput) {
  if (cuda_available()) GTEST_SKIP() << "this build has CUDA";
  BundleOptions o = opts(kTiny);
  o.device = parse_device("cuda");
  expect_bad_input([&] { Bundle::load(o); }, {"cuda", "CUDA"});
  expect_bad_input([] { parse_device("tpu"); }, {"tpu"});
}

// ---- parity with reference.safetensors, one test per key ------------------------------

struct ParityCase {
  std::string bundle_dir;
  std::string key;
};
void PrintTo(const ParityCase& c, std::ostream* os) { *os << c.key << " of " << c.bundle_dir; }

class ReferenceParity : public ::testing::TestWithParam<ParityCase> {
 protected:
  static std::map<std::string, std::vector<ReferenceCheck>>& cache() {
    static std::map<std::string, std::vector<ReferenceCheck>> c;
    return c;
  }
};

TEST_P(ReferenceParity, WithinTolerance) {
  const auto& p = GetParam();
  if (!fs::exists(p.bundle_dir + "/bundle.json")) GTEST_SKIP() << "no bundle at " << p.bundle_dir;
  auto& c = cache();
  if (!c.count(p.bundle_dir)) {
    Bundle b = Bundle::load(opts(p.bundle_dir));
    c[p.bundle_dir] = check_reference(b);
  }
  const ReferenceCheck* found = nullptr;
  for (const auto& r : c[p.bundle_dir]) {
    if (r.key == p.key) found = &r;
  }
  ASSERT_NE(found, nullptr) << p.key << " was not checked (missing from the reference file?)";
  RecordProperty("max_abs_error", std::to_string(found->max_abs_error));
  EXPECT_TRUE(found->passed) << p.key << ": max |error| " << found->max_abs_error << ", worst ratio "
                             << found->worst_ratio << " (" << found->note << ")";
  std::cout << "  " << p.key << ": max |error| " << found->max_abs_error << "\n";
}

namespace {
std::vector<ParityCase> parity_cases(const std::string& dir) {
  std::vector<ParityCase> out;
  for (const char* k : {"text.input_ids", "text.eos_index", "text.embeds", "text.hidden", "text.features",
                        "image.features", "unet.out", "vae.latents", "vae.decoded"}) {
    out.push_back({dir, k});
  }
  return out;
}
std::string case_name(const ::testing::TestParamInfo<ParityCase>& info) {
  std::string s = info.param.key;
  for (auto& ch : s) if (ch == '.') ch = '_';
  return s;
}
}  // namespace

INSTANTIATE_TEST_SUITE_P(Tiny, ReferenceParity, ::testing::ValuesIn(parity_cases(kTiny)), case_name);
INSTANTIATE_TEST_SUITE_P(Default, ReferenceParity, ::testing::ValuesIn(parity_cases(kDefault)), case_name);

TEST(ModelBundle, ReferenceCheckDetectsAWrongNumber) {
  // The check must be able to fail: compare against a tampered reference file.
  Bundle b = Bundle::load(opts(kTiny));
  auto file = ctok::read_safetensors(kTiny + "/reference.safetensors");
  auto& t = file.tensors.at("text.features");
  float* v = reinterpret_cast<float*>(t.bytes.data());
  v[3] += 1e-3f;
  const std::string path = (fs::temp_directory_path() / ("ctok_ref_" + std::to_string(::getpid()) + ".safetensors")).string();
  ctok::write_safetensors(path, file);
  bool saw = false;
  for (const auto& r : check_reference(b, default_tolerance(Precision::kFp32), path)) {
    if (r.key == "text.features") {
      saw = true;
      EXPECT_FALSE(r.passed);
      EXPECT_NEAR(r.max_abs_error, 1e-3, 2e-4);
    } else {
      EXPECT_TRUE(r.passed) << r.key;
    }
  }
  EXPECT_TRUE(saw);
  fs::remove(path);
}

TEST(ModelBundle, ReducedPrecisionWhereSupported) {
  for (Precision p : {Precision::kBf16, Precision::kFp16}) {
    BundleOptions o = opts(kTiny);
    o.precision = p;
    try {
      Bundle b = Bundle::load(o);
      EXPECT_EQ(b.dtype(), p == Precision::kBf16 ? torch::kBFloat16 : torch::kFloat16);
      for (const auto& r : check_reference(b)) {
        EXPECT_TRUE(r.passed) << precision_name(p) << " " << r.key << " max |error| " << r.max_abs_error;
      }
    } catch (const ctok::Error& e) {
      // Not every op has a CPU kernel in every precision: the error must say so clearly.
      EXPECT_EQ(e.exit_code(), 2);
      EXPECT_NE(std::string(e.what()).find(precision_name(p)), std::string::npos) << e.what();
      std::cout << "  " << precision_name(p) << " unsupported here: " << e.what() << "\n";
    }
  }
}

TEST(ModelBundle, FrozenModulesKeepParity) {
  // Default: image encoder frozen; optimize: every module. Both must still match the reference.
  for (bool all : {false, true}) {
    BundleOptions o = opts(kTiny);
    o.optimize = all;
    Bundle b = Bundle::load(o);
    for (const auto& r : check_reference(b)) EXPECT_TRUE(r.passed) << (all ? "all frozen: " : "default: ") << r.key;
  }
  BundleOptions plain = opts(kTiny);
  plain.optimize_image = false;
  Bundle b = Bundle::load(plain);
  for (const auto& r : check_reference(b)) EXPECT_TRUE(r.passed) << "plain: " << r.key;
}

TEST(ModelBundle, UNetContextWidthMismatchNamesBothWidths) {
  // The default bundle's UNet (context width 128) inside the fixture (text.width 24).
  if (!fs::exists(kDefault + "/unet.pt")) GTEST_SKIP() << "no default bundle";
  BundleCopy c([](nlohmann::json& j) { j["sha256"].erase("unet.pt"); });
  fs::copy_file(kDefault + "/unet.pt", c.dir() + "/unet.pt", fs::copy_options::overwrite_existing);
  expect_bad_input([&] { Bundle::load(opts(c.dir())); }, {"unet.pt", "diffusion.unet", "24", "128"});
}
