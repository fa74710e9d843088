#include "ctok/core/error.hpp"

#include <utility>

namespace ctok {

Error::Error(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) { rebuild(); }

Error& Error::file(std::string path) {
  file_ = std::move(path);
  rebuild();
  return *this;
}
Error& Error::key(std::string key) {
  key_ = std::move(key);
  rebuild();
  return *this;
}
Error& Error::expected(std::string what) {
  expected_ = std::move(what);
  rebuild();
  return *this;
}
Error& Error::found(std::string what) {
  found_ = std::move(what);
  rebuild();
  return *this;
}

void Error::rebuild() {
  what_.clear();
  if (!file_.empty()) what_ += file_ + ": ";
  if (!key_.empty()) what_ += key_ + ": ";
  what_ += message_;
  if (!expected_.empty() || !found_.empty()) {
    what_ += " (";
    if (!expected_.empty()) what_ += "expected " + expected_;
    if (!expected_.empty() && !found_.empty()) what_ += ", ";
    if (!found_.empty()) what_ += "found " + found_;
    what_ += ")";
  }
}

Error bad_input(std::string message) { return Error(ErrorKind::kBadInput, std::move(message)); }
Error runtime_failure(std::string message) { return Error(ErrorKind::kRuntime, std::move(message)); }

}  // namespace ctok
