#pragma once
// What one check of `volgate doctor` found: a line saying what was looked at and how it is,
// and for a problem, how to fix it.
#include <string>

namespace volgate::controller::doctor {

enum class Severity {
  ok,
  skipped,  // nothing configured that needs it
  warning,  // works, but something will fail or be weaker in some cases
  failure,  // something required is missing: volgate will fail (doctor exits non-zero)
};

struct Finding {
  std::string check;  // short name: "libvirt", "ceph pool 'rbd'", "clock"
  Severity severity = Severity::ok;
  std::string what;  // what was found
  std::string fix;   // how to fix it (empty when ok or skipped)
};

}  // namespace volgate::controller::doctor
