#include "crypto/xts_cipher.hpp"

#include <openssl/evp.h>

#include "crypto/crypto_workers.hpp"

#include <stdexcept>
#include <string>
#include <thread>

namespace volgate::crypto {

struct XtsCipher::Context {
  EVP_CIPHER_CTX* encrypt = nullptr;
  EVP_CIPHER_CTX* decrypt = nullptr;
  mutable std::atomic<bool> busy{false};

  ~Context() {
    // Freeing a context wipes the key schedule it holds.
    EVP_CIPHER_CTX_free(encrypt);
    EVP_CIPHER_CTX_free(decrypt);
  }
};

namespace {

EVP_CIPHER_CTX* keyed_context(const EVP_CIPHER* cipher, std::span<const std::byte> key,
                              int encrypting) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (!ctx) throw std::bad_alloc();
  auto* k = reinterpret_cast<const unsigned char*>(key.data());
  if (EVP_CipherInit_ex2(ctx, cipher, k, nullptr, encrypting, nullptr) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    // OpenSSL refuses XTS keys whose two halves are equal: such a key has no XTS security.
    throw std::runtime_error("OpenSSL refused the AES-XTS volume key");
  }
  return ctx;
}

}  // namespace

XtsCipher::XtsCipher(std::span<const std::byte> key, uint32_t sector_size, uint64_t iv_offset)
    : sector_size_(sector_size), iv_offset_(iv_offset) {
  if (sector_size != 512 && sector_size != 4096 && sector_size != 1024 && sector_size != 2048)
    throw std::invalid_argument("encryption sector size " + std::to_string(sector_size) +
                                " is not 512, 1024, 2048 or 4096");
  const EVP_CIPHER* cipher = key.size() == 64 ? EVP_aes_256_xts()
                             : key.size() == 32 ? EVP_aes_128_xts()
                                                : nullptr;
  if (!cipher)
    throw std::invalid_argument("an AES-XTS key is 256 or 512 bits, not " +
                                std::to_string(key.size() * 8));
  // Enough contexts for every thread that may call at once; borrow() never has to wait.
  const size_t count = 2 * std::max(1u, std::thread::hardware_concurrency()) + 4;
  for (size_t i = 0; i < count; ++i) {
    auto c = std::make_unique<Context>();
    c->encrypt = keyed_context(cipher, key, 1);
    c->decrypt = keyed_context(cipher, key, 0);
    contexts_.push_back(std::move(c));
  }
}

XtsCipher::~XtsCipher() = default;

XtsCipher::Context& XtsCipher::borrow() const {
  for (;;) {
    for (auto& c : contexts_) {
      bool expected = false;
      if (!c->busy.load(std::memory_order_relaxed) &&
          c->busy.compare_exchange_strong(expected, true, std::memory_order_acquire))
        return *c;
    }
    std::this_thread::yield();  // more callers than contexts: cannot happen with our workers
  }
}

void XtsCipher::encrypt(uint64_t offset, std::span<const std::byte> in, std::byte* out) const {
  transform(true, offset, in, out);
}

void XtsCipher::decrypt(uint64_t offset, std::span<const std::byte> in, std::byte* out) const {
  transform(false, offset, in, out);
}

void XtsCipher::encrypt_here(uint64_t offset, std::span<const std::byte> in, std::byte* out) const {
  check_alignment(offset, in.size());
  transform_serial(true, offset, in, out);
}

void XtsCipher::decrypt_here(uint64_t offset, std::span<const std::byte> in, std::byte* out) const {
  check_alignment(offset, in.size());
  transform_serial(false, offset, in, out);
}

void XtsCipher::check_alignment(uint64_t offset, size_t length) const {
  if (offset % sector_size_ || length % sector_size_)
    throw std::invalid_argument("XTS request not aligned to the encryption sector size");
}

void XtsCipher::transform(bool encrypting, uint64_t offset, std::span<const std::byte> in,
                          std::byte* out) const {
  check_alignment(offset, in.size());
  // Large requests are shared with the helper threads: AES-XTS is the costliest step of an
  // encrypted request and sectors are independent. Small ones are not worth a wake-up.
  if (in.size() >= kParallelBytes) {
    const size_t sectors = in.size() / sector_size_;
    CryptoWorkers::instance().run(sectors, [&](size_t first, size_t count) {
      const size_t at = first * sector_size_;
      transform_serial(encrypting, offset + at, in.subspan(at, count * sector_size_), out + at);
    });
    return;
  }
  transform_serial(encrypting, offset, in, out);
}

void XtsCipher::transform_serial(bool encrypting, uint64_t offset, std::span<const std::byte> in,
                                 std::byte* out) const {
  Context& c = borrow();
  EVP_CIPHER_CTX* ctx = encrypting ? c.encrypt : c.decrypt;
  uint64_t sector = offset / 512 + iv_offset_;
  const uint64_t step = sector_size_ / 512;
  auto* src = reinterpret_cast<const unsigned char*>(in.data());
  auto* dst = reinterpret_cast<unsigned char*>(out);
  bool ok = true;
  for (size_t done = 0; done < in.size(); done += sector_size_, sector += step) {
    unsigned char iv[16] = {};
    for (int i = 0; i < 8; ++i) iv[i] = static_cast<unsigned char>(sector >> (8 * i));
    int produced = 0;
    ok = EVP_CipherInit_ex2(ctx, nullptr, nullptr, iv, -1, nullptr) == 1 &&
         EVP_CipherUpdate(ctx, dst + done, &produced, src + done,
                          static_cast<int>(sector_size_)) == 1;
    if (!ok) break;
  }
  c.busy.store(false, std::memory_order_release);
  if (!ok) throw std::runtime_error("OpenSSL AES-XTS operation failed");
}

}  // namespace volgate::crypto
