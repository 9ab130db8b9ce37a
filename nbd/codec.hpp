#pragma once
// The NBD wire format as pure functions: bytes in, messages out, and back. No sockets, no
// state, so every path can be unit-tested and fuzzed on its own.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nbd/protocol.hpp"

namespace volgate::nbd {

using Bytes = std::vector<std::byte>;

// Big-endian field access.
uint16_t load_be16(const std::byte* p);
uint32_t load_be32(const std::byte* p);
uint64_t load_be64(const std::byte* p);
void store_be16(std::byte* p, uint16_t v);
void store_be32(std::byte* p, uint32_t v);
void store_be64(std::byte* p, uint64_t v);

// Appends big-endian fields and raw strings to a growing message.
class Writer {
 public:
  explicit Writer(Bytes& out) : out_(out) {}
  Writer& u16(uint16_t v);
  Writer& u32(uint32_t v);
  Writer& u64(uint64_t v);
  Writer& str(std::string_view s);
  Writer& zeroes(size_t n);

 private:
  Bytes& out_;
};

// ---- Handshake ----

struct OptionHeader {
  uint32_t option;
  uint32_t length;
};
// Nothing when the magic is wrong.
std::optional<OptionHeader> parse_option_header(std::span<const std::byte, kOptionHeaderSize> in);

// NBD_OPT_GO and NBD_OPT_INFO payload.
struct ExportQuery {
  std::string name;
  std::vector<uint16_t> info_requests;
};
std::optional<ExportQuery> parse_export_query(std::span<const std::byte> payload);

// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT payload.
struct MetaContextQuery {
  std::string export_name;
  std::vector<std::string> queries;
};
std::optional<MetaContextQuery> parse_meta_context_query(std::span<const std::byte> payload);

Bytes encode_greeting();
Bytes encode_option_reply(uint32_t option, uint32_t reply_type,
                          std::span<const std::byte> data = {});
Bytes encode_option_error(uint32_t option, uint32_t reply_type, std::string_view message);

// ---- Transmission ----

struct RequestHeader {
  uint16_t flags;
  uint16_t type;
  uint64_t handle;
  uint64_t offset;
  uint32_t length;
};
// Nothing when the magic is wrong (a protocol violation: the connection must end).
std::optional<RequestHeader> parse_request(std::span<const std::byte, kRequestHeaderSize> in);
void encode_request(const RequestHeader& request, std::span<std::byte, kRequestHeaderSize> out);

void encode_simple_reply(uint32_t error, uint64_t handle,
                         std::span<std::byte, kSimpleReplySize> out);
void encode_structured_header(uint16_t flags, uint16_t type, uint64_t handle, uint32_t length,
                              std::span<std::byte, kStructuredHeaderSize> out);

struct BlockStatusDescriptor {
  uint32_t length;
  uint32_t status;
};
// A complete NBD_REPLY_TYPE_BLOCK_STATUS chunk (header and payload).
Bytes encode_block_status_chunk(uint64_t handle, uint32_t context_id, bool done,
                                std::span<const BlockStatusDescriptor> descriptors);
// A complete NBD_REPLY_TYPE_ERROR chunk, final.
Bytes encode_error_chunk(uint64_t handle, uint32_t error, std::string_view message);

}  // namespace volgate::nbd
