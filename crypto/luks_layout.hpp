#pragma once
// Where a LUKS1 or LUKS2 header keeps the bytes libcryptsetup reads: the header itself and the
// key material of its keyslots.
//
// LuksContainer copies only these into its in-memory image of the device, instead of everything
// before the data segment, which an untrusted header can place as far out as it likes (a data
// offset near 1 GiB used to cost a 1 GiB copy). To find them, this reads just enough of the
// on-disk format, bounded and checked before use: the LUKS1 binary header and its active
// keyslots; the LUKS2 binary headers, their checksums and the JSON `keyslots` section. Offsets
// and sizes that make no sense for the device are refused with an error naming the field.
// Everything else (and all the real validation) is still libcryptsetup's.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace volgate::crypto {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct LuksLayout {
  // A LUKS magic at the start, or a LUKS2 secondary header's magic where the format allows one.
  bool signature = false;
  int version = 0;  // 1 or 2 when recognised
  // Everything libcryptsetup may read: the ranges read here to find the areas, the header
  // copies and the keyslot areas. They may overlap.
  std::vector<ByteRange> areas;
};

// Reads `length` bytes at `offset` of the device, a range inside the device; throws LuksError.
using ReadDeviceBytes = std::function<std::vector<std::byte>(uint64_t offset, uint64_t length)>;

// Locates the header and keyslot areas of the container on a device of `device_size` bytes.
// Throws LuksError (invalid) naming the field when an offset or size lies beyond the device,
// overlaps the header or is larger than any real container needs. What this reads and returns
// is bounded whatever the header says: at most about 30 MiB, and for a cryptsetup-made header
// with one keyslot about 300 KiB.
LuksLayout locate_luks_areas(uint64_t device_size, const ReadDeviceBytes& read);

// The checksum of one LUKS2 header copy (`copy` is the whole hdr_size bytes: the binary header
// and the JSON area), computed as the format defines it: over the copy with its checksum field
// zeroed, with the algorithm its checksum_alg field names. Empty if that algorithm is unknown.
std::vector<std::byte> luks2_header_checksum(std::span<const std::byte> copy);

// Where the checksum sits in a LUKS2 binary header, and its room in bytes.
constexpr size_t kLuks2ChecksumOffset = 448;
constexpr size_t kLuks2ChecksumRoom = 64;

}  // namespace volgate::crypto
