#pragma once
// The query of a list request, as cinderclient sends it: filters (name=, status=, ...),
// `sort=key[:asc|desc],...` (or the older sort_key/sort_dir; none: newest first, as Cinder
// lists), `limit`, `marker` (the id after
// which the page starts), `offset`, `with_count` (3.45) and `all_tenants`. A parameter the list
// does not know is a 400 naming it, as Cinder answers filters it does not allow.
//
// `all_tenants` is read by the list itself (listed_project() in access_policy.hpp: an admin's
// list then spans every project; a member's stays in its own).
#include <algorithm>
#include <cstddef>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "controller/api/api_error.hpp"
#include "controller/api/router.hpp"

namespace volgate::controller {

struct ListQuery {
  std::map<std::string, std::string> filters;
  std::vector<std::pair<std::string, bool>> sort;  // key, ascending
  std::optional<size_t> limit;
  std::string marker;
  size_t offset = 0;
  bool with_count = false;
};

// Refuses (400) any parameter not in `filters` and not a paging one, sort keys not in
// `sort_keys`, and malformed numbers.
ListQuery parse_list_query(const ApiRequest& request, const std::set<std::string>& filters,
                           const std::set<std::string>& sort_keys);

template <class T>
struct ListPage {
  std::vector<T> items;
  size_t total = 0;  // matching the filters, before paging
};

// Filters, sorts and pages `items`. `field(item, key)` gives a filter or sort key's value as
// JSON (strings compare as text, numbers as numbers); `matches(item, key, wanted)`, when
// given, decides filters that are not plain equality of field() with the text. `id(item)` is
// what `marker` names; 404 when no item has it.
template <class T>
ListPage<T> apply_list_query(const ListQuery& q, std::vector<T> items,
                             const std::function<nlohmann::json(const T&, const std::string&)>& field,
                             const std::function<std::string(const T&)>& id,
                             const std::function<std::optional<bool>(const T&, const std::string&, const std::string&)>&
                                 matches = {}) {
  ListPage<T> page;
  for (T& item : items) {
    bool keep = true;
    for (const auto& [key, wanted] : q.filters) {
      std::optional<bool> decided = matches ? matches(item, key, wanted) : std::nullopt;
      if (!decided) {
        const nlohmann::json value = field(item, key);
        decided = value.is_string() ? value.get<std::string>() == wanted : value.dump() == wanted;
      }
      keep = keep && *decided;
    }
    if (keep) page.items.push_back(std::move(item));
  }
  page.total = page.items.size();
  if (!q.sort.empty())
    std::stable_sort(page.items.begin(), page.items.end(), [&](const T& a, const T& b) {
      for (const auto& [key, ascending] : q.sort) {
        const nlohmann::json x = field(a, key), y = field(b, key);
        if (x == y) continue;
        return ascending ? x < y : y < x;
      }
      return false;
    });
  size_t start = 0;
  if (!q.marker.empty()) {
    auto it = std::find_if(page.items.begin(), page.items.end(), [&](const T& item) { return id(item) == q.marker; });
    if (it == page.items.end()) not_found("Marker " + q.marker + " could not be found.");
    start = static_cast<size_t>(it - page.items.begin()) + 1;
  }
  start = std::min(page.items.size(), start + q.offset);
  size_t end = q.limit ? std::min(page.items.size(), start + *q.limit) : page.items.size();
  page.items = std::vector<T>(std::make_move_iterator(page.items.begin() + static_cast<ptrdiff_t>(start)),
                              std::make_move_iterator(page.items.begin() + static_cast<ptrdiff_t>(end)));
  return page;
}

}  // namespace volgate::controller
