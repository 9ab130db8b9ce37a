#include "controller/backup/volume_backup.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <thread>
#include <vector>

namespace volgate::controller {
namespace {

bool all_zero(std::span<const std::byte> data) {
  // Compare the buffer with itself shifted by one: zero iff the first byte is zero and every
  // byte equals the next (memcmp runs at memory speed; a byte loop would not).
  return data.empty() || (data[0] == std::byte{0} && std::memcmp(data.data(), data.data() + 1, data.size() - 1) == 0);
}

// Sleeps as long as it takes to keep `done` bytes since `start` under `bps` (0: no limit).
void throttle(uint64_t bps, uint64_t done, std::chrono::steady_clock::time_point start) {
  if (bps == 0) return;
  std::this_thread::sleep_until(start + std::chrono::microseconds(done * 1000000 / bps));
}

}  // namespace

BackupTally back_up_volume(VolumeReader& volume, BackupRepository::Writer& writer, const CopyProgress& progress,
                           uint64_t bps_limit, const BackupManifest* parent) {
  const auto start = std::chrono::steady_clock::now();
  const uint64_t size = volume.size();
  const uint64_t chunk = writer.manifest().chunk_bytes;
  BackupTally tally;
  // The parent's pieces by offset, when the reader can tell which pieces did not change.
  const bool diffed = parent && volume.changes_known() && parent->chunk_bytes == chunk;
  std::map<uint64_t, const ManifestChunk*> earlier;
  if (diffed)
    for (const auto& c : parent->chunks) earlier[c.offset] = &c;
  // The next piece is read on another thread while this one is hashed, compressed and
  // written: reading and the CPU's work overlap. One read in flight, so the reader is used by
  // one thread at a time; two buffers.
  struct Piece {
    uint64_t offset = 0;
    size_t length = 0;
    bool read = false;       // false: a hole or unchanged, not read
    bool unchanged = false;  // the same as in the parent's snapshot
    std::vector<std::byte> data;
  };
  auto read_piece = [&volume, chunk, size, diffed](uint64_t offset, std::vector<std::byte> buffer) {
    Piece p{.offset = offset, .length = static_cast<size_t>(std::min(chunk, size - offset)), .read = false,
            .unchanged = false, .data = std::move(buffer)};
    p.unchanged = diffed && !volume.may_have_changed(p.offset, p.length);
    if (!p.unchanged && volume.may_hold_data(p.offset, p.length)) {
      p.data.resize(chunk);
      volume.read(p.offset, std::span(p.data.data(), p.length));
      p.read = true;
    }
    return p;
  };
  if (progress) progress(0, size);
  if (size == 0) return tally;
  std::future<Piece> next = std::async(std::launch::async, read_piece, 0, std::vector<std::byte>(chunk));
  std::vector<std::byte> spare(chunk);
  for (uint64_t offset = 0; offset < size; offset += chunk) {
    Piece piece = next.get();
    if (offset + chunk < size)
      next = std::async(std::launch::async, read_piece, offset + chunk, std::move(spare));
    if (piece.unchanged) {
      // A hole then (no entry) is a hole now; data then is the parent's chunk.
      if (auto it = earlier.find(offset); it != earlier.end()) {
        if (writer.reuse(*it->second)) {
          ++tally.chunks;
          ++tally.reused_chunks;
        } else {
          if (next.valid()) next.wait();  // the reader is used by one thread at a time
          piece.data.resize(chunk);
          volume.read(offset, std::span(piece.data.data(), piece.length));
          piece.read = true;
        }
      }
    }
    if (piece.read) {
      std::span<const std::byte> data(piece.data.data(), piece.length);
      tally.read_bytes += piece.length;
      throttle(bps_limit, tally.read_bytes, start);
      if (!all_zero(data)) {
        tally.stored_bytes += writer.add(offset, data);
        ++tally.chunks;
      }
    }
    spare = std::move(piece.data);
    if (progress) progress(offset + piece.length, size);
  }
  return tally;
}

void restore_volume(BackupRepository& repository, const BackupManifest& manifest, VolumeWriter& target,
                    const CopyProgress& progress, uint64_t bps_limit) {
  const auto start = std::chrono::steady_clock::now();
  uint64_t written = 0;
  if (target.size() < manifest.volume_bytes)
    throw std::runtime_error("the target holds " + std::to_string(target.size()) + " bytes, the backup " +
                             std::to_string(manifest.volume_bytes));
  uint64_t done = 0;
  if (progress) progress(0, manifest.volume_bytes);
  for (const auto& c : manifest.chunks) {
    std::vector<std::byte> data;
    try {
      data = repository.read_chunk(c.hash);
    } catch (const CorruptChunk& e) {
      throw std::runtime_error("backup " + manifest.backup_id + ": " + e.what() + " (it holds the bytes at " +
                               std::to_string(c.offset) + ")");
    }
    if (data.size() != c.length)
      throw std::runtime_error("backup " + manifest.backup_id + ": chunk " + c.hash + " holds " +
                               std::to_string(data.size()) + " bytes, its manifest says " + std::to_string(c.length));
    target.write(c.offset, data);
    written += c.length;
    throttle(bps_limit, written, start);
    done = c.offset + c.length;
    if (progress) progress(done, manifest.volume_bytes);
  }
  target.finish();
  if (progress) progress(manifest.volume_bytes, manifest.volume_bytes);
}

}  // namespace volgate::controller
