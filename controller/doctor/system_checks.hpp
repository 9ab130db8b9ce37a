#pragma once
// What `volgate doctor` checks of the host itself: memory for LUKS2's key derivation, the
// clock, and /dev/fuse for `volgate serve --fuse`.
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>

#include "controller/doctor/finding.hpp"

namespace volgate::controller::doctor {

// cryptsetup's default Argon2 memory cost for LUKS2 (1 GiB), which `volgate luks format` uses
// too: opening such a volume needs that much memory at once, per volume being opened.
inline constexpr uint64_t kDefaultPbkdfMemoryKib = 1024 * 1024;

// The memory this process could get now, in KiB: MemAvailable from `meminfo` (/proc/meminfo
// text), lowered to what the cgroup's memory.max leaves (`cgroup_max`, `cgroup_current`: the
// files' text; "max" or empty: no limit). nullopt when meminfo says nothing usable.
std::optional<uint64_t> available_memory_kib(const std::string& meminfo, const std::string& cgroup_max,
                                             const std::string& cgroup_current);
// Compares what is available with `needed_kib` (reads /proc/meminfo and this process's cgroup).
Finding check_pbkdf_memory(uint64_t needed_kib);
Finding pbkdf_memory_finding(std::optional<uint64_t> available_kib, uint64_t needed_kib);

// The wall clock: a time before this code was written is wrong (certificates, cephx tickets and
// logs all depend on it); a kernel that says the clock is unsynchronised is a warning.
Finding clock_finding(std::time_t now, bool synchronised);
Finding check_clock();

// /dev/fuse: a character device this process can open read-write, and fusermount3 for users
// other than root. `required`: --fuse is meant to be used (a failure), else only a warning.
Finding check_fuse(bool required, const std::string& device = "/dev/fuse");

}  // namespace volgate::controller::doctor
