#include "controller/api_error.hpp"

namespace volgate::controller {

int ApiError::http_status() const {
  switch (kind) {
    case Kind::bad_request: return 400;
    case Kind::unauthorized: return 401;
    case Kind::not_found: return 404;
    case Kind::method_not_allowed: return 405;
    case Kind::conflict: return 409;
    case Kind::over_limit: return 413;
    case Kind::internal: return 500;
  }
  return 500;
}

std::string_view ApiError::fault_name() const {
  switch (kind) {
    case Kind::bad_request: return "badRequest";
    case Kind::unauthorized: return "unauthorized";
    case Kind::not_found: return "itemNotFound";
    case Kind::method_not_allowed: return "HTTPMethodNotAllowed";
    case Kind::conflict: return "conflictingRequest";
    case Kind::over_limit: return "overLimit";
    case Kind::internal: return "computeFault";
  }
  return "computeFault";
}

}  // namespace volgate::controller
