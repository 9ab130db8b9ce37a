#pragma once
// The BACKEND[,OPTION...] part of --export alone (luks-key-file included), for front-ends that
// serve one device under no export name: the nbdkit plugin. Parsed by export_spec's code.
#include <string_view>

#include "gateway/export_spec.hpp"

namespace volgate::gateway {

// Throws std::invalid_argument with a message that quotes `text` after `label` ("SPEC").
ExportSpec parse_backend_spec(std::string_view text, std::string_view label);

// The help text of that syntax (kExportSyntaxHelp without NAME=).
extern const char* const kBackendSyntaxHelp;

}  // namespace volgate::gateway
