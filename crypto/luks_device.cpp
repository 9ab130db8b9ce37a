#include "crypto/luks_device.hpp"

#include <algorithm>
#include <cstring>

#include "common/buffer_pool.hpp"
#include "common/per_thread_pool.hpp"
#include "crypto/crypto_workers.hpp"
#include "crypto/helper_hand_off.hpp"

namespace volgate::crypto {

using backends::Completion;
using backends::errno_code;

LuksDevice::LuksDevice(std::shared_ptr<backends::BlockDevice> base, UnlockedLuks unlocked)
    : base_(std::move(base)),
      info_(std::move(unlocked.info)),
      volume_key_(std::move(unlocked.volume_key)),
      cipher_(volume_key_.span(), info_.sector_size, info_.iv_offset) {
  // The helper threads start now: a process that cannot start them (out of threads) fails to
  // open the volume, rather than leave its first large request unanswered.
  CryptoWorkers::instance();
}

LuksDevice::~LuksDevice() = default;

backends::DeviceCapabilities LuksDevice::capabilities() const {
  auto caps = base_->capabilities();
  caps.can_read_cached = caps.can_write_cached = false;  // the cached bytes are ciphertext
  caps.can_zero = false;       // zeroes are written as ciphertext (by the device front)
  caps.can_fast_zero = false;
  caps.min_block_size = std::max(caps.min_block_size, info_.sector_size);
  caps.preferred_block_size = std::max(caps.preferred_block_size, info_.sector_size);
  return caps;
}

std::string LuksDevice::description() const {
  return info_.version + " " + info_.cipher + " on " + base_->description();
}

void LuksDevice::report_metrics(MetricsReport& report, const MetricLabels& labels) const {
  constexpr const char* kName = "volgate_luks_cipher_bytes_total";
  constexpr const char* kHelp =
      "Bytes a LUKS export encrypted (writes, zeroes written as ciphertext) and decrypted (reads).";
  const auto sums = cipher_bytes_.sums();
  MetricLabels with = labels;
  with.emplace_back("operation", "encrypt");
  report.add(kName, MetricType::counter, kHelp, with, static_cast<double>(sums[kEncrypted]));
  with.back().second = "decrypt";
  report.add(kName, MetricType::counter, kHelp, with, static_cast<double>(sums[kDecrypted]));
  base_->report_metrics(report, labels);
}

// The cipher throws only if OpenSSL fails (or memory runs out): the request then fails with
// EIO rather than escaping into the caller's event loop.
static std::error_code cipher_failed() { return errno_code(EIO); }

// A read: [0, ready) of `data` is read and decrypted already (on a helper, from the cache);
// the rest is read from the base and then decrypted.
struct LuksDevice::ReadOp final : HelperHandOff {
  ReadOp(const LuksDevice* self, uint64_t offset, std::span<std::byte> data, Completion done)
      : self(self), offset(offset), data(data), done(std::move(done)) {}

  const LuksDevice* self;
  uint64_t offset;
  std::span<std::byte> data;
  Completion done;
  uint64_t ready = 0;

  static ReadOp& of(HelperHandOff& h) { return static_cast<ReadOp&>(h); }

  void finish(std::error_code ec) {
    if (!ec) self->cipher_bytes_.add(kDecrypted, data.size());
    Completion callback = std::move(done);
    PerThreadPool<ReadOp>::destroy(this);
    callback(ec);
  }

  void decrypt_rest() {
    auto rest = data.subspan(ready);
    self->cipher_.decrypt_here(offset + ready, rest, rest.data());
  }

  void read_rest() {
    const uint64_t at = self->info_.data_offset + offset + ready;
    self->base_->read(at, data.subspan(ready), [this](std::error_code ec) {
      if (ec) return finish(ec);
      if (data.size() - ready >= kOffloadBytes) {
        // Decrypt on a helper; the I/O thread goes on with other requests meanwhile.
        return hand_to_helper([](HelperHandOff& h) { of(h).decrypt_rest(); },
                              [](HelperHandOff& h, std::error_code e) { of(h).finish(e); });
      }
      try {
        decrypt_rest();
      } catch (const std::exception&) {
        ec = cipher_failed();
      }
      finish(ec);
    });
  }
};

void LuksDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  auto* op = PerThreadPool<ReadOp>::make(this, offset, data, std::move(done));
  if (data.size() < kOffloadBytes || !base_->capabilities().can_read_cached) return op->read_rest();
  // Read what the cache holds and decrypt it piece by piece on a helper, then fetch the rest.
  op->hand_to_helper(
      [](HelperHandOff& h) {
        ReadOp& op = ReadOp::of(h);
        op.ready = op.self->read_cached_decrypted(op.offset, op.data);
      },
      [](HelperHandOff& h, std::error_code ec) {
        ReadOp& op = ReadOp::of(h);
        if (ec || op.ready == op.data.size()) return op.finish(ec);
        op.read_rest();
      });
}

uint64_t LuksDevice::read_cached_decrypted(uint64_t offset, std::span<std::byte> data) const {
  uint64_t ready = 0;
  while (ready < data.size()) {
    auto piece = data.subspan(ready, std::min<size_t>(kReadPieceBytes, data.size() - ready));
    uint64_t moved = base_->read_cached(info_.data_offset + offset + ready, piece);
    moved -= moved % info_.sector_size;
    cipher_.decrypt_here(offset + ready, piece.first(moved), piece.data());
    ready += moved;
    if (moved < piece.size()) break;
  }
  return ready;
}

// A write: [0, written) is in the base already (encrypted and written into its cache on a
// helper); the ciphertext of the rest is in `ciphertext`, written from this thread.
struct LuksDevice::WriteOp final : HelperHandOff {
  WriteOp(LuksDevice* self, uint64_t offset, std::span<const std::byte> plaintext,
          backends::WriteFlags flags, Buffer ciphertext, Completion done)
      : self(self), offset(offset), plaintext(plaintext), flags(flags),
        ciphertext(std::move(ciphertext)), done(std::move(done)) {}

  LuksDevice* self;
  uint64_t offset;
  std::span<const std::byte> plaintext;
  backends::WriteFlags flags;
  Buffer ciphertext;
  Completion done;
  uint64_t written = 0;
  bool write_cached = false;  // on the helper: put what the base's cache takes there

  static WriteOp& of(HelperHandOff& h) { return static_cast<WriteOp&>(h); }

  void finish(std::error_code ec) {
    if (!ec) self->cipher_bytes_.add(kEncrypted, plaintext.size());
    Completion callback = std::move(done);
    PerThreadPool<WriteOp>::destroy(this);
    callback(ec);
  }

  void encrypt() {
    if (write_cached) {
      written = self->encrypt_write_cached(offset, plaintext, ciphertext.data());
    } else {
      self->cipher_.encrypt_here(offset, plaintext, ciphertext.data());
    }
  }

  void write_rest() {
    auto rest = ciphertext.span().subspan(written);
    self->base_->write(self->info_.data_offset + offset + written, rest, flags,
                       [this](std::error_code ec) { finish(ec); });
  }
};

void LuksDevice::write(uint64_t offset, std::span<const std::byte> data, backends::WriteFlags flags,
                       Completion done) {
  WriteOp* op;
  try {
    op = PerThreadPool<WriteOp>::make(this, offset, data, flags, Buffer::allocate(data.size()), std::move(done));
  } catch (const std::exception&) {
    return done(errno_code(ENOMEM));
  }
  if (data.size() < kOffloadBytes) {
    try {
      op->encrypt();
    } catch (const std::exception&) {
      return op->finish(cipher_failed());
    }
    return op->write_rest();
  }
  // Encrypt on a helper and, unless the write must be durable, put what the cache takes into
  // the base from there too; the rest is written from this thread (the base device's).
  op->write_cached = !flags.fua && base_->capabilities().can_write_cached;
  op->hand_to_helper([](HelperHandOff& h) { WriteOp::of(h).encrypt(); },
                     [](HelperHandOff& h, std::error_code ec) {
                       WriteOp& op = WriteOp::of(h);
                       if (ec || op.written == op.plaintext.size()) return op.finish(ec);
                       op.write_rest();
                     });
}

uint64_t LuksDevice::encrypt_write_cached(uint64_t offset, std::span<const std::byte> plaintext,
                                          std::byte* ciphertext) const {
  // Each piece is encrypted into this helper's own small buffer, which stays in its cache, and
  // copied into the base's cache from there; `ciphertext` is only filled (and so only brought
  // into the cache) from the first piece the base's cache does not take whole.
  thread_local const std::unique_ptr<std::byte[]> piece_buffer(new std::byte[kWritePieceBytes]);
  uint64_t at = 0;
  while (at < plaintext.size()) {
    const size_t length = std::min<size_t>(kWritePieceBytes, plaintext.size() - at);
    cipher_.encrypt_here(offset + at, plaintext.subspan(at, length), piece_buffer.get());
    const uint64_t moved =
        base_->write_cached(info_.data_offset + offset + at, {piece_buffer.get(), length});
    if (moved < length) {
      // The rest goes through the base's write(), which wants whole sectors: it starts at the
      // sector the cache took only part of (rewriting that part with the same bytes).
      std::memcpy(ciphertext + at, piece_buffer.get(), length);
      const uint64_t written = at + moved - moved % info_.sector_size;
      at += length;
      cipher_.encrypt_here(offset + at, plaintext.subspan(at), ciphertext + at);
      return written;
    }
    at += length;
  }
  return at;
}

void LuksDevice::flush(Completion done) { base_->flush(std::move(done)); }

void LuksDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  // Trimmed blocks read back as whatever the base returns, decrypted: NBD allows any content.
  base_->trim(info_.data_offset + offset, length, std::move(done));
}

// Zeroes on a LUKS volume are ciphertext like any other data, which only a write can put there:
// ENOTSUP, and the device front writes them, so they take the path (and the helper threads)
// of a write.
void LuksDevice::write_zeroes(uint64_t, uint64_t, backends::ZeroFlags, Completion done) {
  done(errno_code(ENOTSUP));
}

void LuksDevice::block_status(uint64_t offset, uint64_t length, backends::ExtentsCompletion done) {
  base_->block_status(info_.data_offset + offset, length,
                      [done = std::move(done)](std::error_code ec, std::vector<backends::Extent> extents) {
                        for (auto& e : extents) e.zero = false;  // holes decrypt to noise
                        done(ec, std::move(extents));
                      });
}

void LuksDevice::cache(uint64_t offset, uint64_t length, Completion done) {
  base_->cache(info_.data_offset + offset, length, std::move(done));
}

}  // namespace volgate::crypto
