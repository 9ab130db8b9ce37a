// How fast volgate's AES-XTS runs on this machine, for each provider: the ceiling of the
// encrypted data path.
//   build/bench/xts_speed
// Prints GB/s for 512- and 4096-byte encryption sectors, on one core (4 KiB requests, what a
// random or depth-1 request costs, with the time per request; 64 KiB requests, below the split
// threshold) and with CryptoWorkers sharing 1 MiB requests across cores, by wall time; then the
// provider auto would choose (its probe measures thread CPU time).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "crypto/xts_cipher.hpp"
#include "crypto/xts_provider.hpp"

namespace {

double gigabytes_per_second(const volgate::crypto::XtsCipher& cipher, size_t request) {
  std::vector<std::byte> data(request, std::byte{0x5a});
  const auto start = std::chrono::steady_clock::now();
  size_t bytes = 0;
  uint64_t offset = 0;
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(700)) {
    for (int i = 0; i < 16; ++i) {
      cipher.encrypt(offset, data, data.data());
      offset = (offset + request) % (1ull << 30);
      bytes += request;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(bytes) / seconds / 1e9;
}

}  // namespace

int main() {
  using volgate::crypto::XtsProvider;
  std::vector<std::byte> key(64);
  for (size_t i = 0; i < key.size(); ++i) key[i] = std::byte(i * 37 + 11);
  std::printf("AES-256-XTS through volgate::crypto::XtsCipher\n");
  std::printf("%-28s %-14s %-22s %s\n", "provider", "sector bytes", "request", "GB/s");
  for (XtsProvider provider : {XtsProvider::openssl, XtsProvider::gcrypt}) {
    const std::string name = volgate::crypto::provider_version(provider);
    for (uint32_t sector : {512u, 4096u}) {
      volgate::crypto::XtsCipher cipher(key, sector, 0, provider);
      const double small = gigabytes_per_second(cipher, 4 << 10);
      std::printf("%-28s %-14u %-22s %.2f (%.0f ns a request)\n", name.c_str(), sector,
                  "4 KiB (one core)", small, 4096 / small);
      std::printf("%-28s %-14u %-22s %.2f\n", name.c_str(), sector, "64 KiB (one core)",
                  gigabytes_per_second(cipher, 64 << 10));
      std::printf("%-28s %-14u %-22s %.2f\n", name.c_str(), sector, "1 MiB (split)",
                  gigabytes_per_second(cipher, 1 << 20));
    }
  }
  const auto selection = volgate::crypto::select_xts_provider(std::nullopt);
  std::printf("auto chooses: %s\n", std::string(volgate::crypto::to_string(selection.chosen)).c_str());
}
