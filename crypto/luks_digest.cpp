#include "crypto/luks_digest.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "crypto/luks_error.hpp"

namespace volgate::crypto {
namespace {

// LUKS1 binary header fields.
constexpr size_t kLuks1HashSpecAt = 72;
constexpr size_t kLuks1HashSpecRoom = 32;
constexpr size_t kLuks1DigestAt = 112;
constexpr size_t kLuks1DigestBytes = 20;
constexpr size_t kLuks1SaltAt = 132;
// Both formats salt with 32 bytes.
constexpr size_t kSaltBytes = 32;
constexpr size_t kLuks1IterationsAt = 164;
constexpr size_t kLuks1HeaderBytes = 592;

// The shortest digest the formats store (SHA-1's size, LUKS1's only one).
constexpr size_t kShortestDigest = 20;

[[noreturn]] void refuse(const std::string& message) { throw LuksError(LuksError::Kind::invalid, message); }

// Standard base64 with padding, as the LUKS2 JSON holds binary values; nothing if malformed.
bool decode_base64(const std::string& text, std::vector<std::byte>& out) {
  if (text.empty() || text.size() % 4 != 0) return false;
  out.resize(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return false;
  const size_t padding = text.ends_with("==") ? 2 : text.ends_with("=") ? 1 : 0;
  out.resize(static_cast<size_t>(n) - padding);
  return true;
}

}  // namespace

LuksDigest luks1_digest(std::span<const std::byte> binary_header) {
  if (binary_header.size() < kLuks1HeaderBytes) refuse("the LUKS1 header is cut short");
  LuksDigest digest;
  const auto* spec = reinterpret_cast<const char*>(binary_header.data() + kLuks1HashSpecAt);
  digest.hash.assign(spec, std::find(spec, spec + kLuks1HashSpecRoom, '\0'));
  for (size_t i = 0; i < 4; ++i)
    digest.iterations = digest.iterations << 8 | std::to_integer<uint32_t>(binary_header[kLuks1IterationsAt + i]);
  digest.salt.assign(binary_header.begin() + kLuks1SaltAt, binary_header.begin() + kLuks1SaltAt + kSaltBytes);
  digest.digest.assign(binary_header.begin() + kLuks1DigestAt,
                       binary_header.begin() + kLuks1DigestAt + kLuks1DigestBytes);
  return digest;
}

LuksDigest luks2_digest(std::string_view metadata_json, int keyslot) {
  const auto metadata = nlohmann::json::parse(metadata_json, nullptr, false);
  auto digests = metadata.is_object() ? metadata.find("digests") : metadata.end();
  if (!metadata.is_object() || digests == metadata.end() || !digests->is_object())
    refuse("the LUKS2 header has no digests");
  const std::string slot = std::to_string(keyslot);
  for (auto it = digests->begin(); it != digests->end(); ++it) {
    const nlohmann::json& entry = it.value();
    if (!entry.is_object()) continue;
    auto keyslots = entry.find("keyslots");
    if (keyslots == entry.end() || !keyslots->is_array() ||
        std::find(keyslots->begin(), keyslots->end(), nlohmann::json(slot)) == keyslots->end())
      continue;
    const std::string field = "digests." + it.key() + ".";
    auto text = [&](const char* key) -> const std::string& {
      auto value = entry.find(key);
      if (value == entry.end() || !value->is_string()) refuse("the LUKS2 " + field + key + " is missing");
      return value->get_ref<const std::string&>();
    };
    if (text("type") != "pbkdf2") refuse("the LUKS2 " + field + "type is not pbkdf2");
    LuksDigest digest;
    digest.hash = text("hash");
    auto iterations = entry.find("iterations");
    if (iterations == entry.end() || !iterations->is_number_unsigned() || iterations->get<uint64_t>() > UINT32_MAX)
      refuse("the LUKS2 " + field + "iterations is not a 32-bit count");
    digest.iterations = iterations->get<uint32_t>();
    if (!decode_base64(text("salt"), digest.salt)) refuse("the LUKS2 " + field + "salt is not base64");
    if (!decode_base64(text("digest"), digest.digest)) refuse("the LUKS2 " + field + "digest is not base64");
    return digest;
  }
  refuse("no LUKS2 digest covers keyslot " + slot);
}

bool luks_digest_matches(const LuksDigest& digest, std::span<const std::byte> volume_key) {
  const EVP_MD* md = EVP_get_digestbyname(digest.hash.c_str());
  if (!md || EVP_MD_get_size(md) <= 0) refuse("the volume key digest's hash '" + digest.hash + "' is unknown");
  const size_t hash_size = static_cast<size_t>(EVP_MD_get_size(md));
  if (digest.digest.size() < kShortestDigest || digest.digest.size() > hash_size)
    refuse("the volume key digest is " + std::to_string(digest.digest.size()) + " bytes, not 20 to " +
           std::to_string(hash_size) + " for " + digest.hash);
  if (digest.salt.size() != kSaltBytes)
    refuse("the volume key digest's salt is " + std::to_string(digest.salt.size()) + " bytes, not 32");
  if (digest.iterations == 0 || digest.iterations > INT32_MAX)
    refuse("the volume key digest's " + std::to_string(digest.iterations) + " iterations are not 1 to 2^31");
  std::vector<unsigned char> computed(digest.digest.size());
  if (PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(volume_key.data()), static_cast<int>(volume_key.size()),
                        reinterpret_cast<const unsigned char*>(digest.salt.data()), static_cast<int>(digest.salt.size()),
                        static_cast<int>(digest.iterations), md,
                        static_cast<int>(computed.size()), computed.data()) != 1)
    refuse("the volume key digest cannot be computed with " + digest.hash);
  return CRYPTO_memcmp(computed.data(), digest.digest.data(), computed.size()) == 0;
}

}  // namespace volgate::crypto
