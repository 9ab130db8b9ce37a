#pragma once
// The iscsi:// backend of --export and TARGET:
//   iscsi://PORTAL[,PORTAL...]/TARGET-IQN/LUN  with PORTAL = HOST[:PORT] (default port 3260)
// and its options. Errors are std::invalid_argument with a message that names the bad part.
#include <string_view>

#include "backends/iscsi_options.hpp"

namespace volgate::gateway {

inline constexpr std::string_view kIscsiScheme = "iscsi://";

// Length of the backend part of "iscsi://...,OPTION..." : the portal list has commas of its
// own, so options begin at the first comma after the target.
size_t iscsi_backend_length(std::string_view backend_and_options);

backends::IscsiOptions parse_iscsi_uri(std::string_view uri);

// Applies KEY=VALUE if it is an iSCSI option; false for a key that is not one.
bool apply_iscsi_option(backends::IscsiOptions& options, std::string_view key,
                        std::string_view value, bool has_value);

// Combinations that cannot work (a CHAP user without a secret file...).
void check_iscsi_options(const backends::IscsiOptions& options);

}  // namespace volgate::gateway
