// Helpers shared by the unit tests (include as "unit/test_util.hpp").
//
//   ctok::test::expect_bad_input([&] { parse(text); }, "steps");   // kind and message
//   ctok::test::TempDir dir;                                      // removed with its contents
//   write(dir / "a.json");                                        // dir.file("a.json") too
//
// Other checks on the error (its file_context, ...) go on the message it returns or in
// the test's own try/catch.
#pragma once

#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "ctok/core/error.hpp"

namespace ctok::test {

// Runs `f` and expects it to throw ctok's bad_input whose message contains each of
// `needles`; records a test failure otherwise. Returns the message ("" if none was thrown).
template <typename F>
std::string expect_bad_input(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << e.what();
    for (const auto& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
    }
    return e.what();
  }
  std::string all;
  for (const auto& n : needles) all += (all.empty() ? "" : ", ") + n;
  ADD_FAILURE() << "no exception; expected bad_input mentioning: " << all;
  return {};
}

template <typename F>
std::string expect_bad_input(F&& f, std::initializer_list<std::string> needles) {
  return expect_bad_input(std::forward<F>(f), std::vector<std::string>(needles));
}

template <typename F>
std::string expect_bad_input(F&& f, const std::string& needle = "") {
  return expect_bad_input(std::forward<F>(f), std::vector<std::string>{needle});
}

// A fresh directory under the system temp dir (mkdtemp), removed with its contents
// (permissions restored first) when the object goes.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "ctok_test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      std::filesystem::permissions(it->path(), std::filesystem::perms::owner_all,
                                   std::filesystem::perm_options::add, ec);
    }
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::filesystem::path fs_path() const { return path_; }
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  std::string operator/(const std::string& name) const { return file(name); }

 private:
  std::string path_;
};

}  // namespace ctok::test
