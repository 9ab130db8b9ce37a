#include "controller/api/api_error.hpp"

namespace volgate::controller {

int ApiError::http_status() const {
  switch (kind) {
    case Kind::bad_request: return 400;
    case Kind::unauthorized: return 401;
    case Kind::forbidden: return 403;
    case Kind::not_found: return 404;
    case Kind::method_not_allowed: return 405;
    case Kind::not_acceptable: return 406;
    case Kind::conflict: return 409;
    case Kind::precondition_failed: return 412;
    case Kind::over_limit: return 413;
    case Kind::internal: return 500;
    case Kind::service_unavailable: return 503;
  }
  return 500;
}

std::string_view ApiError::fault_name() const {
  switch (kind) {
    case Kind::bad_request: return "badRequest";
    case Kind::unauthorized: return "unauthorized";
    case Kind::forbidden: return "forbidden";
    case Kind::not_found: return "itemNotFound";
    case Kind::method_not_allowed: return "HTTPMethodNotAllowed";
    // Cinder has no fault name of its own for these statuses and uses its generic one.
    case Kind::not_acceptable: return "computeFault";
    case Kind::precondition_failed: return "computeFault";
    case Kind::conflict: return "conflictingRequest";
    case Kind::over_limit: return "overLimit";
    case Kind::internal: return "computeFault";
    case Kind::service_unavailable: return "serviceUnavailable";
  }
  return "computeFault";
}

std::string without_paths(std::string_view text) {
  auto starts_path = [&](size_t i) {
    if (text[i] != '/' || i + 1 >= text.size() || text[i + 1] == ' ') return false;
    return i == 0 || std::string_view(" \t'\"(=[<,").find(text[i - 1]) != std::string_view::npos;
  };
  auto ends_path = [](char c) { return std::string_view(" \t'\",;)]>").find(c) != std::string_view::npos; };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (!starts_path(i)) {
      out += text[i++];
      continue;
    }
    size_t end = i;
    while (end < text.size() && !ends_path(text[end])) ++end;
    // A path at the end of a clause: "open /x/y.img: No such file".
    while (end > i + 1 && (text[end - 1] == ':' || text[end - 1] == '.')) --end;
    out += "<path>";
    i = end;
  }
  return out;
}

}  // namespace volgate::controller
