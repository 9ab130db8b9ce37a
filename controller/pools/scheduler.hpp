#pragma once
// Chooses the pool for a new volume, the way Cinder's filter scheduler does: filters drop the
// pools that cannot take the volume, weighers rank the rest, the best wins.
//
// Filters: availability zone; capacity (free space minus the reserved share, and for thin pools
// the over-subscription ratio on what is already promised); capabilities (every extra spec of
// the volume type must match what the pool reports). Weighers: free capacity (virtual free
// space for thin pools), allocated capacity (what is already promised) and chance (random). Each
// weigher's raw values are scaled to 0..1 across the candidates before its multiplier applies,
// so multipliers compare weighers, not units.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace volgate::controller {

// A pool as the scheduler sees it at one moment.
struct PoolState {
  std::string name;
  std::string availability_zone;
  double total_gb = 0;
  double free_gb = 0;
  double allocated_gb = 0;  // sum of the sizes of the volumes placed on it
  double max_over_subscription_ratio = 1.0;
  int reserved_percentage = 0;
  bool thin_provisioning = false;
  std::map<std::string, std::string> capabilities;
};

struct ScheduleRequest {
  uint64_t size_gb = 0;
  std::string availability_zone;  // empty: any
  std::map<std::string, std::string> extra_specs;  // from the volume type
  std::string only_pool;  // empty: any; set when the source (snapshot, volume) lives in one pool
};

struct SchedulerOptions {
  std::vector<std::string> weighers{"capacity"};  // capacity, allocated_capacity, chance
  double capacity_weight_multiplier = 1.0;
  double allocated_capacity_weight_multiplier = -1.0;  // negative: prefer the least promised
  double chance_weight_multiplier = 1.0;
};

// Why a filter refused a pool, or nothing when it passes.
using FilterResult = std::optional<std::string>;

FilterResult availability_zone_filter(const PoolState& pool, const ScheduleRequest& request);
FilterResult capacity_filter(const PoolState& pool, const ScheduleRequest& request);
FilterResult capabilities_filter(const PoolState& pool, const ScheduleRequest& request);

// Free space the capacity weigher ranks by: thin pools count what over-subscription still allows.
double virtual_free_gb(const PoolState& pool);

class NoValidPool : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options, std::function<double()> random = {});

  // Pools that pass every filter, ranked best first, with their weights.
  std::vector<std::pair<double, PoolState>> rank(const std::vector<PoolState>& pools,
                                                 const ScheduleRequest& request) const;
  // The best pool's name. Throws NoValidPool listing why each pool was refused.
  std::string choose(const std::vector<PoolState>& pools, const ScheduleRequest& request) const;

 private:
  SchedulerOptions options_;
  std::function<double()> random_;
};

}  // namespace volgate::controller
