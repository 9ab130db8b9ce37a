#pragma once
// The NBD-server backend of --export and TARGET (served through backends::NbdDevice):
//   nbd://HOST[:PORT][/EXPORT]             (default port 10809)
//   nbd+unix:///[EXPORT]?socket=PATH
// as the NBD URI specification writes them, and their options. Errors are
// std::invalid_argument with a message that names the bad part.
#include <string_view>

#include "backends/nbd_options.hpp"

namespace volgate::gateway {

// Whether the backend text is meant as an NBD URI (nbd://, nbd+unix://, and the schemes we
// refuse with a reason, such as nbds://).
bool is_nbd_uri(std::string_view backend);

backends::NbdOptions parse_nbd_uri(std::string_view uri);

// Applies KEY=VALUE if it is an NBD-backend option; false for a key that is not one.
bool apply_nbd_option(backends::NbdOptions& options, std::string_view key, std::string_view value,
                      bool has_value);

}  // namespace volgate::gateway
