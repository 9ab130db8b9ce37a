#pragma once
// REST routing as a table: (method, path pattern, handler). A pattern is a path whose segments
// are either literal or `{name}`, which matches any one segment and hands it to the handler.
// A path no pattern matches is 404; one that matches with another method is 405.
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "controller/api/api_version.hpp"
#include "controller/api/caller.hpp"

namespace volgate::controller {

struct ApiResponse {
  int status = 200;
  std::string body;  // JSON, or empty
  std::vector<std::pair<std::string, std::string>> headers = {};  // beyond Content-Type and Server
};

// The request headers the API looks at (the transport reads them; tests fill them in).
struct RequestHeaders {
  std::string api_version;       // OpenStack-API-Version
  std::string nova_api_version;  // X-OpenStack-Nova-API-Version, Nova's older header
  std::string host;         // Host, for absolute links
  std::string if_match;     // If-Match, for metadata updates (3.15)
  // Not a header: the id the API gives this request ("req-UUID"), which it answers in
  // x-openstack-request-id and the action log keeps.
  std::string request_id;
  // Not a header: who sent it, from its token (ApiServer sets it for every request; what calls
  // VolumeApi in the process itself, e.g. the unit tests, is the operator).
  Caller caller{.project = "default", .role = Role::admin};
};

struct ApiRequest {
  std::string method;
  std::string path;
  std::string query;  // after '?', undecoded
  const std::string& body;
  std::map<std::string, std::string> params;  // the {name} segments of the pattern
  ApiVersion version;                          // the microversion negotiated for it
  const RequestHeaders& headers;

  const std::string& param(const std::string& name) const { return params.at(name); }
  // "name=true" (or True, 1) in the query.
  bool query_flag(std::string_view name) const;
  // The value of "name=..." in the query, if given, percent- and '+'-decoded.
  std::optional<std::string> query_value(std::string_view name) const;
  // Every name=value of the query, decoded, in order.
  std::vector<std::pair<std::string, std::string>> query_items() const;
};

class Router {
 public:
  using Handler = std::function<ApiResponse(const ApiRequest&)>;

  void add(std::string method, std::string_view pattern, Handler handler);
  // Answers requests whose path no pattern matches (instead of a plain 404).
  void set_unmatched(Handler handler) { unmatched_ = std::move(handler); }
  // Throws ApiError: 404 when no pattern matches the path, 405 when none with this method.
  // `route`, when given, is set to the pattern of the route the path matched (for metrics),
  // before its handler runs; left as it is when none matched.
  ApiResponse dispatch(const std::string& method, const std::string& target, const std::string& body,
                       ApiVersion version = kMinApiVersion, const RequestHeaders& headers = {},
                       std::string* route = nullptr) const;

 private:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;
    Handler handler;
  };
  static bool match(const Route& route, const std::vector<std::string>& parts,
                    std::map<std::string, std::string>& params);

  std::vector<Route> routes_;
  Handler unmatched_;
};

std::vector<std::string> split_path(std::string_view path);
// Decodes %XX escapes, and '+' as a space where `plus_is_space` (a query; in a path '+' is
// itself); a malformed escape stays as it is.
std::string url_decode(std::string_view text, bool plus_is_space = true);

}  // namespace volgate::controller
