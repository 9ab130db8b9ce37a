#pragma once
// REST routing as a table: (method, path pattern, handler). A pattern is a path whose segments
// are either literal or `{name}`, which matches any one segment and hands it to the handler.
// A path no pattern matches is 404; one that matches with another method is 405.
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace volgate::controller {

struct ApiResponse {
  int status = 200;
  std::string body;  // JSON, or empty
};

struct ApiRequest {
  std::string method;
  std::string path;
  std::string query;  // after '?', undecoded
  const std::string& body;
  std::map<std::string, std::string> params;  // the {name} segments of the pattern

  const std::string& param(const std::string& name) const { return params.at(name); }
  // "name=true" (or True, 1) in the query.
  bool query_flag(std::string_view name) const;
  // The value of "name=..." in the query, if given.
  std::optional<std::string> query_value(std::string_view name) const;
};

class Router {
 public:
  using Handler = std::function<ApiResponse(const ApiRequest&)>;

  void add(std::string method, std::string_view pattern, Handler handler);
  // Throws ApiError: 404 when no pattern matches the path, 405 when none with this method.
  ApiResponse dispatch(const std::string& method, const std::string& target, const std::string& body) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };
  static bool match(const Route& route, const std::vector<std::string>& parts,
                    std::map<std::string, std::string>& params);

  std::vector<Route> routes_;
};

std::vector<std::string> split_path(std::string_view path);

}  // namespace volgate::controller
