// File helpers: whole-file reads with errors that name the file, and atomic writes.
//
//   std::vector<uint8_t> bytes = ctok::read_file("in.bin");        // bad_input if unreadable
//   ctok::write_file_atomic("out/result.json", json_text);         // temp + fsync + rename
//
// An atomic write never leaves a half-written file under the final name: the data goes to
// a temporary file in the same directory, which is fsync'ed and renamed over the target,
// and then the directory itself is fsync'ed so the rename survives a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ctok {

// The whole file. Throws bad_input naming the file if it is missing or unreadable.
std::vector<uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);

// Replace `path` atomically with `size` bytes. Throws bad_input naming the path when the
// directory is missing or not writable, runtime_failure on I/O errors (disk full, ...).
// The parent directory must exist (see ensure_parent_dir).
void write_file_atomic(const std::string& path, const void* data, std::size_t size);
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
void write_file_atomic(const std::string& path, const std::string& text);

// Create the parent directory of `path` (and its parents) if missing.
void ensure_parent_dir(const std::string& path);

bool file_exists(const std::string& path);       // a regular file (after symlinks)
bool directory_exists(const std::string& path);  // a directory (after symlinks)

// The folder of the running executable (from /proc/self/exe); empty when it cannot be read.
std::string executable_dir();
// Where an installed or built executable finds the data folder `relative` (e.g.
// "models/default"): <exe>/../share/ctok/<relative> (installed), then <exe>/../../<relative>
// (a build tree inside the source tree). Empty when the executable's folder is unknown.
// Callers add their own environment variable before and install / source dirs after.
std::vector<std::string> executable_data_candidates(const std::string& relative);

}  // namespace ctok
