// core: errors, atomic writes, sha256, strict JSON helpers, progress, threads.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/json.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/model/manifest.hpp"

#include "unit/test_util.hpp"

namespace fs = std::filesystem;
using ctok::test::TempDir;

namespace {

template <typename F>
ctok::Error catch_error(F&& f) {
  try {
    f();
  } catch (const ctok::Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected ctok::Error";
  return ctok::runtime_failure("no error thrown");
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

// ---- errors ----------------------------------------------------------------------

TEST(Error, FormatsContext) {
  ctok::Error e = ctok::bad_input("header length exceeds the file size").file("a.st").expected("<= 10").found("99");
  EXPECT_STREQ(e.what(), "a.st: header length exceeds the file size (expected <= 10, found 99)");
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_EQ(e.exit_code(), 2);
  ctok::Error r = ctok::runtime_failure("boom").key("text.width");
  EXPECT_STREQ(r.what(), "text.width: boom");
  EXPECT_EQ(r.exit_code(), 1);
  EXPECT_STREQ(ctok::bad_input("plain").found("x").what(), "plain (found x)");
}

// ---- files ------------------------------------------------------------------------

TEST(Fs, ReadMissingFileNamesIt) {
  TempDir dir;
  ctok::Error e = catch_error([&] { ctok::read_file(dir / "nope.bin"); });
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("nope.bin"), std::string::npos) << e.what();
}

TEST(Fs, ReadDirectoryIsAnError) {
  TempDir dir;
  ctok::Error e = catch_error([&] { ctok::read_file(dir.path()); });
  EXPECT_NE(std::string(e.what()).find("directory"), std::string::npos) << e.what();
}

TEST(Fs, AtomicWriteReplacesWholeFileAndLeavesNoTemp) {
  TempDir dir;
  const std::string path = dir / "out.txt";
  ctok::write_file_atomic(path, std::string(10000, 'a'));
  ctok::write_file_atomic(path, std::string("short"));
  EXPECT_EQ(ctok::read_text_file(path), "short");  // not "short" followed by old bytes
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"out.txt"});
  std::vector<uint8_t> bytes = {0, 1, 2, 255};
  ctok::write_file_atomic(path, bytes);
  EXPECT_EQ(ctok::read_file(path), bytes);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"out.txt"});
}

TEST(Fs, AtomicWriteEmptyFile) {
  TempDir dir;
  ctok::write_file_atomic(dir / "empty", std::string());
  EXPECT_TRUE(ctok::file_exists(dir / "empty"));
  EXPECT_TRUE(ctok::read_file(dir / "empty").empty());
}

TEST(Fs, AtomicWriteMissingDirectoryNamesIt) {
  TempDir dir;
  ctok::Error e = catch_error([&] { ctok::write_file_atomic(dir / "missing/out.txt", std::string("x")); });
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
}

TEST(Fs, AtomicWriteUnwritableDirectoryNamesPath) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  TempDir dir;
  fs::create_directory(dir / "ro");
  fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  ctok::Error e = catch_error([&] { ctok::write_file_atomic(dir / "ro/out.txt", std::string("x")); });
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("ro/out.txt"), std::string::npos) << e.what();
  fs::permissions(dir / "ro", fs::perms::owner_all);
  EXPECT_TRUE(list_dir(dir / "ro").empty());
}

TEST(Fs, AtomicWriteOverDirectoryFails) {
  TempDir dir;
  fs::create_directory(dir / "sub");
  fs::create_directory(dir / "sub/x");
  EXPECT_THROW(ctok::write_file_atomic(dir / "sub/x", std::string("data")), ctok::Error);
  EXPECT_EQ(list_dir(dir / "sub"), std::vector<std::string>{"x"});  // temp file cleaned up
}

TEST(Fs, ConcurrentAtomicWritesNeverTear) {
  TempDir dir;
  const std::string path = dir / "shared.txt";
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) ctok::write_file_atomic(path, std::string(4096, static_cast<char>('a' + t)));
    });
  }
  for (auto& th : threads) th.join();
  std::string content = ctok::read_text_file(path);
  ASSERT_EQ(content.size(), 4096u);
  EXPECT_EQ(content, std::string(4096, content[0]));
  EXPECT_EQ(list_dir(dir.path()).size(), 1u);
}

TEST(Fs, EnsureParentDir) {
  TempDir dir;
  const std::string path = dir / "a/b/c/file.json";
  ctok::ensure_parent_dir(path);
  EXPECT_TRUE(ctok::directory_exists(dir / "a/b/c"));
  ctok::ensure_parent_dir(path);  // idempotent
  ctok::ensure_parent_dir("relative-file-without-dir.json");
  ctok::write_file_atomic(dir / "a/plainfile", std::string("x"));
  EXPECT_THROW(ctok::ensure_parent_dir(dir / "a/plainfile/sub/file"), ctok::Error);
}

// ---- sha256 -----------------------------------------------------------------------

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(ctok::sha256_hex(std::string()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(ctok::sha256_hex(std::string("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ctok::sha256_hex(std::string("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(ctok::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // 55/56/64 bytes: the padding boundary cases.
  EXPECT_EQ(ctok::sha256_hex(std::string(55, 'a')), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(ctok::sha256_hex(std::string(56, 'a')), "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(ctok::sha256_hex(std::string(64, 'a')), "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256, IncrementalMatchesOneShot) {
  std::string text;
  for (int i = 0; i < 3000; ++i) text += static_cast<char>(i * 7 + 3);
  ctok::Sha256 h;
  for (std::size_t i = 0; i < text.size(); i += 37) h.update(text.data() + i, std::min<std::size_t>(37, text.size() - i));
  EXPECT_EQ(h.hex_digest(), ctok::sha256_hex(text));
}

TEST(Sha256, FileStreaming) {
  TempDir dir;
  std::string big(3 * 1024 * 1024 + 17, 'x');
  ctok::write_file_atomic(dir / "big", big);
  EXPECT_EQ(ctok::sha256_file(dir / "big"), ctok::sha256_hex(big));
  EXPECT_THROW(ctok::sha256_file(dir / "absent"), ctok::Error);
}

// ---- json -------------------------------------------------------------------------

TEST(Json, ParseErrorNamesFileLineColumn) {
  TempDir dir;
  ctok::write_file_atomic(dir / "bad.json", std::string("{\n  \"a\": 1,\n  \"b\": tru\n}\n"));
  ctok::Error e = catch_error([&] { ctok::json::parse_file(dir / "bad.json"); });
  const std::string what = e.what();
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(what.find("bad.json"), std::string::npos) << what;
  EXPECT_NE(what.find("line 3"), std::string::npos) << what;
  EXPECT_NE(what.find("column"), std::string::npos) << what;
}

TEST(Json, MissingFileIsBadInput) {
  ctok::Error e = catch_error([] { ctok::json::parse_file("/nonexistent/ctok/config.json"); });
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("/nonexistent/ctok/config.json"), std::string::npos);
}

TEST(Json, DuplicateKeysRejected) {
  ctok::Error e = catch_error([] { ctok::json::parse_string(R"({"a": 1, "b": {"x": 1, "x": 2}})", "cfg.json"); });
  EXPECT_NE(std::string(e.what()).find("duplicate"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("x"), std::string::npos) << e.what();
  // The same key in different objects is fine.
  EXPECT_NO_THROW(ctok::json::parse_string(R"({"a": {"x": 1}, "b": {"x": 2}})", "cfg.json"));
}

TEST(Json, DeepNestingAndHugeNumbersAreBadInput) {
  // A crafted file must not overflow the stack in later recursive code (dump, copies).
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  ctok::Error e = catch_error([&] { ctok::json::parse_string(deep, "deep.json"); });
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("deep.json"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("nested too deeply"), std::string::npos) << e.what();
  EXPECT_NO_THROW(ctok::json::parse_string(std::string(200, '[') + std::string(200, ']'), "ok.json"));
  e = catch_error([&] { ctok::json::parse_string(R"({"x": 1e400})", "num.json"); });
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("num.json"), std::string::npos) << e.what();
}

TEST(Json, RequireAndOptional) {
  auto j = ctok::json::parse_string(
      R"({"steps": 100, "lr": 0.5, "name": "x", "on": true, "words": ["a", "b"], "n": 3.0, "big": 5000000000,
          "neg": -1, "m": {"k": "v"}})",
      "cfg.json");
  EXPECT_EQ(ctok::json::require<int64_t>(j, "steps", "cfg.json"), 100);
  EXPECT_DOUBLE_EQ(ctok::json::require<double>(j, "lr", "cfg.json"), 0.5);
  EXPECT_DOUBLE_EQ(ctok::json::require<double>(j, "steps", "cfg.json"), 100.0);  // integers are numbers
  EXPECT_EQ(ctok::json::require<std::string>(j, "name", "cfg.json"), "x");
  EXPECT_TRUE(ctok::json::require<bool>(j, "on", "cfg.json"));
  EXPECT_EQ(ctok::json::require<std::vector<std::string>>(j, "words", "cfg.json"),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ((ctok::json::require<std::map<std::string, std::string>>(j, "m", "cfg.json").at("k")), "v");
  EXPECT_EQ(ctok::json::optional<int>(j, "absent", "cfg.json", 7), 7);
  EXPECT_EQ(ctok::json::optional<int>(j, "steps", "cfg.json", 7), 100);
  EXPECT_FALSE(ctok::json::find<int>(j, "absent", "cfg.json").has_value());
  EXPECT_EQ(ctok::json::require<int64_t>(j, "big", "cfg.json"), 5000000000LL);
}

TEST(Json, WrongTypesNamedWithExpectedAndFound) {
  auto j = ctok::json::parse_string(
      R"({"steps": "100", "lr": "fast", "n": 3.5, "big": 5000000000, "neg": -1, "words": ["a", 2]})", "cfg.json");
  ctok::Error e = catch_error([&] { ctok::json::require<int64_t>(j, "steps", "cfg.json"); });
  EXPECT_STREQ(e.what(), "cfg.json: steps: wrong type (expected integer, found string \"100\")");
  e = catch_error([&] { ctok::json::require<double>(j, "lr", "cfg.json"); });
  EXPECT_NE(std::string(e.what()).find("expected number"), std::string::npos) << e.what();
  e = catch_error([&] { ctok::json::require<int>(j, "n", "cfg.json"); });
  EXPECT_NE(std::string(e.what()).find("found number 3.5"), std::string::npos) << e.what();
  e = catch_error([&] { ctok::json::require<int32_t>(j, "big", "cfg.json"); });
  EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  e = catch_error([&] { ctok::json::require<uint32_t>(j, "neg", "cfg.json"); });
  EXPECT_NE(std::string(e.what()).find("non-negative"), std::string::npos) << e.what();
  e = catch_error([&] { ctok::json::require<std::vector<std::string>>(j, "words", "cfg.json"); });
  EXPECT_NE(std::string(e.what()).find("words[1]"), std::string::npos) << e.what();
  e = catch_error([&] { ctok::json::require<int>(j, "missing", "cfg.json"); });
  EXPECT_NE(std::string(e.what()).find("missing required key"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("cfg.json: missing"), std::string::npos) << e.what();
  // Optional keys still type-check when present, null included.
  auto k = ctok::json::parse_string(R"({"lr": null})", "cfg.json");
  EXPECT_THROW(ctok::json::optional<double>(k, "lr", "cfg.json", 1.0), ctok::Error);
  // Not an object at all.
  EXPECT_THROW(ctok::json::require<int>(ctok::json::Json::array(), "x", "cfg.json"), ctok::Error);
}

TEST(Json, CheckKeysRejectsUnknown) {
  auto j = ctok::json::parse_string(R"({"steps": 1, "stpes": 2})", "cfg.json");
  ctok::Error e = catch_error([&] { ctok::json::check_keys(j, {"steps", "lr"}, "cfg.json"); });
  EXPECT_EQ(e.kind(), ctok::ErrorKind::kBadInput);
  EXPECT_NE(std::string(e.what()).find("stpes"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("steps, lr"), std::string::npos) << e.what();
  EXPECT_NO_THROW(ctok::json::check_keys(ctok::json::parse_string(R"({"lr": 1})", "c"), {"steps", "lr"}, "c"));
}

// ---- progress ---------------------------------------------------------------------

TEST(Progress, PlainModeLogsAtTheEnd) {
  std::vector<std::string> lines;
  ctok::ProgressOptions opt;
  opt.label = "learn";
  opt.tty = 0;
  opt.log_every_s = 3600;  // only the final line
  opt.line_sink = [&](const std::string& l) { lines.push_back(l); };
  {
    ctok::Progress p(10, opt);
    for (int i = 0; i < 10; ++i) p.advance();
    p.set_suffix("loss 0.1234");
    p.finish();
    p.finish();  // idempotent
    p.advance(); // ignored after finish
    EXPECT_EQ(p.count(), 10);
  }
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].rfind("learn: 10/10 ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("done in"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("| loss 0.1234"), std::string::npos) << lines[0];
}

TEST(Progress, PlainModePeriodicLines) {
  std::vector<std::string> lines;
  ctok::ProgressOptions opt;
  opt.tty = 0;
  opt.log_every_s = 0;  // every advance
  opt.line_sink = [&](const std::string& l) { lines.push_back(l); };
  ctok::Progress p(4, opt);
  p.advance();
  p.advance();
  p.finish();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find("1/4"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("ETA"), std::string::npos) << lines[0];
  EXPECT_NE(lines[2].find("done"), std::string::npos) << lines[2];
}

TEST(Progress, DisabledPrintsNothing) {
  int calls = 0;
  ctok::ProgressOptions opt;
  opt.tty = 0;
  opt.enabled = false;
  opt.log_every_s = 0;
  opt.line_sink = [&](const std::string&) { ++calls; };
  {
    ctok::Progress p(3, opt);
    p.advance(3);
  }
  EXPECT_EQ(calls, 0);
}

TEST(Progress, ThreadSafeAdvance) {
  ctok::ProgressOptions opt;
  opt.tty = 0;
  opt.log_every_s = 0;
  std::atomic<int> lines{0};
  opt.line_sink = [&](const std::string&) { ++lines; };
  ctok::Progress p(8000, opt);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        p.advance();
        if (i % 100 == 0) p.set_suffix("t" + std::to_string(i));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(p.count(), 8000);
  p.finish();
  EXPECT_EQ(lines.load(), 8001);
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(ctok::Progress::format_duration(0), "00:00");
  EXPECT_EQ(ctok::Progress::format_duration(83), "01:23");
  EXPECT_EQ(ctok::Progress::format_duration(3723), "1:02:03");
  EXPECT_EQ(ctok::Progress::format_duration(-1), "--:--");
}

TEST(Progress, UnknownTotalHasNoEta) {
  ctok::ProgressOptions opt;
  opt.tty = 0;
  opt.enabled = false;
  ctok::Progress p(0, opt);
  p.advance(5);
  std::string s = p.status_text(false);
  EXPECT_EQ(s.rfind("5 ", 0), 0u) << s;
  EXPECT_EQ(s.find("ETA"), std::string::npos) << s;
}

// ---- logging and threads ----------------------------------------------------------

TEST(Log, VerbosityLevels) {
  ctok::init_logging(-1);
  EXPECT_TRUE(ctok::log_quiet());
  ctok::init_logging(0);
  EXPECT_FALSE(ctok::log_quiet());
  EXPECT_EQ(ctok::log_verbosity(), 0);
  ctok::init_logging(1);
  EXPECT_EQ(ctok::log_verbosity(), 1);
  ctok::init_logging(0);
}

TEST(Log, QuietModeSilencesProgress) {
  ctok::init_logging(-1);
  int calls = 0;
  ctok::ProgressOptions opt;
  opt.tty = 0;
  opt.line_sink = [&](const std::string&) { ++calls; };
  {
    ctok::Progress p(2, opt);
    p.advance(2);
  }
  ctok::init_logging(0);
  EXPECT_EQ(calls, 0);
}

TEST(Threads, Configure) {
  EXPECT_EQ(ctok::configure_threads(2), 2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(ctok::configure_threads(0), ctok::hardware_threads());
  EXPECT_GE(ctok::hardware_threads(), 1);
  EXPECT_THROW(ctok::configure_threads(-1), ctok::Error);
  EXPECT_EQ(ctok::configure_threads(2, 1), 2);
  EXPECT_THROW(ctok::configure_threads(1, -1), ctok::Error);
}

// The default bundle is small: one libtorch thread unless asked, one OpenBLAS thread always
// (the two pools together were 2-3x slower). A bundle that cannot be read counts as big.
TEST(Threads, PlanBySize) {
  const auto small = ctok::model::thread_plan(ctok::model::default_bundle_dir());
  EXPECT_TRUE(small.small_bundle);
  EXPECT_EQ(small.threads, 1);
  EXPECT_EQ(small.blas_threads, 1);
  EXPECT_EQ(ctok::model::thread_plan(ctok::model::default_bundle_dir(), 3).threads, 3);
  EXPECT_EQ(ctok::model::thread_plan(ctok::model::default_bundle_dir(), 3).blas_threads, 1);
  const auto big = ctok::model::thread_plan("/nonexistent/bundle");
  EXPECT_FALSE(big.small_bundle);
  EXPECT_EQ(big.threads, 0);
  EXPECT_EQ(big.blas_threads, 0);
  // A limit below the default bundle's size makes it big.
  EXPECT_FALSE(ctok::model::thread_plan(ctok::model::default_bundle_dir(), 0, 1024).small_bundle);
}
