#pragma once
// One keyed libgcrypt AES-XTS handle for one direction.
//
// libgcrypt (1.10 on Debian 12) has an AES-XTS path built on VAES and VPCLMULQDQ, the 256-bit
// AES instructions of recent Intel and AMD cores, where OpenSSL 3.0 processes XTS with 128-bit
// AES-NI only; on such a core it runs XTS about 1.5-2x as fast. Each data unit is one setiv and
// one encrypt or decrypt call: the handle keeps its key schedule, and gcry_cipher_close wipes it.
#include <cstddef>
#include <span>
#include <string>

#include "crypto/xts_engine.hpp"

struct gcry_cipher_handle;

namespace volgate::crypto {

class GcryptXts final : public XtsEngine {
 public:
  // `key` is the whole XTS key: 32 bytes (AES-128-XTS) or 64 (AES-256-XTS). Throws
  // std::invalid_argument for another length, std::runtime_error for a key whose two halves are
  // equal or one libgcrypt refuses.
  GcryptXts(std::span<const std::byte> key, bool encrypting);
  ~GcryptXts() override;
  GcryptXts(const GcryptXts&) = delete;
  GcryptXts& operator=(const GcryptXts&) = delete;

  bool transform(uint64_t tweak, uint64_t tweak_step, size_t unit, const unsigned char* in, unsigned char* out,
                 size_t length) override;

  // "libgcrypt 1.10.1", for logs.
  static std::string version();

 private:
  gcry_cipher_handle* handle_ = nullptr;
  const bool encrypting_;
};

}  // namespace volgate::crypto
