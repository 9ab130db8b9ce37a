#pragma once
// Block status for storage that can only list where its data is (RBD's diff iterate reports
// allocated ranges and nothing else): everything between the listed ranges is a hole that
// reads as zeroes.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backends/block_device.hpp"

namespace volgate::backends {

struct DataRange {
  uint64_t offset;
  uint64_t length;
};

// Describes [start, end) from `data` (any order, may overlap or stick out of the window):
// alternating data and hole extents, adjacent ones of a kind merged. Stops after about
// `max_extents` extents, so the answer may cover less than the window (never nothing when the
// window is not empty), as BlockDevice::block_status allows.
std::vector<Extent> extents_from_data(uint64_t start, uint64_t end, std::vector<DataRange> data,
                                      size_t max_extents);

}  // namespace volgate::backends
