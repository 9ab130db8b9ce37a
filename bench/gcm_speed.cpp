// How fast the ciphers of NBD over TLS run on this machine, alone: the CPU cost TLS adds per
// byte, against which the TLS rows of bench/run.sh are judged.
//   build/bench/gcm_speed
// Prints GB per CPU-second of one thread (CPU time, not wall time: the machine may be shared)
// for AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 through OpenSSL's EVP interface, sealing
// 16 KiB records (TLS's largest, which bulk NBD traffic fills) the way a TLS 1.3 record layer
// does: a fresh nonce and 5 bytes of associated data per record, then the tag; and opening
// them (decryption with the tag checked).
#include <openssl/evp.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

// This thread's CPU time: the cost per byte, whatever else runs on a shared machine.
double cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

double gigabytes_per_second(const EVP_CIPHER* cipher, bool decrypt) {
  constexpr size_t kRecord = 16 * 1024;
  std::vector<unsigned char> key(32, 0x5a), iv(12, 0x11), aad(5, 0x17), tag(16);
  std::vector<unsigned char> in(kRecord, 0x42), out(kRecord);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int length = 0;
  // Decryption needs a valid tag: seal once to get it.
  EVP_EncryptInit_ex(ctx, cipher, nullptr, key.data(), iv.data());
  EVP_EncryptUpdate(ctx, nullptr, &length, aad.data(), static_cast<int>(aad.size()));
  EVP_EncryptUpdate(ctx, out.data(), &length, in.data(), static_cast<int>(in.size()));
  EVP_EncryptFinal_ex(ctx, out.data() + length, &length);
  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag.data());
  const std::vector<unsigned char> sealed = out;
  // A context keyed for the direction measured.
  EVP_CIPHER_CTX_free(ctx);
  ctx = EVP_CIPHER_CTX_new();
  if (decrypt)
    EVP_DecryptInit_ex(ctx, cipher, nullptr, key.data(), iv.data());
  else
    EVP_EncryptInit_ex(ctx, cipher, nullptr, key.data(), iv.data());

  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = cpu_seconds();
  size_t bytes = 0;
  bool ok = true;
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1500)) {
    for (int i = 0; i < 64; ++i) {
      if (decrypt) {
        EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, iv.data());
        EVP_DecryptUpdate(ctx, nullptr, &length, aad.data(), static_cast<int>(aad.size()));
        EVP_DecryptUpdate(ctx, out.data(), &length, sealed.data(), static_cast<int>(sealed.size()));
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag.data());
        ok = ok && EVP_DecryptFinal_ex(ctx, out.data() + length, &length) == 1;
      } else {
        EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv.data());
        EVP_EncryptUpdate(ctx, nullptr, &length, aad.data(), static_cast<int>(aad.size()));
        EVP_EncryptUpdate(ctx, out.data(), &length, in.data(), static_cast<int>(in.size()));
        EVP_EncryptFinal_ex(ctx, out.data() + length, &length);
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag.data());
      }
      bytes += kRecord;
    }
  }
  const double seconds = cpu_seconds() - cpu_start;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) std::fprintf(stderr, "tag check failed\n");
  return static_cast<double>(bytes) / seconds / 1e9;
}

}  // namespace

int main() {
  std::printf("TLS record ciphers through OpenSSL EVP, 16 KiB records, one thread\n");
  std::printf("%-20s %-10s %s\n", "cipher", "direction", "GB per CPU-second");
  const struct {
    const char* name;
    const EVP_CIPHER* cipher;
  } ciphers[] = {{"AES-128-GCM", EVP_aes_128_gcm()},
                 {"AES-256-GCM", EVP_aes_256_gcm()},
                 {"ChaCha20-Poly1305", EVP_chacha20_poly1305()}};
  for (const auto& c : ciphers) {
    std::printf("%-20s %-10s %.2f\n", c.name, "seal", gigabytes_per_second(c.cipher, false));
    std::printf("%-20s %-10s %.2f\n", c.name, "open", gigabytes_per_second(c.cipher, true));
  }
}
