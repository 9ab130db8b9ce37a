#pragma once
// A volume as the controller records it.
#include <cstdint>
#include <string>
#include <vector>

#include "controller/domain/metadata.hpp"
#include "controller/domain/volume_status.hpp"

namespace volgate::controller {

constexpr uint64_t kGiB = uint64_t{1} << 30;

struct Volume {
  std::string id;  // a random UUID
  std::string project;
  std::string name;
  std::string description;
  uint64_t size_gb = 0;
  VolumeStatus status = VolumeStatus::creating;
  std::string availability_zone;
  std::string volume_type;
  std::string pool;         // the pool that holds it, empty until scheduled
  std::string snapshot_id;  // created from this snapshot
  std::string source_volid;  // cloned from this volume
  std::string image;        // created from this image file
  bool encrypted = false;
  // The LUKS passphrase, wrapped by the master key (KeyWrap); never stored in the clear.
  std::vector<uint8_t> wrapped_key;
  Metadata metadata;          // the user's key/value pairs
  std::string error_message;  // why the last flow failed, for `error` volumes
  std::string created_at;     // ISO 8601, UTC
  std::string updated_at;
};

}  // namespace volgate::controller
