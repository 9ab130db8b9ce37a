#pragma once
// Whole-volume reading and writing for backups and restores, which move a volume's bytes as
// they are on the pool (an encrypted volume's LUKS header and ciphertext included) without a
// gateway in between. Synchronous: they run on a flow's worker thread.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace volgate::controller {

class VolumeReader {
 public:
  virtual ~VolumeReader() = default;
  virtual uint64_t size() const = 0;
  // False when the pool knows [offset, offset + length) holds no data (a hole: reads as zeros),
  // so a backup need not read it. True when it may hold data, or the pool cannot tell.
  virtual bool may_hold_data(uint64_t offset, uint64_t length) = 0;
  // Whether the reader knows what changed since an earlier snapshot of the same volume (an RBD
  // reader given the parent backup's snapshot): then may_have_changed() false means the range
  // holds what it held at that snapshot, so an incremental backup takes it from its parent.
  virtual bool changes_known() const { return false; }
  virtual bool may_have_changed(uint64_t, uint64_t) { return true; }
  // Reads exactly out.size() bytes at `offset` (inside the volume). Throws std::system_error.
  virtual void read(uint64_t offset, std::span<std::byte> out) = 0;
};

class VolumeWriter {
 public:
  virtual ~VolumeWriter() = default;
  virtual uint64_t size() const = 0;
  virtual void write(uint64_t offset, std::span<const std::byte> data) = 0;
  // Makes what was written durable. Throws std::system_error.
  virtual void finish() = 0;
};

// A volume held in a local file (file pools, iSCSI pools' backing files): holes found with
// SEEK_DATA/SEEK_HOLE.
std::unique_ptr<VolumeReader> read_volume_file(const std::string& path);
// Opens the file for a restore: everything it held is discarded first (it reads as zeros, and
// stays thin where the backup has no data).
std::unique_ptr<VolumeWriter> overwrite_volume_file(const std::string& path);

}  // namespace volgate::controller
