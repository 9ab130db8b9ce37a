#include "crypto/gcrypt_xts.hpp"

#include <gcrypt.h>
#include <openssl/crypto.h>

#include <mutex>
#include <stdexcept>

namespace volgate::crypto {
namespace {

// libgcrypt must be initialised once per process before use. Another library in the process
// (libsystemd, for one) may have done it already; then its settings stand. Otherwise volgate
// does it without secure memory: the key schedules live in the handles, which are wiped when
// closed, as OpenSSL's contexts are, and the process is kept out of core dumps.
void initialise_gcrypt() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) return;
    if (!gcry_check_version(GCRYPT_VERSION))
      throw std::runtime_error(std::string("libgcrypt ") + gcry_check_version(nullptr) + " is older than " +
                               GCRYPT_VERSION + ", which volgate was built with");
    gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
    gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
  });
}

}  // namespace

std::string GcryptXts::version() {
  initialise_gcrypt();
  return std::string("libgcrypt ") + gcry_check_version(nullptr);
}

GcryptXts::GcryptXts(std::span<const std::byte> key, bool encrypting) : encrypting_(encrypting) {
  if (key.size() != 32 && key.size() != 64)
    throw std::invalid_argument("an AES-XTS key is 256 or 512 bits, not " + std::to_string(key.size() * 8));
  const size_t half = key.size() / 2;
  if (CRYPTO_memcmp(key.data(), key.data() + half, half) == 0)
    throw std::runtime_error("the AES-XTS volume key's two halves are equal");
  initialise_gcrypt();
  const int algorithm = key.size() == 64 ? GCRY_CIPHER_AES256 : GCRY_CIPHER_AES128;
  if (gcry_cipher_open(&handle_, algorithm, GCRY_CIPHER_MODE_XTS, 0) != 0) throw std::bad_alloc();
  if (gcry_cipher_setkey(handle_, key.data(), key.size()) != 0) {
    gcry_cipher_close(handle_);
    throw std::runtime_error("libgcrypt refused the AES-XTS volume key");
  }
}

GcryptXts::~GcryptXts() { gcry_cipher_close(handle_); }

bool GcryptXts::transform(uint64_t tweak, uint64_t tweak_step, size_t unit, const unsigned char* in,
                          unsigned char* out, size_t length) {
  unsigned char iv[16];
  for (size_t done = 0; done < length; done += unit, tweak += tweak_step) {
    tweak_bytes(tweak, iv);
    if (gcry_cipher_setiv(handle_, iv, sizeof iv) != 0) return false;
    // In place, libgcrypt wants no input buffer; otherwise the two must not overlap.
    const unsigned char* from = in + done == out + done ? nullptr : in + done;
    const size_t from_length = from ? unit : 0;
    const gcry_error_t e = encrypting_ ? gcry_cipher_encrypt(handle_, out + done, unit, from, from_length)
                                       : gcry_cipher_decrypt(handle_, out + done, unit, from, from_length);
    if (e != 0) return false;
  }
  return true;
}

}  // namespace volgate::crypto
