#include "crypto/xts_cipher.hpp"

#include "crypto/crypto_workers.hpp"
#include "crypto/xts_engine.hpp"

#include <stdexcept>
#include <string>
#include <thread>

namespace volgate::crypto {

struct XtsCipher::Context {
  Context(XtsProvider provider, std::span<const std::byte> key)
      : encrypt(make_xts_engine(provider, key, true)), decrypt(make_xts_engine(provider, key, false)) {}
  std::unique_ptr<XtsEngine> encrypt;
  std::unique_ptr<XtsEngine> decrypt;
  mutable std::atomic<bool> busy{false};
};

XtsCipher::XtsCipher(std::span<const std::byte> key, uint32_t sector_size, uint64_t iv_offset,
                     std::optional<XtsProvider> provider)
    // Not value_or: its argument would run the selection even when a provider is named.
    : sector_size_(sector_size), iv_offset_(iv_offset), provider_(provider ? *provider : default_xts_provider()) {
  if (!supports_sector_size(sector_size))
    throw std::invalid_argument("encryption sector size " + std::to_string(sector_size) +
                                " is not 512, 1024, 2048 or 4096");
  // Enough contexts for every thread that may call at once; borrow() never has to wait.
  const size_t count = 2 * std::max(1u, std::thread::hardware_concurrency()) + 4;
  for (size_t i = 0; i < count; ++i) contexts_.push_back(std::make_unique<Context>(provider_, key));
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
  XtsEngine& xts = encrypting ? *c.encrypt : *c.decrypt;
  // plain64 counts 512-byte sectors whatever the encryption sector size.
  const bool ok = xts.transform(offset / 512 + iv_offset_, sector_size_ / 512, sector_size_,
                                reinterpret_cast<const unsigned char*>(in.data()),
                                reinterpret_cast<unsigned char*>(out), in.size());
  c.busy.store(false, std::memory_order_release);
  if (!ok) throw std::runtime_error("AES-XTS operation failed (" + std::string(to_string(provider_)) + ")");
}

}  // namespace volgate::crypto
