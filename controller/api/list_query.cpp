#include "controller/api/list_query.hpp"

#include <charconv>

namespace volgate::controller {
namespace {

size_t whole_number(const std::string& text, const char* what) {
  size_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > 1'000'000'000)
    bad_request(std::string("'") + what + "' must be a whole number, not '" + text.substr(0, 32) + "'.");
  return value;
}

// cinderclient sorts volumes and snapshots by the names of Cinder's database columns.
std::string sort_key_name(const std::string& key) { return key == "display_name" ? "name" : key; }

bool ascending(const std::string& direction) {
  if (direction == "asc") return true;
  if (direction == "desc") return false;
  bad_request("Sort direction '" + direction.substr(0, 32) + "' is neither 'asc' nor 'desc'.");
}

}  // namespace

ListQuery parse_list_query(const ApiRequest& request, const std::set<std::string>& filters,
                           const std::set<std::string>& sort_keys) {
  ListQuery q;
  std::string sort_key, sort_dir;
  std::vector<std::string> unknown;
  for (const auto& [key, value] : request.query_items()) {
    if (key == "limit") {
      q.limit = whole_number(value, "limit");
    } else if (key == "marker") {
      q.marker = value;
    } else if (key == "offset") {
      q.offset = whole_number(value, "offset");
    } else if (key == "with_count") {
      q.with_count = value == "true" || value == "True" || value == "1";
    } else if (key == "all_tenants" || key == "is_public") {
      // all_tenants is the list's own (see the header); is_public has no effect.
    } else if (key == "sort") {
      size_t at = 0;
      while (at <= value.size()) {
        size_t comma = value.find(',', at);
        if (comma == std::string::npos) comma = value.size();
        std::string item = value.substr(at, comma - at);
        at = comma + 1;
        if (item.empty()) continue;
        const size_t colon = item.find(':');
        const std::string name = sort_key_name(item.substr(0, colon));
        if (!sort_keys.count(name)) bad_request("Invalid sort key '" + name.substr(0, 64) + "'.");
        q.sort.emplace_back(name, colon == std::string::npos ? false : ascending(item.substr(colon + 1)));
      }
    } else if (key == "sort_key") {
      sort_key = value;
    } else if (key == "sort_dir") {
      sort_dir = value;
    } else if (filters.count(key)) {
      q.filters[key] = value;
    } else {
      unknown.push_back(key.substr(0, 64));
    }
  }
  if (!unknown.empty()) {
    std::string names;
    for (const auto& u : unknown) names += (names.empty() ? "" : ", ") + u;
    bad_request("Invalid filters " + names + " are found in query options.");
  }
  if (!sort_key.empty()) {
    sort_key = sort_key_name(sort_key);
    if (!sort_keys.count(sort_key)) bad_request("Invalid sort key '" + sort_key.substr(0, 64) + "'.");
    q.sort.emplace_back(sort_key, sort_dir.empty() ? false : ascending(sort_dir));  // Cinder's default: desc
  }
  // Without a sort, Cinder lists newest first (created_at, then id, both descending).
  if (q.sort.empty() && sort_keys.count("created_at") && sort_keys.count("id"))
    q.sort = {{"created_at", false}, {"id", false}};
  return q;
}

}  // namespace volgate::controller
