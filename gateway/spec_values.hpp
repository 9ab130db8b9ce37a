#pragma once
// Values that several backend strings share (iscsi://, nbd://): numbers, HOST[:PORT] and
// durations. Errors are std::invalid_argument naming the bad part.
#include <chrono>
#include <string>
#include <string_view>

namespace volgate::gateway {

// Anything longer is a typo.
inline constexpr unsigned kMaxSpecSeconds = 7 * 24 * 3600;

// A decimal number no larger than `max`, nothing else; false otherwise.
bool parse_unsigned(std::string_view text, unsigned max, unsigned& out);

// HOST[:PORT] or [IPV6][:PORT], always returned with its port ("HOST:PORT"); `what` names it
// in errors ("portal").
std::string parse_host_port(std::string_view text, unsigned default_port, std::string_view what);

// A whole number of seconds from `min` to kMaxSpecSeconds, for option `key`.
std::chrono::seconds parse_seconds(std::string_view key, std::string_view value, unsigned min);

}  // namespace volgate::gateway
