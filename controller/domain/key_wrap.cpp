#include "controller/domain/key_wrap.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace volgate::controller {
namespace {

constexpr uint8_t kVersion = 1;
constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

CipherCtx new_ctx() {
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) throw std::runtime_error("key wrap: out of memory");
  return ctx;
}

void check(int ok, const char* what) {
  if (ok != 1) throw std::runtime_error(std::string("key wrap: ") + what + " failed");
}

}  // namespace

KeyWrap::KeyWrap(crypto::SecureBytes master_key) : key_(std::move(master_key)) {
  if (key_.size() != kMasterKeySize)
    throw std::invalid_argument("the master key must be " + std::to_string(kMasterKeySize) + " bytes, not " +
                                std::to_string(key_.size()));
}

KeyWrap KeyWrap::from_file(const std::string& path) {
  auto key = crypto::read_key_file(path);
  if (key.size() != kMasterKeySize)
    throw std::runtime_error("master key file " + path + " must hold exactly " + std::to_string(kMasterKeySize) +
                             " bytes");
  return KeyWrap(std::move(key));
}

void KeyWrap::create_key_file(const std::string& path) {
  crypto::SecureBytes key(kMasterKeySize);
  check(RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())), "RAND_bytes");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "create master key file " + path);
  ssize_t n = ::write(fd, key.data(), key.size());
  int error = errno;
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (n != static_cast<ssize_t>(key.size()) || !synced) {
    ::unlink(path.c_str());
    throw std::system_error(error, std::generic_category(), "write master key file " + path);
  }
}

std::vector<uint8_t> KeyWrap::wrap(const crypto::SecureBytes& secret, const std::string& volume_id) const {
  std::vector<uint8_t> out(1 + kNonceSize + secret.size() + kTagSize);
  out[0] = kVersion;
  uint8_t* nonce = out.data() + 1;
  uint8_t* body = nonce + kNonceSize;
  check(RAND_bytes(nonce, kNonceSize), "RAND_bytes");
  auto ctx = new_ctx();
  int len = 0;
  check(EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                           reinterpret_cast<const unsigned char*>(key_.data()), nonce),
        "init");
  check(EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(volume_id.data()),
                          static_cast<int>(volume_id.size())),
        "aad");
  check(EVP_EncryptUpdate(ctx.get(), body, &len, reinterpret_cast<const unsigned char*>(secret.data()),
                          static_cast<int>(secret.size())),
        "encrypt");
  check(EVP_EncryptFinal_ex(ctx.get(), body + len, &len), "final");
  check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagSize, body + secret.size()), "tag");
  return out;
}

crypto::SecureBytes KeyWrap::unwrap(const std::vector<uint8_t>& wrapped, const std::string& volume_id) const {
  if (wrapped.size() < 1 + kNonceSize + kTagSize + 1 || wrapped[0] != kVersion)
    throw std::runtime_error("wrapped key of volume " + volume_id + " is malformed");
  const uint8_t* nonce = wrapped.data() + 1;
  const uint8_t* body = nonce + kNonceSize;
  const size_t body_size = wrapped.size() - 1 - kNonceSize - kTagSize;
  crypto::SecureBytes secret(body_size);
  auto ctx = new_ctx();
  int len = 0;
  check(EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                           reinterpret_cast<const unsigned char*>(key_.data()), nonce),
        "init");
  check(EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(volume_id.data()),
                          static_cast<int>(volume_id.size())),
        "aad");
  check(EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(secret.data()), &len, body,
                          static_cast<int>(body_size)),
        "decrypt");
  check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagSize, const_cast<uint8_t*>(body + body_size)),
        "tag");
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(secret.data()) + len, &len) != 1)
    throw std::runtime_error("wrapped key of volume " + volume_id +
                             " does not unwrap with this master key (wrong key, or the data was altered)");
  return secret;
}

crypto::SecureBytes random_passphrase() {
  unsigned char bits[32];
  check(RAND_bytes(bits, sizeof bits), "RAND_bytes");
  crypto::SecureBytes out(2 * sizeof bits);
  static const char* const kHex = "0123456789abcdef";
  for (size_t i = 0; i < sizeof bits; ++i) {
    out.data()[2 * i] = static_cast<std::byte>(kHex[bits[i] >> 4]);
    out.data()[2 * i + 1] = static_cast<std::byte>(kHex[bits[i] & 15]);
  }
  OPENSSL_cleanse(bits, sizeof bits);
  return out;
}

}  // namespace volgate::controller
