#include "backends/iscsi_path.hpp"

namespace volgate::backends {

const char* to_string(IscsiPath::State state) {
  switch (state) {
    case IscsiPath::State::down:
      return "down";
    case IscsiPath::State::checking:
      return "checking";
    case IscsiPath::State::up:
      return "up";
    case IscsiPath::State::refused:
      return "refused";
  }
  return "?";
}

}  // namespace volgate::backends
