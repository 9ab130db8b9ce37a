#pragma once
// One keyed AES-XTS implementation for one direction: what a provider (OpenSSL, libgcrypt)
// supplies to XtsCipher. xts_provider.hpp says which one a process uses and how it is proven.
//
// An engine is not thread-safe; XtsCipher lends each one to one thread at a time.
#include <cstddef>
#include <cstdint>

namespace volgate::crypto {

class XtsEngine {
 public:
  virtual ~XtsEngine() = default;

  // Transforms `length` bytes, a whole number of data units of `unit` bytes (a multiple of 16):
  // the first under tweak number `tweak` (its 16-byte little-endian form, as LUKS's plain64 IV
  // is), each next one under the previous number plus `tweak_step`. `out` may equal `in`.
  // Returns false if the implementation reports a failure.
  virtual bool transform(uint64_t tweak, uint64_t tweak_step, size_t unit, const unsigned char* in,
                         unsigned char* out, size_t length) = 0;

 protected:
  // The 16-byte tweak for data unit number `number`.
  static void tweak_bytes(uint64_t number, unsigned char (&tweak)[16]) {
    for (int i = 0; i < 8; ++i) tweak[i] = static_cast<unsigned char>(number >> (8 * i));
    for (int i = 8; i < 16; ++i) tweak[i] = 0;
  }
};

}  // namespace volgate::crypto
