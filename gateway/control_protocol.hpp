#pragma once
// The gateway's control API, as data: the JSON of its requests and answers, both ways, shared
// by the server in `volgate serve --control` and by GatewayControlClient (the controller's
// side). Strict in what it reads: an unknown key, a wrong type or a bad value is refused with a
// message that names the field. The routes and status codes are described in README.md
// ("Gateway control API").
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/wiping_allocator.hpp"
#include "crypto/secure_bytes.hpp"
#include "gateway/export_spec.hpp"

namespace volgate::gateway::control {

// JSON whose strings wipe their memory when freed: a PUT body carries a volume key, and the
// parser's own buffers hold it while they read it.
using Json = nlohmann::basic_json<std::map, std::vector, WipingString>;

// A request body (or answer) that does not follow the protocol; the message names the field.
class ProtocolError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// How an encrypted export is unlocked: the LUKS volume key itself (no key derivation), or a
// keyslot's passphrase.
struct LuksKey {
  enum class Kind { volume_key, passphrase };
  Kind kind = Kind::volume_key;
  crypto::SecureBytes bytes;
};

struct PutExportRequest {
  ExportSpec target;  // name and luks_key_file unused; read_only is the request's
  bool read_only = false;
  std::optional<LuksKey> luks;
};

struct RequestCounters {
  uint64_t read = 0;
  uint64_t write = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t errors = 0;
};

struct ExportInfo {
  std::string name;
  ExportSpec target;
  bool read_only = false;
  bool encrypted = false;
  uint64_t size = 0;  // bytes the clients see (the decrypted payload when encrypted)
  uint32_t connections = 0;
  RequestCounters requests;
};

struct Health {
  std::string status;
  uint64_t exports = 0;
  uint64_t connections = 0;
  int64_t pid = 0;
};

// Largest request body the server reads: a PUT with every iSCSI option fits in 4 KiB.
inline constexpr size_t kMaxRequestBody = 64 * 1024;

// TARGET <-> ExportSpec. Paths must be absolute: the gateway's working directory is not the
// caller's. Throws ProtocolError.
ExportSpec target_from_json(const Json& target);
Json target_to_json(const ExportSpec& spec);

// The body of PUT /v1/exports/{name}. The key is decoded from base64 straight into locked
// memory; the JSON string that carried it is the caller's to drop (it wipes itself).
PutExportRequest put_request_from_json(const Json& body);
Json put_request_to_json(const ExportSpec& target, bool read_only, const LuksKey* luks);

Json export_to_json(const ExportInfo& info);
ExportInfo export_from_json(const Json& json);
Json health_to_json(const Health& health);
Health health_from_json(const Json& json);

// {"error": {"message": ..., "code": ...}}
Json error_to_json(int code, std::string_view message);
// A body as the text sent. Messages may quote what a client sent (any bytes): what is not
// UTF-8 is replaced, so that an answer never fails to serialise.
WipingString to_text(const Json& body);
// The message of such a body, or nullopt when it is not one.
std::optional<std::string> error_message_from_json(const Json& json);

// Export names: 1-255 characters of letters, digits, '-', '_', '.', ':' (as --export takes).
bool valid_export_name(std::string_view name);

// Base64 (RFC 4648, with padding) into locked memory; throws ProtocolError naming `field`
// (never quoting the text: it is a secret).
crypto::SecureBytes decode_base64_secret(std::string_view text, std::string_view field);
WipingString encode_base64(std::span<const std::byte> bytes);

}  // namespace volgate::gateway::control
