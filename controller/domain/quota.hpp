#pragma once
// Per-project quotas: volumes, snapshots and gigabytes (volumes' and snapshots' sizes together,
// as Cinder counts them), backups and backup gigabytes.
//
// A flow first reserves what it needs (checked against the limit together with everything in
// use and everything other flows have reserved), then commits the reservation to a holder (the
// volume or snapshot) once the DB entry exists, or rolls it back. Usage is the sum of what the
// holders hold, so releasing a holder twice, or committing a reservation twice, changes nothing:
// that is what lets a restarted controller replay or revert a half-done flow safely.
#include <cstdint>
#include <map>
#include <string>

namespace volgate::controller {

inline constexpr const char* kQuotaVolumes = "volumes";
inline constexpr const char* kQuotaSnapshots = "snapshots";
inline constexpr const char* kQuotaGigabytes = "gigabytes";
// Backups and their volumes' sizes, counted apart from volumes and snapshots (as Cinder does).
inline constexpr const char* kQuotaBackups = "backups";
inline constexpr const char* kQuotaBackupGigabytes = "backup_gigabytes";

// resource -> amount
using QuotaDeltas = std::map<std::string, int64_t>;

struct QuotaLine {
  int64_t limit = -1;  // -1: unlimited
  int64_t in_use = 0;
  int64_t reserved = 0;
};

// resource -> line, for every resource
using QuotaUsage = std::map<std::string, QuotaLine>;

}  // namespace volgate::controller
