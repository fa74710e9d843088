#include "ctok/core/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "ctok/core/error.hpp"

namespace ctok {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Closes a descriptor on scope exit unless released.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

std::string parent_of(const std::string& path) {
  std::filesystem::path p(path);
  std::string parent = p.parent_path().string();
  return parent.empty() ? std::string(".") : parent;
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems do not allow opening directories
  ::fsync(fd);         // EINVAL on filesystems without directory fsync: nothing to do
  ::close(fd);
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  FdGuard guard;
  guard.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (guard.fd < 0) throw bad_input("cannot open file: " + errno_text(errno)).file(path);
  struct stat st {};
  if (::fstat(guard.fd, &st) != 0) throw bad_input("cannot stat file: " + errno_text(errno)).file(path);
  if (S_ISDIR(st.st_mode)) throw bad_input("is a directory, expected a file").file(path);
  std::vector<uint8_t> bytes;
  if (S_ISREG(st.st_mode)) bytes.reserve(static_cast<std::size_t>(st.st_size));
  uint8_t chunk[1 << 16];
  for (;;) {
    ssize_t n = ::read(guard.fd, chunk, sizeof(chunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw bad_input("cannot read file: " + errno_text(errno)).file(path);
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  return bytes;
}

std::string read_text_file(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

void write_file_atomic(const std::string& path, const void* data, std::size_t size) {
  if (path.empty()) throw bad_input("empty output path");
  const std::string dir = parent_of(path);
  if (!directory_exists(dir)) throw bad_input("output directory does not exist").file(dir);
  const std::string base = std::filesystem::path(path).filename().string();
  if (base.empty() || base == "." || base == "..") throw bad_input("output path names a directory").file(path);

  // A unique temporary name in the same directory, so rename() stays on one filesystem.
  static std::atomic<uint64_t> counter{0};
  const uint64_t stamp = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::string tmp;
  FdGuard guard;
  for (int attempt = 0; attempt < 100 && guard.fd < 0; ++attempt) {
    tmp = (std::filesystem::path(dir) / ("." + base + ".tmp." + std::to_string(::getpid()) + "." +
                                         std::to_string(counter++) + "." + std::to_string(stamp % 1000003)))
              .string();
    // 0666 before the umask: the same permissions an ordinary fopen would give.
    guard.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (guard.fd < 0 && errno != EEXIST) {
      throw bad_input("cannot create a file in the output directory: " + errno_text(errno)).file(path);
    }
  }
  if (guard.fd < 0) throw runtime_failure("cannot create a unique temporary file").file(path);

  auto fail = [&](const std::string& what, int err) {
    ::close(guard.fd);
    guard.fd = -1;
    ::unlink(tmp.c_str());
    return runtime_failure(what + ": " + errno_text(err)).file(path);
  };
  const auto* p = static_cast<const uint8_t*>(data);
  std::size_t left = size;
  while (left > 0) {
    ssize_t n = ::write(guard.fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw fail("write failed", errno);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(guard.fd) != 0) throw fail("fsync failed", errno);
  if (::close(guard.fd) != 0) {
    int err = errno;
    guard.fd = -1;
    ::unlink(tmp.c_str());
    throw runtime_failure("close failed: " + errno_text(err)).file(path);
  }
  guard.fd = -1;
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    if (err == EISDIR) throw bad_input("output path is a directory").file(path);
    throw runtime_failure("rename failed: " + errno_text(err)).file(path);
  }
  fsync_directory(dir);
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

void ensure_parent_dir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec || !directory_exists(parent.string())) {
    throw bad_input("cannot create directory: " + (ec ? ec.message() : std::string("not a directory")))
        .file(parent.string());
  }
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool directory_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string executable_dir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec || exe.empty() ? std::string() : exe.parent_path().string();
}

std::vector<std::string> executable_data_candidates(const std::string& relative) {
  const std::string exe = executable_dir();
  if (exe.empty()) return {};
  const std::filesystem::path bin(exe);
  return {(bin / ".." / "share" / "ctok" / relative).string(), (bin / ".." / ".." / relative).string()};
}

}  // namespace ctok
