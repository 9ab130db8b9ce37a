#pragma once
// A point-in-time copy of a volume, kept in the volume's pool.
#include <cstdint>
#include <string>

#include "controller/domain/volume_status.hpp"

namespace volgate::controller {

struct Snapshot {
  std::string id;
  std::string project;
  std::string volume_id;
  std::string name;
  std::string description;
  uint64_t size_gb = 0;
  SnapshotStatus status = SnapshotStatus::creating;
  std::string pool;
  std::string error_message;
  std::string created_at;
  std::string updated_at;
};

}  // namespace volgate::controller
