#pragma once
// Memory for secrets (passphrases, volume keys): locked in RAM so it is never swapped out,
// excluded from core dumps, and wiped before it is given back.
#include <cstddef>
#include <span>
#include <string>

namespace volgate::crypto {

class SecureBytes {
 public:
  SecureBytes() = default;
  explicit SecureBytes(size_t size);
  ~SecureBytes();
  SecureBytes(SecureBytes&& other) noexcept;
  SecureBytes& operator=(SecureBytes&& other) noexcept;
  SecureBytes(const SecureBytes&) = delete;
  SecureBytes& operator=(const SecureBytes&) = delete;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  const char* chars() const { return reinterpret_cast<const char*>(data_); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const std::byte> span() const { return {data_, size_}; }

  // Wipes everything past `size` and makes that the size; never grows.
  void shrink(size_t size);

 private:
  void release();

  std::byte* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

// Longest passphrase accepted from a key file (cryptsetup's own limit is 8 MiB).
constexpr size_t kMaxKeyFileSize = 8 * 1024 * 1024;

// Reads a whole key file as the passphrase, byte for byte (no newline is stripped, as with
// cryptsetup --key-file). "-" reads standard input. Throws std::runtime_error naming the path
// (never the content) when the file is missing, empty or too large.
SecureBytes read_key_file(const std::string& path);

}  // namespace volgate::crypto
