#pragma once
// One keyed OpenSSL AES-XTS context for one direction, transforming one data unit per call.
//
// The cipher is fetched through EVP and, where its provider lists its own cipher functions
// (provider-cipher(7); OpenSSL's default and FIPS providers do), those are called directly.
// The implementation is the same one EVP would run; what is skipped is OpenSSL 3.0's EVP
// bookkeeping on every IV change, which looks the IV length up by parameter name. XTS needs a
// new IV for every data unit, and at 512-byte units that lookup cost about 40 % on top of the
// AES work itself. If the provider's functions cannot be found, EVP_CipherInit_ex2 and
// EVP_CipherUpdate are used instead, with the same results.
//
// A context is not thread-safe; XtsCipher lends each one to one thread at a time.
#include <cstddef>
#include <span>

#include "crypto/xts_engine.hpp"

struct evp_cipher_ctx_st;
struct ossl_param_st;

namespace volgate::crypto {

class OpensslXts final : public XtsEngine {
 public:
  // `key` is the whole XTS key: 32 bytes (AES-128-XTS) or 64 (AES-256-XTS). Throws
  // std::invalid_argument for another length, std::runtime_error for a key whose two halves
  // are equal (in either direction) or one OpenSSL refuses.
  OpensslXts(std::span<const std::byte> key, bool encrypting);
  ~OpensslXts() override;
  OpensslXts(const OpensslXts&) = delete;
  OpensslXts& operator=(const OpensslXts&) = delete;

  // Encrypts or decrypts `length` bytes (one data unit, a multiple of 16) under the 16-byte
  // tweak `iv`. `out` may equal `in`. Returns false if OpenSSL reports a failure.
  bool transform_unit(const unsigned char* iv, const unsigned char* in, unsigned char* out,
                      size_t length);
  bool transform(uint64_t tweak, uint64_t tweak_step, size_t unit, const unsigned char* in, unsigned char* out,
                 size_t length) override;

  // True if the provider's own functions are in use (for tests and benchmarks).
  bool calls_provider_directly() const { return provider_ != nullptr; }

  // Forces the EVP path for contexts made afterwards, so tests can compare the two paths.
  static void use_evp_only_for_testing(bool evp_only);

  struct ProviderFunctions;

 private:
  const ProviderFunctions* provider_ = nullptr;
  void* provider_context_ = nullptr;   // with provider_
  // The provider's encrypt_init or decrypt_init (one signature), chosen once by direction.
  int (*provider_init_)(void*, const unsigned char*, size_t, const unsigned char*, size_t,
                        const ossl_param_st*) = nullptr;
  evp_cipher_ctx_st* evp_ = nullptr;   // without
};

}  // namespace volgate::crypto
