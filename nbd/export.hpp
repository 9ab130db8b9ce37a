#pragma once
// What the server offers: named exports, each a block device with a description.
//
// Exports come and go while the server runs (the gateway's control API), so the table is an
// immutable list swapped under a mutex: a session takes what it needs (one lookup per option,
// one list per NBD_OPT_LIST) and then holds its export through a shared_ptr, never the table.
// Nothing on the request path touches the table; a request only adds to its export's counters
// (per thread: see export_counters.hpp).
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "backends/block_device.hpp"
#include "nbd/export_counters.hpp"

namespace volgate::nbd {

struct Export {
  std::string name;
  std::string description;
  std::shared_ptr<backends::BlockDevice> device;
  // Shared by the sessions that serve this export, which may outlive its place in the table.
  std::shared_ptr<ExportCounters> counters = std::make_shared<ExportCounters>();
};

class ExportTable {
 public:
  using List = std::vector<std::shared_ptr<const Export>>;

  ExportTable() = default;
  // Only before the table is shared with sessions (it is built, then handed to the server).
  ExportTable(ExportTable&& other) noexcept;
  ExportTable(const ExportTable&) = delete;
  ExportTable& operator=(const ExportTable&) = delete;

  // Throws std::invalid_argument on a duplicate or invalid name.
  std::shared_ptr<const Export> add(Export e);

  struct Removal {
    enum class Outcome { removed, not_found, busy } outcome;
    std::shared_ptr<const Export> removed;  // set when removed: its sessions still hold it
    uint32_t connections = 0;               // at the time of the decision
  };
  // Takes an export out of the table. Refused (busy) while sessions are attached to it unless
  // `even_if_connected`; then the caller is expected to close those sessions.
  Removal remove(std::string_view name, bool even_if_connected);

  // The empty name selects the default export: the first one ever added, while it lasts.
  std::shared_ptr<const Export> find(std::string_view name) const;
  // The exports now, in the order they were added.
  std::shared_ptr<const List> all() const;
  bool empty() const { return all()->empty(); }

  // A session entering the transmission phase: counts it as a connection of `e`, unless `e`
  // left the table since the session found it (then false: the session must close). Checked
  // under the same lock as remove(), so a removal either sees the connection or the session
  // sees the removal.
  bool attach(const Export& e) const;
  void detach(const Export& e) const;

 private:
  const Export* find_locked(std::string_view name) const;

  mutable std::mutex mutex_;
  std::shared_ptr<const List> exports_ = std::make_shared<const List>();
  std::shared_ptr<const Export> default_;
  bool had_default_ = false;
};

struct BlockSizes {
  uint32_t minimum;
  uint32_t preferred;
  uint32_t maximum;
};

// Flags advertised for a device with these capabilities (as its DeviceFront offers them); DF
// only makes sense once structured replies are on.
uint16_t transmission_flags(const backends::DeviceCapabilities& caps, bool structured_replies);
BlockSizes block_sizes(const backends::DeviceCapabilities& caps);

}  // namespace volgate::nbd
