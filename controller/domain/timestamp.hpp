#pragma once
// The times the controller records and shows: UTC, ISO 8601 with microseconds, as Cinder writes
// them ("2026-12-04T03:21:20.265123").
#include <string>

namespace volgate::controller {

std::string utc_timestamp();

}  // namespace volgate::controller
