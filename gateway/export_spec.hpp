#pragma once
// The --export argument of `volgate serve`: NAME=BACKEND[,OPTION[=VALUE]...].
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "backends/block_device.hpp"

namespace volgate::gateway {

struct ExportSpec {
  enum class Backend { file, memory };

  std::string name;
  Backend backend = Backend::file;
  std::string path;                   // file
  uint64_t memory_size = 0;           // memory
  bool read_only = false;
  bool direct = false;                // file only
  std::optional<uint64_t> file_size;  // file only: create or grow to this size
};

// Throws std::invalid_argument with a message that quotes the offending part.
ExportSpec parse_export_spec(std::string_view text);

// Opens the storage the spec names. Throws std::exception with a message naming the path.
std::shared_ptr<backends::BlockDevice> open_device(const ExportSpec& spec);

// The help text describing the syntax, shared by --help and error messages.
extern const char* const kExportSyntaxHelp;

}  // namespace volgate::gateway
