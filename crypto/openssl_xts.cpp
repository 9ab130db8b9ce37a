#include "crypto/openssl_xts.hpp"

#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <strings.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <string_view>

namespace volgate::crypto {

// The cipher functions of the provider that implements one AES-XTS variant.
struct OpensslXts::ProviderFunctions {
  EVP_CIPHER* cipher = nullptr;  // held for the life of the process: it keeps the provider loaded
  void* provider_context = nullptr;
  OSSL_FUNC_cipher_newctx_fn* newctx = nullptr;
  OSSL_FUNC_cipher_encrypt_init_fn* encrypt_init = nullptr;
  OSSL_FUNC_cipher_decrypt_init_fn* decrypt_init = nullptr;
  OSSL_FUNC_cipher_update_fn* update = nullptr;
  OSSL_FUNC_cipher_freectx_fn* freectx = nullptr;

  bool complete() const { return newctx && encrypt_init && decrypt_init && update && freectx; }
};

namespace {

std::atomic<bool> evp_only{false};

// True if `name` is one of the colon-separated names in `names` (OpenSSL compares names
// without regard to case).
bool names_include(std::string_view names, std::string_view name) {
  while (!names.empty()) {
    const size_t end = names.find(':');
    const std::string_view one = names.substr(0, end);
    if (one.size() == name.size() && strncasecmp(one.data(), name.data(), name.size()) == 0)
      return true;
    if (end == std::string_view::npos) break;
    names.remove_prefix(end + 1);
  }
  return false;
}

// Finds the functions behind `name` in the provider EVP chooses for it. Returns nothing
// (use EVP) unless that provider lists exactly one implementation of the name with every
// function needed.
OpensslXts::ProviderFunctions look_up(const char* name) {
  OpensslXts::ProviderFunctions found;
  ERR_set_mark();  // a failed look-up only means EVP is used: it leaves no errors behind
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, name, nullptr);
  if (!cipher) {
    ERR_pop_to_mark();
    return found;
  }
  const OSSL_PROVIDER* provider = EVP_CIPHER_get0_provider(cipher);
  int no_cache = 0;
  const OSSL_ALGORITHM* algorithms =
      provider ? OSSL_PROVIDER_query_operation(provider, OSSL_OP_CIPHER, &no_cache) : nullptr;
  const OSSL_DISPATCH* dispatch = nullptr;
  int matches = 0;
  for (const OSSL_ALGORITHM* a = algorithms; a && a->algorithm_names; ++a) {
    if (names_include(a->algorithm_names, name)) {
      dispatch = a->implementation;
      ++matches;
    }
  }
  if (matches == 1) {
    for (const OSSL_DISPATCH* f = dispatch; f->function_id != 0; ++f) {
      switch (f->function_id) {
        case OSSL_FUNC_CIPHER_NEWCTX: found.newctx = OSSL_FUNC_cipher_newctx(f); break;
        case OSSL_FUNC_CIPHER_ENCRYPT_INIT: found.encrypt_init = OSSL_FUNC_cipher_encrypt_init(f); break;
        case OSSL_FUNC_CIPHER_DECRYPT_INIT: found.decrypt_init = OSSL_FUNC_cipher_decrypt_init(f); break;
        case OSSL_FUNC_CIPHER_UPDATE: found.update = OSSL_FUNC_cipher_update(f); break;
        case OSSL_FUNC_CIPHER_FREECTX: found.freectx = OSSL_FUNC_cipher_freectx(f); break;
        default: break;
      }
    }
    found.cipher = cipher;
    found.provider_context = OSSL_PROVIDER_get0_provider_ctx(provider);
  }
  if (algorithms) OSSL_PROVIDER_unquery_operation(provider, OSSL_OP_CIPHER, algorithms);
  if (!found.complete()) {
    EVP_CIPHER_free(cipher);
    ERR_pop_to_mark();
    return {};
  }
  ERR_clear_last_mark();
  return found;
}

const OpensslXts::ProviderFunctions* provider_functions(size_t key_bytes) {
  static const OpensslXts::ProviderFunctions aes128 = look_up("AES-128-XTS");
  static const OpensslXts::ProviderFunctions aes256 = look_up("AES-256-XTS");
  const auto& functions = key_bytes == 64 ? aes256 : aes128;
  return functions.complete() ? &functions : nullptr;
}

[[noreturn]] void refused() {
  ERR_pop_to_mark();  // only what the failed keying queued; older errors are not ours
  throw std::runtime_error("OpenSSL refused the AES-XTS volume key");
}

}  // namespace

void OpensslXts::use_evp_only_for_testing(bool only) { evp_only = only; }

OpensslXts::OpensslXts(std::span<const std::byte> key, bool encrypting) {
  if (key.size() != 32 && key.size() != 64)
    throw std::invalid_argument("an AES-XTS key is 256 or 512 bits, not " +
                                std::to_string(key.size() * 8));
  auto* k = reinterpret_cast<const unsigned char*>(key.data());
  // A key whose two halves are equal has no XTS security. OpenSSL refuses it only for
  // encryption (its default provider lets such a key decrypt), so both directions check here.
  const size_t half = key.size() / 2;
  if (CRYPTO_memcmp(k, k + half, half) == 0)
    throw std::runtime_error("the AES-XTS volume key's two halves are equal");
  provider_ = evp_only ? nullptr : provider_functions(key.size());
  if (provider_) {
    provider_context_ = provider_->newctx(provider_->provider_context);
    if (!provider_context_) throw std::bad_alloc();
    provider_init_ = encrypting ? provider_->encrypt_init : provider_->decrypt_init;
    ERR_set_mark();
    if (provider_init_(provider_context_, k, key.size(), nullptr, 0, nullptr) != 1) {
      provider_->freectx(provider_context_);
      refused();
    }
    ERR_clear_last_mark();
    return;
  }
  evp_ = EVP_CIPHER_CTX_new();
  if (!evp_) throw std::bad_alloc();
  const EVP_CIPHER* cipher = key.size() == 64 ? EVP_aes_256_xts() : EVP_aes_128_xts();
  ERR_set_mark();
  if (EVP_CipherInit_ex2(evp_, cipher, k, nullptr, encrypting ? 1 : 0, nullptr) != 1) {
    EVP_CIPHER_CTX_free(evp_);
    refused();
  }
  ERR_clear_last_mark();
}

OpensslXts::~OpensslXts() {
  // Both free functions wipe the key schedule before releasing it.
  if (provider_) provider_->freectx(provider_context_);
  EVP_CIPHER_CTX_free(evp_);
}

bool OpensslXts::transform_unit(const unsigned char* iv, const unsigned char* in,
                                unsigned char* out, size_t length) {
  if (provider_) {
    size_t produced = 0;
    return provider_init_(provider_context_, nullptr, 0, iv, 16, nullptr) == 1 &&
           provider_->update(provider_context_, out, &produced, length, in, length) == 1 &&
           produced == length;
  }
  int produced = 0;
  return EVP_CipherInit_ex2(evp_, nullptr, nullptr, iv, -1, nullptr) == 1 &&
         EVP_CipherUpdate(evp_, out, &produced, in, static_cast<int>(length)) == 1 &&
         static_cast<size_t>(produced) == length;
}

bool OpensslXts::transform(uint64_t tweak, uint64_t tweak_step, size_t unit, const unsigned char* in,
                           unsigned char* out, size_t length) {
  unsigned char iv[16];
  for (size_t done = 0; done < length; done += unit, tweak += tweak_step) {
    tweak_bytes(tweak, iv);
    if (!transform_unit(iv, in + done, out + done, unit)) return false;
  }
  return true;
}

}  // namespace volgate::crypto
