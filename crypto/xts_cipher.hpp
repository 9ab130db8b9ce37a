#pragma once
// AES-XTS over LUKS encryption sectors, with the process's proven provider (xts_provider.hpp:
// OpenSSL or libgcrypt).
//
// Each encryption sector (512 or 4096 bytes) is one XTS data unit. Its tweak is the plain64 IV:
// the number of 512-byte sectors from the start of the data segment, plus the segment's
// iv_offset, as a little-endian 64-bit number. It counts 512-byte sectors even when the
// encryption sector is 4096 bytes (LUKS2 never turns on dm-crypt's iv_large_sectors).
//
// Any thread may call encrypt/decrypt at once: each call borrows one of a fixed set of engine
// pairs, keyed once, without taking a lock.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "crypto/xts_provider.hpp"

namespace volgate::crypto {

class XtsCipher {
 public:
  // `key` is the whole XTS key (32 bytes for AES-128-XTS, 64 for AES-256-XTS). `provider`:
  // default_xts_provider() when not given (tests name one).
  XtsCipher(std::span<const std::byte> key, uint32_t sector_size, uint64_t iv_offset,
            std::optional<XtsProvider> provider = std::nullopt);
  ~XtsCipher();
  XtsCipher(const XtsCipher&) = delete;
  XtsCipher& operator=(const XtsCipher&) = delete;

  uint32_t sector_size() const { return sector_size_; }
  XtsProvider provider() const { return provider_; }
  // The encryption sector sizes dm-crypt takes, and so the only ones served: 512 to 4096.
  static bool supports_sector_size(uint32_t bytes) {
    return bytes == 512 || bytes == 1024 || bytes == 2048 || bytes == 4096;
  }

  // `offset` is the byte offset of in[0] within the data segment. Offset and length must be
  // multiples of the sector size. `out` may be `in`. Large requests are shared with
  // CryptoWorkers' helpers; the *_here variants stay on the calling thread (and are what a
  // helper thread itself must use).
  void encrypt(uint64_t offset, std::span<const std::byte> in, std::byte* out) const;
  void decrypt(uint64_t offset, std::span<const std::byte> in, std::byte* out) const;
  void encrypt_here(uint64_t offset, std::span<const std::byte> in, std::byte* out) const;
  void decrypt_here(uint64_t offset, std::span<const std::byte> in, std::byte* out) const;

 private:
  struct Context;
  // Requests at least this large are split across cores (see CryptoWorkers).
  static constexpr size_t kParallelBytes = 128 * 1024;

  void transform(bool encrypting, uint64_t offset, std::span<const std::byte> in,
                 std::byte* out) const;
  void check_alignment(uint64_t offset, size_t length) const;
  void transform_serial(bool encrypting, uint64_t offset, std::span<const std::byte> in,
                        std::byte* out) const;
  Context& borrow() const;

  const uint32_t sector_size_;
  const uint64_t iv_offset_;
  const XtsProvider provider_;
  std::vector<std::unique_ptr<Context>> contexts_;
};

}  // namespace volgate::crypto
