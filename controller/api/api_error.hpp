#pragma once
// Errors the volume service reports to its callers, each with the HTTP status and the fault
// name Cinder uses for it, so a REST client sees {"badRequest": {"message": ..., "code": 400}}.
#include <stdexcept>
#include <string>
#include <string_view>

namespace volgate::controller {

class ApiError : public std::runtime_error {
 public:
  enum class Kind {
    bad_request,
    unauthorized,
    forbidden,  // the caller's role may not do this (403)
    not_found,
    method_not_allowed,
    not_acceptable,  // a microversion outside the offered range (406)
    conflict,
    precondition_failed,  // If-Match named another version of the resource (412)
    over_limit,
    internal,
    service_unavailable,  // a part the request needs (the gateway) does not answer (503)
  };
  ApiError(Kind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}

  int http_status() const;
  std::string_view fault_name() const;

  const Kind kind;
};

[[noreturn]] inline void bad_request(const std::string& message) {
  throw ApiError(ApiError::Kind::bad_request, message);
}
[[noreturn]] inline void not_found(const std::string& message) {
  throw ApiError(ApiError::Kind::not_found, message);
}
[[noreturn]] inline void forbidden(const std::string& message) {
  throw ApiError(ApiError::Kind::forbidden, message);
}
[[noreturn]] inline void conflict(const std::string& message) {
  throw ApiError(ApiError::Kind::conflict, message);
}

// A quota limit would be exceeded (HTTP 413, Cinder's overLimit).
class QuotaExceeded : public ApiError {
 public:
  explicit QuotaExceeded(const std::string& message) : ApiError(Kind::over_limit, message) {}
};

// `text` with every absolute file path in it replaced by "<path>": messages from pools and the
// system name the files they failed on, which tell an API user how the host is laid out. The
// log keeps the whole message; answers carry this one.
std::string without_paths(std::string_view text);

}  // namespace volgate::controller
