#include "gateway/unlocked_device.hpp"

#include <openssl/crypto.h>
#include <sys/prctl.h>

#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"
#include "crypto/luks_error.hpp"

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

bool unlocks_served_volume(const crypto::LuksDevice& served, const control::LuksKey& key) {
  const crypto::SecureBytes& served_key = served.volume_key();
  auto same = [&served_key](const crypto::SecureBytes& k) {
    return k.size() == served_key.size() && CRYPTO_memcmp(k.data(), served_key.data(), k.size()) == 0;
  };
  if (key.kind == control::LuksKey::Kind::volume_key) return same(key.bytes);
  auto container = crypto::LuksContainer::load(*served.shared_base());
  try {
    return same(container.unlock(key.bytes).volume_key);
  } catch (const crypto::LuksError& e) {
    if (e.kind == crypto::LuksError::Kind::wrong_passphrase) return false;
    throw;
  }
}

}  // namespace volgate::gateway
