#include "controller/backup/volume_backup.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
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
                           uint64_t bps_limit) {
  const auto start = std::chrono::steady_clock::now();
  const uint64_t size = volume.size();
  const uint64_t chunk = writer.manifest().chunk_bytes;
  std::vector<std::byte> buffer(chunk);
  BackupTally tally;
  if (progress) progress(0, size);
  for (uint64_t offset = 0; offset < size; offset += chunk) {
    const size_t length = static_cast<size_t>(std::min(chunk, size - offset));
    if (volume.may_hold_data(offset, length)) {
      std::span<std::byte> piece(buffer.data(), length);
      volume.read(offset, piece);
      tally.read_bytes += length;
      throttle(bps_limit, tally.read_bytes, start);
      if (!all_zero(piece)) {
        tally.stored_bytes += writer.add(offset, piece);
        ++tally.chunks;
      }
    }
    if (progress) progress(offset + length, size);
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
