// Scheduler filters and weighers, each alone, then together.
#include <gtest/gtest.h>

#include "controller/pools/scheduler.hpp"

namespace volgate::controller {
namespace {

PoolState pool(const std::string& name, double total, double free, double allocated, bool thin = true,
               double ratio = 2.0) {
  PoolState p;
  p.name = name;
  p.availability_zone = "nova";
  p.total_gb = total;
  p.free_gb = free;
  p.allocated_gb = allocated;
  p.thin_provisioning = thin;
  p.max_over_subscription_ratio = ratio;
  return p;
}

ScheduleRequest request(uint64_t size) {
  ScheduleRequest r;
  r.size_gb = size;
  return r;
}

TEST(AvailabilityZoneFilter, PassesTheSameZoneOrAnyWhenNoneAsked) {
  PoolState p = pool("a", 100, 100, 0);
  ScheduleRequest r = request(1);
  EXPECT_FALSE(availability_zone_filter(p, r));
  r.availability_zone = "nova";
  EXPECT_FALSE(availability_zone_filter(p, r));
  r.availability_zone = "zone-b";
  auto why = availability_zone_filter(p, r);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("zone-b"), std::string::npos);
}

TEST(CapacityFilter, ThickPoolsNeedRealFreeSpaceMinusTheReserve) {
  PoolState p = pool("a", 100, 10, 90, false);
  EXPECT_FALSE(capacity_filter(p, request(10)));
  EXPECT_TRUE(capacity_filter(p, request(11)));
  p.reserved_percentage = 5;  // 5 GiB of the 10 free are kept back
  EXPECT_FALSE(capacity_filter(p, request(5)));
  EXPECT_TRUE(capacity_filter(p, request(6)));
}

TEST(CapacityFilter, ThinPoolsMayPromiseUpToTheOverSubscriptionRatio) {
  PoolState p = pool("a", 100, 50, 150, true, 2.0);  // 150 of 200 promised
  EXPECT_FALSE(capacity_filter(p, request(50)));     // exactly 2.0
  auto why = capacity_filter(p, request(51));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("over-subscribed"), std::string::npos);
  p.free_gb = 0;  // nothing left to write to, whatever the ratio says
  EXPECT_TRUE(capacity_filter(p, request(1)));
  EXPECT_TRUE(capacity_filter(pool("empty", 0, 0, 0), request(1)));
}

TEST(CapabilitiesFilter, EveryExtraSpecMustMatch) {
  PoolState p = pool("fast", 100, 100, 0);
  p.capabilities = {{"storage_tier", "ssd"}, {"thin_provisioning_support", "true"}};
  ScheduleRequest r = request(1);
  r.extra_specs = {{"storage_tier", "ssd"}};
  EXPECT_FALSE(capabilities_filter(p, r));
  r.extra_specs = {{"capabilities:storage_tier", "ssd"}, {"thin_provisioning_support", "<is> True"}};
  EXPECT_FALSE(capabilities_filter(p, r));
  r.extra_specs = {{"volume_backend_name", "fast"}};
  EXPECT_FALSE(capabilities_filter(p, r));
  r.extra_specs = {{"qos:read_iops", "100"}};  // scoped for someone else
  EXPECT_FALSE(capabilities_filter(p, r));
  r.extra_specs = {{"storage_tier", "hdd"}};
  EXPECT_TRUE(capabilities_filter(p, r));
  r.extra_specs = {{"replication", "true"}};
  EXPECT_TRUE(capabilities_filter(p, r));
  r.extra_specs = {{"volume_backend_name", "slow"}};
  EXPECT_TRUE(capabilities_filter(p, r));
}

TEST(CapacityWeigher, PrefersTheMostVirtualFreeSpace) {
  Scheduler s(SchedulerOptions{});
  // Thin: 100 * 2 - 150 = 50 virtual free vs thick: 80 free.
  std::vector<PoolState> pools{pool("thin", 100, 90, 150, true, 2.0), pool("thick", 100, 80, 20, false)};
  EXPECT_DOUBLE_EQ(virtual_free_gb(pools[0]), 50);
  EXPECT_DOUBLE_EQ(virtual_free_gb(pools[1]), 80);
  EXPECT_EQ(s.choose(pools, request(1)), "thick");
  pools[1].free_gb = 40;
  EXPECT_EQ(s.choose(pools, request(1)), "thin");
}

TEST(AllocatedCapacityWeigher, NegativeMultiplierPrefersTheLeastPromised) {
  SchedulerOptions o;
  o.weighers = {"allocated_capacity"};
  Scheduler s(o);
  std::vector<PoolState> pools{pool("busy", 100, 100, 60), pool("quiet", 100, 10, 5)};
  EXPECT_EQ(s.choose(pools, request(1)), "quiet");
  o.allocated_capacity_weight_multiplier = 1.0;  // stacking instead of spreading
  EXPECT_EQ(Scheduler(o).choose(pools, request(1)), "busy");
}

TEST(ChanceWeigher, FollowsTheRandomSource) {
  SchedulerOptions o;
  o.weighers = {"chance"};
  std::vector<double> draws{0.1, 0.9, 0.8, 0.2};
  size_t next = 0;
  Scheduler s(o, [&] { return draws[next++ % draws.size()]; });
  std::vector<PoolState> pools{pool("a", 100, 100, 0), pool("b", 100, 100, 0)};
  EXPECT_EQ(s.choose(pools, request(1)), "b");
  EXPECT_EQ(s.choose(pools, request(1)), "a");
}

TEST(Scheduler, WeighersAreNormalisedBeforeTheirMultipliers) {
  // Capacity spans thousands of GiB, chance 0..1: after scaling, a chance multiplier of 2
  // outweighs a capacity multiplier of 1.
  SchedulerOptions o;
  o.weighers = {"capacity", "chance"};
  o.chance_weight_multiplier = 2.0;
  std::vector<double> draws{1.0, 0.0};
  size_t next = 0;
  Scheduler s(o, [&] { return draws[next++]; });
  std::vector<PoolState> pools{pool("small", 100, 100, 0, false), pool("huge", 10000, 10000, 0, false)};
  auto ranked = s.rank(pools, request(1));
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_EQ(ranked[0].second.name, "small");
  EXPECT_DOUBLE_EQ(ranked[0].first, 2.0);
  EXPECT_DOUBLE_EQ(ranked[1].first, 1.0);
}

TEST(Scheduler, NoValidPoolSaysWhyEachWasRefused) {
  Scheduler s(SchedulerOptions{});
  PoolState far = pool("far", 100, 100, 0);
  far.availability_zone = "other";
  std::vector<PoolState> pools{pool("full", 100, 1, 99, false), far};
  ScheduleRequest in_nova = request(5);
  in_nova.availability_zone = "nova";
  try {
    s.choose(pools, in_nova);
    FAIL() << "expected NoValidPool";
  } catch (const NoValidPool& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("No valid pool"), std::string::npos) << m;
    EXPECT_NE(m.find("full: 1.0 GiB free, 5.0 GiB needed"), std::string::npos) << m;
    EXPECT_NE(m.find("far: "), std::string::npos) << m;
  }
  ScheduleRequest pinned = request(1);
  pinned.only_pool = "far";
  pinned.availability_zone = "other";
  EXPECT_EQ(s.choose(pools, pinned), "far");
  EXPECT_THROW(s.choose({}, request(1)), NoValidPool);
}

TEST(Scheduler, UnknownWeighersAreRefused) {
  SchedulerOptions o;
  o.weighers = {"capacity", "goodness"};
  EXPECT_THROW(Scheduler{o}, std::invalid_argument);
}

}  // namespace
}  // namespace volgate::controller
