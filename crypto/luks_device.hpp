#pragma once
// The decrypted payload of a LUKS container, as a BlockDevice stacked on the device that holds
// the container (the way a crypto bdev sits on a base bdev).
//
// Reads decrypt in place in the caller's buffer; writes encrypt into a pooled buffer, so the
// caller's data is never changed. Large requests do their cipher work on a helper thread, and
// when the base can move bytes from any thread without waiting (a file in the page cache), the
// helper also does the copy, piece by piece, each piece ciphered while in its cache. Offsets
// are shifted past the header, which no request can reach. Zeroes are written as encrypted
// zeroes (by the device front, as writes): a hole in the base device does not decrypt to
// zeroes, so block status reports holes without the "reads as zero" bit.
#include <memory>

#include "backends/block_device.hpp"
#include "common/thread_counters.hpp"
#include "crypto/luks_container.hpp"
#include "crypto/xts_cipher.hpp"

namespace volgate::crypto {

class LuksDevice final : public backends::BlockDevice {
 public:
  // Takes the unlocked volume key. Besides the OpenSSL contexts of the cipher, the device keeps
  // one copy in locked memory, for a hand-over to a successor process (volume_key()); both are
  // wiped when the device is destroyed.
  LuksDevice(std::shared_ptr<backends::BlockDevice> base, UnlockedLuks unlocked);
  ~LuksDevice() override;

  uint64_t size() const override { return info_.payload_size; }
  backends::DeviceCapabilities capabilities() const override;
  std::string description() const override;

  void read(uint64_t offset, std::span<std::byte> data, backends::Completion done) override;
  void write(uint64_t offset, std::span<const std::byte> data, backends::WriteFlags flags,
             backends::Completion done) override;
  void flush(backends::Completion done) override;
  void trim(uint64_t offset, uint64_t length, backends::Completion done) override;
  void write_zeroes(uint64_t offset, uint64_t length, backends::ZeroFlags flags,
                    backends::Completion done) override;
  void block_status(uint64_t offset, uint64_t length, backends::ExtentsCompletion done) override;
  void cache(uint64_t offset, uint64_t length, backends::Completion done) override;

  const backends::BlockDevice& base() const { return *base_; }
  // The device that holds the container, for reading its header again (a key check).
  const std::shared_ptr<backends::BlockDevice>& shared_base() const { return base_; }
  // For `volgate serve --take-over`: the successor opens the same volume with it, without a
  // keyslot's key derivation.
  const SecureBytes& volume_key() const { return volume_key_; }
  // volgate_luks_cipher_bytes_total, then the base's metrics.
  void report_metrics(MetricsReport& report, const MetricLabels& labels) const override;
  void handover_committed(bool successor) override { base_->handover_committed(successor); }
  // Not the base's home: small requests are ciphered inline on the caller's thread, and on one
  // iSCSI thread every connection's cipher work would queue behind the others.

 private:
  // Requests this large have their cipher work done on a helper thread (see CryptoWorkers),
  // so the I/O thread overlaps network and storage work with AES on another core.
  static constexpr size_t kOffloadBytes = 128 * 1024;
  // A helper moves bytes between the base's cache and the request in pieces, each ciphered
  // right before or after its copy, while it is in the core's cache. Reads decrypt in place in
  // the request; writes encrypt into a buffer of the helper's own and then copy it, so a piece
  // costs a syscall: larger pieces for writes took 5 % off a LUKS2 write's CPU per GiB (1 MiB
  // L2 per core), and made reads slower (bench/RESULTS.md, 2026-12-05 18:00).
  static constexpr size_t kReadPieceBytes = 64 * 1024;
  static constexpr size_t kWritePieceBytes = 256 * 1024;

  // Each request's state; their memory is recycled per thread (common/per_thread_pool.hpp).
  struct ReadOp;
  struct WriteOp;
  // On a helper, for a base with cached transfers: read and decrypt as much of the request as
  // the cache holds, whole sectors from the start; returns how many bytes are done.
  uint64_t read_cached_decrypted(uint64_t offset, std::span<std::byte> data) const;
  // On a helper: encrypt `plaintext` and write it into the base's cache while the cache takes
  // it; returns how many bytes from the start are written, and leaves the ciphertext of the
  // rest in `ciphertext` (at the same offsets) for the base's write().
  uint64_t encrypt_write_cached(uint64_t offset, std::span<const std::byte> plaintext,
                                std::byte* ciphertext) const;

  const std::shared_ptr<backends::BlockDevice> base_;
  const LuksInfo info_;
  const SecureBytes volume_key_;
  const XtsCipher cipher_;
  // Bytes ciphered by requests that succeeded, counted on the thread that completes them.
  enum : size_t { kEncrypted, kDecrypted };
  mutable ThreadCounters<2> cipher_bytes_;
};

}  // namespace volgate::crypto
