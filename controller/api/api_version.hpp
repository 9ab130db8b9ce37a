#pragma once
// Cinder's and Nova's microversions, as volgate offers them: which range each API answers, how
// a request names the one it wants (`OpenStack-API-Version: volume 3.x` or `compute 2.x`; Nova's
// older `X-OpenStack-Nova-API-Version: 2.x` too), and the version documents the clients read
// before anything else to learn that range.
//
// The highest version is the last one whose request and response shapes the API really
// matches for every resource it serves (see README, "The cinder client" and "The nova
// client"). Raising it is a promise: read what changed in Cinder or Nova between the two
// versions first.
#include <compare>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace volgate::controller {

struct ApiVersion {
  int major = 3;
  int minor = 0;

  auto operator<=>(const ApiVersion&) const = default;
  std::string text() const { return std::to_string(major) + "." + std::to_string(minor); }
  // True from version `major`.`minor_of_major` on (3.48 for a volume request, 2.48 for a
  // compute one): `if (request.version.since(48)) ...`.
  bool since(int minor_of_major) const { return minor >= minor_of_major; }
};

inline constexpr ApiVersion kMinApiVersion{3, 0};
// 3.53: request bodies are checked against a strict schema (unknown fields are 400), as
// volgate has always done; see README for what each version up to here changes.
inline constexpr ApiVersion kMaxApiVersion{3, 53};

// Nova's range. 2.89: attachments show attachment_id and bdm_uuid; see README for the shapes.
inline constexpr ApiVersion kMinComputeVersion{2, 1};
inline constexpr ApiVersion kMaxComputeVersion{2, 89};

// The version a request asks for, from the value of its OpenStack-API-Version header (empty:
// no header, which means the minimum, as in Cinder; "volume latest" means the maximum; other
// services named in the header are ignored). Throws ApiError: 400 for a value that is not a
// version, 406 for one outside the range.
ApiVersion negotiate_api_version(std::string_view header);
// The same for a compute request: "compute 2.x" in OpenStack-API-Version, else the value of
// X-OpenStack-Nova-API-Version (`nova_header`), else 2.1.
ApiVersion negotiate_compute_version(std::string_view header, std::string_view nova_header);

// {"id": "v3.0", "version": MAX, "min_version": MIN, "status", "updated", "links",
// "media-types"}: one entry of the versions document. `base_url` ("http://host:port", may be
// empty) makes the self link absolute.
nlohmann::json version_entry(const std::string& base_url);
// Nova's: {"id": "v2.1", ...} with the compute range.
nlohmann::json compute_version_entry(const std::string& base_url);

}  // namespace volgate::controller
