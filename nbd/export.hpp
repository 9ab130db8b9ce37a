#pragma once
// What the server offers: named exports, each a block device with a description.
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/block_device.hpp"

namespace volgate::nbd {

struct Export {
  std::string name;
  std::string description;
  std::shared_ptr<backends::BlockDevice> device;
};

class ExportTable {
 public:
  // Throws std::invalid_argument on a duplicate or invalid name.
  void add(Export e);
  // The empty name selects the default export, the first one added.
  const Export* find(std::string_view name) const;
  std::span<const Export> all() const { return exports_; }
  bool empty() const { return exports_.empty(); }

 private:
  std::vector<Export> exports_;
};

struct BlockSizes {
  uint32_t minimum;
  uint32_t preferred;
  uint32_t maximum;
};

// Flags advertised for `device`; DF only makes sense once structured replies are on.
uint16_t transmission_flags(const backends::DeviceCapabilities& caps, bool structured_replies);
BlockSizes block_sizes(const backends::DeviceCapabilities& caps);

}  // namespace volgate::nbd
