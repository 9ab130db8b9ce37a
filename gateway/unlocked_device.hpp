#pragma once
// Opening an export's device with its LUKS key given as data (the control API's PUT, or a
// predecessor's hand-over) rather than as --export's luks-key-file.
#include <memory>
#include <optional>

#include "backends/block_device.hpp"
#include "crypto/luks_device.hpp"
#include "gateway/control_protocol.hpp"

namespace volgate::gateway {

// The storage `target` names, unlocked with `luks` when given (the key is consumed: its memory
// is wiped once the device holds it). Throws crypto::LuksError for a wrong key, and
// std::exception naming the target (never the key) for storage that cannot be opened.
std::shared_ptr<backends::BlockDevice> open_unlocked(const ExportSpec& target, std::optional<control::LuksKey>& luks);

// Whether `key` unlocks the volume `served` serves, to the same volume key: a PUT of an export
// that is served already answers "unchanged" only then, since that answer tells the caller its
// key is good. A passphrase costs its keyslot's key derivation, as opening does. Throws
// crypto::LuksError for a header it cannot read.
bool unlocks_served_volume(const crypto::LuksDevice& served, const control::LuksKey& key);

}  // namespace volgate::gateway
