#include "controller/api/api_version.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include "controller/api/api_error.hpp"

namespace volgate::controller {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// "3.27" -> {3, 27}; leading zeros and signs are not versions.
std::optional<ApiVersion> parse_number(std::string_view text) {
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  auto number = [](std::string_view part) -> std::optional<int> {
    if (part.empty() || part.size() > 6 || (part.size() > 1 && part[0] == '0')) return std::nullopt;
    if (part.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    int value = 0;
    auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (error != std::errc() || end != part.data() + part.size()) return std::nullopt;
    return value;
  };
  auto major = number(text.substr(0, dot));
  auto minor = number(text.substr(dot + 1));
  if (!major || !minor || *major == 0) return std::nullopt;
  return ApiVersion{*major, *minor};
}

}  // namespace

namespace {

// What one service's versions are called in the header, and its range.
struct VersionRange {
  std::string_view service;
  ApiVersion min, max;
};

// The version `service` names in an OpenStack-API-Version header, which may carry several
// services' ("compute 2.60, volume 3.27").
std::optional<std::string_view> named_version(std::string_view header, std::string_view service) {
  std::optional<std::string_view> wanted;
  while (!header.empty()) {
    const size_t comma = header.find(',');
    std::string_view item = trim(header.substr(0, comma));
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    const size_t space = item.find(' ');
    if (space == std::string_view::npos) continue;
    if (equals_ignoring_case(item.substr(0, space), service)) wanted = trim(item.substr(space + 1));
  }
  return wanted;
}

ApiVersion checked_version(std::string_view wanted, const VersionRange& range) {
  if (equals_ignoring_case(wanted, "latest")) return range.max;
  auto version = parse_number(wanted);
  if (!version)
    bad_request("Invalid API version '" + std::string(wanted.substr(0, 32)) + "'; expected '" +
                std::string(range.service) + " " + std::to_string(range.min.major) + ".N' or '" +
                std::string(range.service) + " latest'.");
  if (*version < range.min || *version > range.max)
    throw ApiError(ApiError::Kind::not_acceptable, "Version " + version->text() +
                                                       " is not supported by this API; it offers " +
                                                       range.min.text() + " to " + range.max.text() + ".");
  return *version;
}

}  // namespace

ApiVersion negotiate_api_version(std::string_view header) {
  auto wanted = named_version(header, "volume");
  if (!wanted) return kMinApiVersion;
  return checked_version(*wanted, {"volume", kMinApiVersion, kMaxApiVersion});
}

ApiVersion negotiate_compute_version(std::string_view header, std::string_view nova_header) {
  const VersionRange range{"compute", kMinComputeVersion, kMaxComputeVersion};
  if (auto wanted = named_version(header, "compute")) return checked_version(*wanted, range);
  nova_header = trim(nova_header);
  if (!nova_header.empty()) return checked_version(nova_header, range);
  return kMinComputeVersion;
}

nlohmann::json version_entry(const std::string& base_url) {
  return {{"id", "v3.0"},
          {"status", "CURRENT"},
          {"version", kMaxApiVersion.text()},
          {"min_version", kMinApiVersion.text()},
          // When the range last changed.
          {"updated", "2026-12-04T00:00:00Z"},
          {"links", nlohmann::json::array({{{"rel", "self"}, {"href", base_url + "/v3/"}}})},
          {"media-types", nlohmann::json::array({{{"base", "application/json"},
                                                  {"type", "application/vnd.openstack.volume+json;version=3"}}})}};
}

nlohmann::json compute_version_entry(const std::string& base_url) {
  return {{"id", "v2.1"},
          {"status", "CURRENT"},
          {"version", kMaxComputeVersion.text()},
          {"min_version", kMinComputeVersion.text()},
          {"updated", "2026-12-04T00:00:00Z"},
          {"links", nlohmann::json::array({{{"rel", "self"}, {"href", base_url + "/v2.1/"}}})},
          {"media-types", nlohmann::json::array({{{"base", "application/json"},
                                                  {"type", "application/vnd.openstack.compute+json;version=2.1"}}})}};
}

}  // namespace volgate::controller
