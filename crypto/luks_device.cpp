#include "crypto/luks_device.hpp"

#include <algorithm>
#include <cstring>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include "common/buffer_pool.hpp"
#include "common/current_context.hpp"
#include "crypto/crypto_workers.hpp"

namespace volgate::crypto {

using backends::Completion;
using backends::errno_code;

LuksDevice::LuksDevice(std::shared_ptr<backends::BlockDevice> base, UnlockedLuks unlocked)
    : base_(std::move(base)),
      info_(std::move(unlocked.info)),
      volume_key_(std::move(unlocked.volume_key)),
      cipher_(volume_key_.span(), info_.sector_size, info_.iv_offset) {}

LuksDevice::~LuksDevice() = default;

backends::DeviceCapabilities LuksDevice::capabilities() const {
  auto caps = base_->capabilities();
  caps.can_read_cached = caps.can_write_cached = false;  // the cached bytes are ciphertext
  caps.can_zero = !caps.read_only;  // written as encrypted zeroes
  caps.can_fast_zero = false;       // that is never faster than a write
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

std::error_code LuksDevice::check(uint64_t offset, uint64_t length, int out_of_range_error) const {
  if (offset > info_.payload_size || length > info_.payload_size - offset)
    return errno_code(out_of_range_error);
  if (offset % info_.sector_size || length % info_.sector_size) return errno_code(EINVAL);
  return {};
}

// The cipher throws only if OpenSSL fails (or memory runs out): the request then fails with
// EIO rather than escaping into the caller's event loop.
static std::error_code cipher_failed() { return errno_code(EIO); }

// A read: [0, ready) of `data` is read and decrypted already (on a helper, from the cache);
// the rest is read from the base and then decrypted.
struct LuksDevice::ReadOp {
  const LuksDevice* self;
  uint64_t offset;
  std::span<std::byte> data;
  Completion done;
  uint64_t ready = 0;

  void finish(std::error_code ec) {
    std::unique_ptr<ReadOp> owned(this);
    if (!ec) self->cipher_bytes_.add(kDecrypted, data.size());
    owned->done(ec);
  }

  void read_rest() {
    const uint64_t at = self->info_.data_offset + offset + ready;
    self->base_->read(at, data.subspan(ready), [this](std::error_code ec) {
      if (ec) return finish(ec);
      auto rest = data.subspan(ready);
      if (rest.size() >= kOffloadBytes) {
        // Decrypt on a helper; the I/O thread goes on with other requests meanwhile.
        return self->on_helper(
            [this] {
              auto rest = data.subspan(ready);
              self->cipher_.decrypt_here(offset + ready, rest, rest.data());
            },
            [this](std::error_code e) { finish(e); });
      }
      try {
        self->cipher_.decrypt_here(offset + ready, rest, rest.data());
      } catch (const std::exception&) {
        ec = cipher_failed();
      }
      finish(ec);
    });
  }
};

void LuksDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  if (auto ec = check(offset, data.size(), EINVAL)) return done(ec);
  auto* op = new ReadOp{this, offset, data, std::move(done)};
  if (data.size() < kOffloadBytes || !base_->capabilities().can_read_cached) return op->read_rest();
  // Read what the cache holds and decrypt it piece by piece on a helper, then fetch the rest.
  on_helper([op] { op->ready = op->self->read_cached_decrypted(op->offset, op->data); },
            [op](std::error_code ec) {
              if (ec || op->ready == op->data.size()) return op->finish(ec);
              op->read_rest();
            });
}

uint64_t LuksDevice::read_cached_decrypted(uint64_t offset, std::span<std::byte> data) const {
  uint64_t ready = 0;
  while (ready < data.size()) {
    auto piece = data.subspan(ready, std::min<size_t>(kPieceBytes, data.size() - ready));
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
struct LuksDevice::WriteOp {
  LuksDevice* self;
  uint64_t offset;
  std::span<const std::byte> plaintext;
  backends::WriteFlags flags;
  Buffer ciphertext;
  Completion done;
  uint64_t written = 0;

  void finish(std::error_code ec) {
    std::unique_ptr<WriteOp> owned(this);
    if (!ec) self->cipher_bytes_.add(kEncrypted, plaintext.size());
    owned->done(ec);
  }

  void write_rest() {
    auto rest = ciphertext.span().subspan(written);
    self->base_->write(self->info_.data_offset + offset + written, rest, flags,
                       [this](std::error_code ec) { finish(ec); });
  }
};

void LuksDevice::write(uint64_t offset, std::span<const std::byte> data, backends::WriteFlags flags,
                       Completion done) {
  if (auto ec = check(offset, data.size(), ENOSPC)) return done(ec);
  std::unique_ptr<WriteOp> op;
  try {
    op.reset(new WriteOp{this, offset, data, flags, Buffer::allocate(data.size()), std::move(done)});
  } catch (const std::exception&) {
    return done(errno_code(ENOMEM));
  }
  if (data.size() < kOffloadBytes) {
    try {
      cipher_.encrypt_here(offset, data, op->ciphertext.data());
    } catch (const std::exception&) {
      return op.release()->finish(cipher_failed());
    }
    return op.release()->write_rest();
  }
  // Encrypt on a helper and, unless the write must be durable, put what the cache takes into
  // the base from there too; the rest is written from this thread (the base device's).
  WriteOp* raw = op.release();
  const bool write_cached = !flags.fua && base_->capabilities().can_write_cached;
  on_helper(
      [raw, write_cached] {
        if (write_cached) {
          raw->written =
              raw->self->encrypt_write_cached(raw->offset, raw->plaintext, raw->ciphertext.data());
        } else {
          raw->self->cipher_.encrypt_here(raw->offset, raw->plaintext, raw->ciphertext.data());
        }
      },
      [raw](std::error_code ec) {
        if (ec || raw->written == raw->plaintext.size()) return raw->finish(ec);
        raw->write_rest();
      });
}

uint64_t LuksDevice::encrypt_write_cached(uint64_t offset, std::span<const std::byte> plaintext,
                                          std::byte* ciphertext) const {
  // Each piece is encrypted into this helper's own small buffer, which stays in its cache, and
  // copied into the base's cache from there; `ciphertext` is only filled (and so only brought
  // into the cache) from the first piece the base's cache does not take whole.
  thread_local const std::unique_ptr<std::byte[]> piece_buffer(new std::byte[kPieceBytes]);
  uint64_t at = 0;
  while (at < plaintext.size()) {
    const size_t length = std::min<size_t>(kPieceBytes, plaintext.size() - at);
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

// Runs `work` on a CryptoWorkers helper, then `then` with its outcome back on this thread's
// io_context, which is kept running meanwhile.
void LuksDevice::on_helper(std::function<void()> work,
                           std::function<void(std::error_code)> then) const {
  boost::asio::io_context& io = current_io_context();
  auto busy = boost::asio::make_work_guard(io);
  try {
    // `then` is copied, not moved: it must still be there if nothing could be queued.
    CryptoWorkers::instance().submit([work = std::move(work), then, &io, busy] {
      std::error_code ec;
      try {
        work();
      } catch (const std::exception&) {
        ec = cipher_failed();
      }
      boost::asio::post(io, [then, ec, busy] { then(ec); });
    });
  } catch (const std::exception&) {  // out of memory: the job was not queued
    then(errno_code(ENOMEM));
  }
}

void LuksDevice::flush(Completion done) { base_->flush(std::move(done)); }

void LuksDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  if (auto ec = check(offset, length, EINVAL)) return done(ec);
  // Trimmed blocks read back as whatever the base returns, decrypted: NBD allows any content.
  base_->trim(info_.data_offset + offset, length, std::move(done));
}

// Writes encrypted zeroes one chunk at a time, so a request for gigabytes of zeroes needs one
// pooled megabyte, not gigabytes. A chunk of kOffloadBytes or more is zeroed and encrypted on a
// helper, as a large write's data is, and its write to the base follows on this thread: the
// I/O thread never waits for the cipher. A loop rather than recursion: a base device that
// completes inline would otherwise nest one stack frame per chunk.
struct LuksDevice::ZeroWriter {
  static constexpr uint64_t kChunk = 1024 * 1024;
  LuksDevice* self;
  uint64_t offset;
  uint64_t remaining;
  bool fua;
  Buffer buffer;
  Completion done;
  bool in_write = false;         // base_->write() is on the stack
  bool write_completed = false;  // and its completion has run already
  std::error_code write_error;   // with this outcome

  void next() {
    while (remaining > 0) {
      const auto length = static_cast<size_t>(std::min(kChunk, remaining));
      if (length >= kOffloadBytes) {
        self->on_helper([this, length] { encrypt_zeroes(length); },
                        [this, length](std::error_code ec) {
                          if (ec) return finish(ec);
                          if (write(length)) next();
                        });
        return;
      }
      try {
        encrypt_zeroes(length);
      } catch (const std::exception&) {
        return finish(cipher_failed());
      }
      if (!write(length)) return;
    }
    finish({});
  }

  // The next `length` bytes of ciphertext of zeroes, at the start of the buffer.
  void encrypt_zeroes(size_t length) {
    std::span<std::byte> chunk(buffer.data(), length);
    std::memset(chunk.data(), 0, length);
    self->cipher_.encrypt_here(offset, chunk, chunk.data());
  }

  // Writes the ciphered chunk. True when that write completed inline and well, so the caller
  // goes on; otherwise its completion goes on, or the request has finished with its error.
  bool write(size_t length) {
    self->cipher_bytes_.add(kEncrypted, length);
    const uint64_t at = offset;
    offset += length;
    remaining -= length;
    in_write = true;
    write_completed = false;
    self->base_->write(self->info_.data_offset + at, std::span<const std::byte>(buffer.data(), length),
                       {.fua = fua}, [this](std::error_code ec) {
                         if (in_write) {
                           write_completed = true;
                           write_error = ec;
                           return;
                         }
                         if (ec) return finish(ec);
                         next();
                       });
    in_write = false;
    if (!write_completed) return false;
    if (write_error) {
      finish(write_error);
      return false;
    }
    return true;
  }

  void finish(std::error_code ec) {
    Completion callback = std::move(done);
    delete this;
    callback(ec);
  }
};

void LuksDevice::write_zeroes(uint64_t offset, uint64_t length, backends::ZeroFlags flags,
                              Completion done) {
  if (auto ec = check(offset, length, ENOSPC)) return done(ec);
  if (capabilities().read_only) return done(errno_code(EPERM));
  if (flags.fast_only) return done(errno_code(ENOTSUP));
  auto* writer = new ZeroWriter{this, offset, length, flags.fua,
                                Buffer::allocate(static_cast<size_t>(std::min(ZeroWriter::kChunk, length))),
                                std::move(done)};
  writer->next();
}

void LuksDevice::block_status(uint64_t offset, uint64_t length, backends::ExtentsCompletion done) {
  if (offset >= info_.payload_size || length == 0) return done(errno_code(EINVAL), {});
  length = std::min(length, info_.payload_size - offset);
  base_->block_status(info_.data_offset + offset, length,
                      [done = std::move(done)](std::error_code ec, std::vector<backends::Extent> extents) {
                        for (auto& e : extents) e.zero = false;  // holes decrypt to noise
                        done(ec, std::move(extents));
                      });
}

void LuksDevice::cache(uint64_t offset, uint64_t length, Completion done) {
  if (auto ec = check(offset, length, EINVAL)) return done(ec);
  base_->cache(info_.data_offset + offset, length, std::move(done));
}

}  // namespace volgate::crypto
