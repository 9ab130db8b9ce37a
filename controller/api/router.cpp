#include "controller/api/router.hpp"

#include <algorithm>

#include "controller/api/api_error.hpp"

namespace volgate::controller {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > start) parts.emplace_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

std::string url_decode(std::string_view text, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+' && plus_is_space) {
      out += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> ApiRequest::query_items() const {
  std::vector<std::pair<std::string, std::string>> items;
  size_t at = 0;
  while (at < query.size()) {
    size_t amp = query.find('&', at);
    if (amp == std::string::npos) amp = query.size();
    std::string_view kv(query.data() + at, amp - at);
    if (!kv.empty()) {
      const size_t eq = kv.find('=');
      items.emplace_back(url_decode(kv.substr(0, eq)),
                         eq == std::string_view::npos ? std::string() : url_decode(kv.substr(eq + 1)));
    }
    at = amp + 1;
  }
  return items;
}

std::optional<std::string> ApiRequest::query_value(std::string_view name) const {
  for (auto& [key, value] : query_items())
    if (key == name) return value;
  return std::nullopt;
}

bool ApiRequest::query_flag(std::string_view name) const {
  auto value = query_value(name);
  return value && (*value == "true" || *value == "True" || *value == "1");
}

void Router::add(std::string method, std::string_view pattern, Handler handler) {
  routes_.push_back({std::move(method), std::string(pattern), split_path(pattern), std::move(handler)});
}

bool Router::match(const Route& route, const std::vector<std::string>& parts,
                   std::map<std::string, std::string>& params) {
  if (route.segments.size() != parts.size()) return false;
  params.clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& segment = route.segments[i];
    if (segment.size() > 2 && segment.front() == '{' && segment.back() == '}')
      params[segment.substr(1, segment.size() - 2)] = parts[i];
    else if (segment != parts[i])
      return false;
  }
  return true;
}

ApiResponse Router::dispatch(const std::string& method, const std::string& target, const std::string& body,
                             ApiVersion version, const RequestHeaders& headers, std::string* route_out) const {
  const size_t q = target.find('?');
  ApiRequest request{method, target.substr(0, q), q == std::string::npos ? "" : target.substr(q + 1), body, {},
                     version, headers};
  const auto parts = split_path(request.path);
  // The routes that match the path most literally decide: "volumes/detail" is not the volume
  // called "detail", for any method.
  std::map<std::string, std::string> params;
  size_t most_literals = 0;
  bool path_known = false;
  for (const Route& route : routes_) {
    if (!match(route, parts, params)) continue;
    if (route.segments.size() - params.size() >= most_literals && route_out) *route_out = route.pattern;
    most_literals = std::max(most_literals, route.segments.size() - params.size());
    path_known = true;
  }
  if (!path_known) {
    if (unmatched_) return unmatched_(request);
    not_found("Unknown path " + request.path + ".");
  }
  for (const Route& route : routes_) {
    if (route.method != method || !match(route, parts, params)) continue;
    if (route.segments.size() - params.size() != most_literals) continue;
    request.params = std::move(params);
    return route.handler(request);
  }
  throw ApiError(ApiError::Kind::method_not_allowed, method + " is not allowed on " + request.path + ".");
}

}  // namespace volgate::controller
