#include "gateway/unlocked_device.hpp"

#include <sys/prctl.h>

#include "crypto/luks_device.hpp"

namespace volgate::gateway {

std::shared_ptr<backends::BlockDevice> open_unlocked(const ExportSpec& target, std::optional<control::LuksKey>& luks) {
  auto base = open_storage(target);
  if (!luks) return base;
  // As for --export luks-key-file: a process holding volume keys must not dump them in a core.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  auto container = crypto::LuksContainer::load(*base);
  control::LuksKey& key = *luks;
  crypto::UnlockedLuks unlocked = key.kind == control::LuksKey::Kind::volume_key
                                      ? container.unlock_with_volume_key(std::move(key.bytes))
                                      : container.unlock(key.bytes);
  return std::make_shared<crypto::LuksDevice>(base, std::move(unlocked));
}

}  // namespace volgate::gateway
