#pragma once
// Opening an export's device with its LUKS key given as data (the control API's PUT, or a
// predecessor's hand-over) rather than as --export's luks-key-file.
#include <memory>
#include <optional>

#include "backends/block_device.hpp"
#include "gateway/control_protocol.hpp"

namespace volgate::gateway {

// The storage `target` names, unlocked with `luks` when given (the key is consumed: its memory
// is wiped once the device holds it). Throws crypto::LuksError for a wrong key, and
// std::exception naming the target (never the key) for storage that cannot be opened.
std::shared_ptr<backends::BlockDevice> open_unlocked(const ExportSpec& target, std::optional<control::LuksKey>& luks);

}  // namespace volgate::gateway
