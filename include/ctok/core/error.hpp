// ctok::Error — the one exception type of the library.
//
//   throw ctok::bad_input("header length exceeds the file size")
//       .file(path).expected("<= " + std::to_string(size - 8)).found(std::to_string(n));
//
// Each tool's main catches it once (tool::run_tool in tools/common/tool.hpp): message to stderr,
// exit code 2 for bad input, 1 for a runtime failure.
#pragma once

#include <stdexcept>
#include <string>

namespace ctok {

enum class ErrorKind { kRuntime = 1, kBadInput = 2 };

class Error : public std::exception {
 public:
  Error(ErrorKind kind, std::string message);

  // Context, chainable. Each returns *this so `throw bad_input(...).file(p)` works.
  Error& file(std::string path);
  Error& key(std::string key);
  Error& expected(std::string what);
  Error& found(std::string what);

  ErrorKind kind() const noexcept { return kind_; }
  int exit_code() const noexcept { return static_cast<int>(kind_); }
  const std::string& message() const noexcept { return message_; }
  const std::string& file_context() const noexcept { return file_; }
  const std::string& key_context() const noexcept { return key_; }
  // "<file>: <key>: <message> (expected X, found Y)".
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  void rebuild();
  ErrorKind kind_;
  std::string message_, file_, key_, expected_, found_, what_;
};

// Bad usage or bad input (exit code 2).
Error bad_input(std::string message);
// Anything else that went wrong at run time (exit code 1).
Error runtime_failure(std::string message);

}  // namespace ctok
