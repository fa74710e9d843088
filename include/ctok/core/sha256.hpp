// SHA-256 (FIPS 180-4), self-contained: no OpenSSL.
//
//   std::string h = ctok::sha256_hex(bytes);             // 64 lowercase hex digits
//   std::string f = ctok::sha256_file("unet.pt");        // streamed, constant memory
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ctok {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t size);
  std::array<uint8_t, 32> digest();  // finishes; call once
  std::string hex_digest();          // finishes; call once

 private:
  void compress(const uint8_t* block);
  uint32_t state_[8];
  uint8_t buffer_[64];
  std::size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(const void* data, std::size_t size);
std::string sha256_hex(const std::vector<uint8_t>& bytes);
std::string sha256_hex(const std::string& text);
// Streams the file; throws bad_input naming the file if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace ctok
