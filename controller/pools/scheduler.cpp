#include "controller/pools/scheduler.hpp"

#include <algorithm>
#include <memory>
#include <mutex>
#include <cctype>
#include <random>
#include <stdexcept>

namespace volgate::controller {
namespace {

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string fmt_gb(double gb) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", gb);
  return text;
}

double reserved_gb(const PoolState& pool) { return pool.total_gb * pool.reserved_percentage / 100.0; }

// Scales values to 0..1 (all equal: all 0), as Cinder's weight handler normalises.
std::vector<double> normalise(const std::vector<double>& values) {
  auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  std::vector<double> out(values.size(), 0.0);
  if (values.empty() || *hi == *lo) return out;
  for (size_t i = 0; i < values.size(); ++i) out[i] = (values[i] - *lo) / (*hi - *lo);
  return out;
}

}  // namespace

FilterResult availability_zone_filter(const PoolState& pool, const ScheduleRequest& request) {
  if (request.availability_zone.empty() || request.availability_zone == pool.availability_zone) return std::nullopt;
  return "availability zone " + pool.availability_zone + ", not " + request.availability_zone;
}

FilterResult capacity_filter(const PoolState& pool, const ScheduleRequest& request) {
  const double size = static_cast<double>(request.size_gb);
  if (pool.total_gb <= 0) return "no capacity reported";
  const double free = pool.free_gb - reserved_gb(pool);
  if (pool.thin_provisioning && pool.max_over_subscription_ratio >= 1.0) {
    const double provisioned_ratio = (pool.allocated_gb + size) / pool.total_gb;
    if (provisioned_ratio > pool.max_over_subscription_ratio)
      return "would be over-subscribed " + fmt_gb(provisioned_ratio) + " times (limit " +
             fmt_gb(pool.max_over_subscription_ratio) + ")";
    if (free <= 0) return "no free space left";
    return std::nullopt;
  }
  if (free < size) return fmt_gb(free) + " GiB free, " + fmt_gb(size) + " GiB needed";
  return std::nullopt;
}

FilterResult capabilities_filter(const PoolState& pool, const ScheduleRequest& request) {
  for (const auto& [raw_key, wanted] : request.extra_specs) {
    std::string key = raw_key;
    if (key.starts_with("capabilities:")) key = key.substr(13);
    // Scoped keys other than capabilities: are meant for other parts (e.g. qos:), not for us.
    if (key.find(':') != std::string::npos) continue;
    std::string have;
    if (key == "volume_backend_name") {
      have = pool.name;
    } else if (key == "multiattach") {
      // Every pool can: the attachments of a volume share one gateway export.
      have = "True";
    } else {
      auto it = pool.capabilities.find(key);
      if (it == pool.capabilities.end()) return "no capability " + key;
      have = it->second;
    }
    if (wanted.starts_with("<is> ")) {
      if (lower(wanted.substr(5)) != lower(have)) return key + " is " + have + ", not " + wanted.substr(5);
    } else if (wanted != have) {
      return key + " is " + have + ", not " + wanted;
    }
  }
  return std::nullopt;
}

double virtual_free_gb(const PoolState& pool) {
  if (pool.thin_provisioning && pool.max_over_subscription_ratio >= 1.0)
    return pool.total_gb * pool.max_over_subscription_ratio - pool.allocated_gb - reserved_gb(pool);
  return pool.free_gb - reserved_gb(pool);
}

Scheduler::Scheduler(SchedulerOptions options, std::function<double()> random)
    : options_(std::move(options)), random_(std::move(random)) {
  for (const auto& w : options_.weighers)
    if (w != "capacity" && w != "allocated_capacity" && w != "chance")
      throw std::invalid_argument("unknown weigher '" + w + "' (capacity, allocated_capacity, chance)");
  if (!random_) {
    // Requests are scheduled from several threads at once: the engine has its own lock.
    struct Engine {
      std::mutex mutex;
      std::mt19937_64 generator{std::random_device{}()};
    };
    random_ = [engine = std::make_shared<Engine>()]() {
      std::lock_guard lock(engine->mutex);
      return std::uniform_real_distribution<double>(0.0, 1.0)(engine->generator);
    };
  }
}

std::vector<std::pair<double, PoolState>> Scheduler::rank(const std::vector<PoolState>& pools,
                                                          const ScheduleRequest& request) const {
  std::vector<PoolState> passed;
  for (const auto& pool : pools) {
    if (!request.only_pool.empty() && pool.name != request.only_pool) continue;
    if (availability_zone_filter(pool, request) || capacity_filter(pool, request) ||
        capabilities_filter(pool, request))
      continue;
    passed.push_back(pool);
  }
  std::vector<double> total(passed.size(), 0.0);
  for (const auto& weigher : options_.weighers) {
    std::vector<double> raw;
    double multiplier = 1.0;
    for (const auto& pool : passed) {
      if (weigher == "capacity") {
        raw.push_back(virtual_free_gb(pool));
        multiplier = options_.capacity_weight_multiplier;
      } else if (weigher == "allocated_capacity") {
        raw.push_back(pool.allocated_gb);
        multiplier = options_.allocated_capacity_weight_multiplier;
      } else {
        raw.push_back(random_());
        multiplier = options_.chance_weight_multiplier;
      }
    }
    auto scaled = normalise(raw);
    for (size_t i = 0; i < passed.size(); ++i) total[i] += multiplier * scaled[i];
  }
  std::vector<std::pair<double, PoolState>> ranked;
  for (size_t i = 0; i < passed.size(); ++i) ranked.emplace_back(total[i], passed[i]);
  // Stable, so equal weights keep the configured pool order.
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return ranked;
}

std::string Scheduler::choose(const std::vector<PoolState>& pools, const ScheduleRequest& request) const {
  auto ranked = rank(pools, request);
  if (!ranked.empty()) return ranked.front().second.name;
  std::string why;
  for (const auto& pool : pools) {
    FilterResult refused;
    if (!request.only_pool.empty() && pool.name != request.only_pool)
      refused = "the source lives in pool " + request.only_pool;
    else if (!(refused = availability_zone_filter(pool, request)) && !(refused = capacity_filter(pool, request)))
      refused = capabilities_filter(pool, request);
    if (!why.empty()) why += "; ";
    why += pool.name + ": " + refused.value_or("refused");
  }
  throw NoValidPool("No valid pool was found for " + std::to_string(request.size_gb) + " GiB" +
                    (pools.empty() ? ": no pools are configured" : " (" + why + ")"));
}

}  // namespace volgate::controller
