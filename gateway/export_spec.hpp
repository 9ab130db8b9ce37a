#pragma once
// The --export argument of `volgate serve`: NAME=BACKEND[,OPTION[=VALUE]...].
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "backends/block_device.hpp"
#include "backends/iscsi_options.hpp"
#include "backends/nbd_options.hpp"
#include "backends/rbd_device.hpp"

namespace volgate::gateway {

struct ExportSpec {
  enum class Backend { file, memory, rbd, iscsi, nbd };

  std::string name;
  Backend backend = Backend::file;
  std::string path;                   // file
  uint64_t memory_size = 0;           // memory
  backends::RbdOptions rbd;           // rbd (its read_only follows read_only)
  bool read_only = false;
  bool direct = false;                // file only
  std::optional<uint64_t> file_size;  // file only: create or grow to this size
  std::optional<std::string> luks_key_file;  // serve the decrypted LUKS payload
  backends::IscsiOptions iscsi;       // iscsi
  backends::NbdOptions nbd;           // nbd (its read_only follows read_only)
};

// Throws std::invalid_argument with a message that quotes the offending part.
ExportSpec parse_export_spec(std::string_view text);

// The TARGET of `volgate luks`: BACKEND[,OPTION...] without luks-key-file.
ExportSpec parse_target_spec(std::string_view text);

// Opens the storage the spec names, unlocked and decrypted when it has a luks-key-file.
// Throws std::exception with a message naming the path and the reason.
std::shared_ptr<backends::BlockDevice> open_device(const ExportSpec& spec);
// Opens just the storage, ignoring luks-key-file.
std::shared_ptr<backends::BlockDevice> open_storage(const ExportSpec& spec);

// The BACKEND[,OPTION...] text that parse_target_spec reads back as `spec` (storage and its
// options: file path, RBD image and client, iSCSI portals and authentication, NBD URI and its
// options, readonly), for
// users to paste into `volgate serve --export NAME=...`. Timeouts left at their defaults and
// luks-key-file are not written.
std::string format_backend(const ExportSpec& spec);

// The help text describing the syntax, shared by --help and error messages.
extern const char* const kExportSyntaxHelp;

}  // namespace volgate::gateway
