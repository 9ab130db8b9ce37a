#include "nbd/codec.hpp"

#include <algorithm>
#include <cstring>

namespace volgate::nbd {

uint16_t load_be16(const std::byte* p) {
  return static_cast<uint16_t>((std::to_integer<uint16_t>(p[0]) << 8) | std::to_integer<uint16_t>(p[1]));
}
uint32_t load_be32(const std::byte* p) {
  return (uint32_t{load_be16(p)} << 16) | load_be16(p + 2);
}
uint64_t load_be64(const std::byte* p) { return (uint64_t{load_be32(p)} << 32) | load_be32(p + 4); }

void store_be16(std::byte* p, uint16_t v) {
  p[0] = std::byte(v >> 8);
  p[1] = std::byte(v & 0xff);
}
void store_be32(std::byte* p, uint32_t v) {
  store_be16(p, static_cast<uint16_t>(v >> 16));
  store_be16(p + 2, static_cast<uint16_t>(v));
}
void store_be64(std::byte* p, uint64_t v) {
  store_be32(p, static_cast<uint32_t>(v >> 32));
  store_be32(p + 4, static_cast<uint32_t>(v));
}

Writer& Writer::u16(uint16_t v) {
  size_t at = out_.size();
  out_.resize(at + 2);
  store_be16(out_.data() + at, v);
  return *this;
}
Writer& Writer::u32(uint32_t v) {
  size_t at = out_.size();
  out_.resize(at + 4);
  store_be32(out_.data() + at, v);
  return *this;
}
Writer& Writer::u64(uint64_t v) {
  size_t at = out_.size();
  out_.resize(at + 8);
  store_be64(out_.data() + at, v);
  return *this;
}
Writer& Writer::str(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out_.insert(out_.end(), p, p + s.size());
  return *this;
}
Writer& Writer::zeroes(size_t n) {
  out_.resize(out_.size() + n, std::byte{0});
  return *this;
}

namespace {

// Reads fields from an option payload, failing (once, sticky) on any overrun.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }

  uint16_t u16() { return take(2) ? load_be16(in_.data() + pos_ - 2) : 0; }
  uint32_t u32() { return take(4) ? load_be32(in_.data() + pos_ - 4) : 0; }
  std::string str(uint32_t length) {
    if (length > kMaxStringLength || !take(length)) {
      ok_ = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_ - length), length);
    if (s.find('\0') != std::string::npos) ok_ = false;  // strings must not contain NUL
    return s;
  }

 private:
  bool take(size_t n) {
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }

  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

std::optional<OptionHeader> parse_option_header(std::span<const std::byte, kOptionHeaderSize> in) {
  if (load_be64(in.data()) != kOptionMagic) return std::nullopt;
  return OptionHeader{load_be32(in.data() + 8), load_be32(in.data() + 12)};
}

std::optional<ExportQuery> parse_export_query(std::span<const std::byte> payload) {
  Reader r(payload);
  ExportQuery q;
  uint32_t name_length = r.u32();
  q.name = r.str(name_length);
  uint16_t count = r.u16();
  for (uint16_t i = 0; i < count && r.ok(); ++i) q.info_requests.push_back(r.u16());
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return q;
}

std::optional<MetaContextQuery> parse_meta_context_query(std::span<const std::byte> payload) {
  Reader r(payload);
  MetaContextQuery q;
  uint32_t name_length = r.u32();
  q.export_name = r.str(name_length);
  uint32_t count = r.u32();
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    uint32_t length = r.u32();
    q.queries.push_back(r.str(length));
  }
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return q;
}

Bytes encode_greeting() {
  Bytes out;
  Writer(out).u64(kInitMagic).u64(kOptionMagic).u16(kFlagFixedNewstyle | kFlagNoZeroes);
  return out;
}

Bytes encode_option_reply(uint32_t option, uint32_t reply_type, std::span<const std::byte> data) {
  Bytes out;
  out.reserve(kOptionReplyHeaderSize + data.size());
  Writer(out).u64(kOptionReplyMagic).u32(option).u32(reply_type).u32(
      static_cast<uint32_t>(data.size()));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Bytes encode_option_error(uint32_t option, uint32_t reply_type, std::string_view message) {
  message = message.substr(0, kMaxStringLength);
  return encode_option_reply(
      option, reply_type,
      std::span(reinterpret_cast<const std::byte*>(message.data()), message.size()));
}

std::optional<RequestHeader> parse_request(std::span<const std::byte, kRequestHeaderSize> in) {
  const std::byte* p = in.data();
  if (load_be32(p) != kRequestMagic) return std::nullopt;
  return RequestHeader{load_be16(p + 4), load_be16(p + 6), load_be64(p + 8), load_be64(p + 16),
                       load_be32(p + 24)};
}

void encode_request(const RequestHeader& r, std::span<std::byte, kRequestHeaderSize> out) {
  std::byte* p = out.data();
  store_be32(p, kRequestMagic);
  store_be16(p + 4, r.flags);
  store_be16(p + 6, r.type);
  store_be64(p + 8, r.handle);
  store_be64(p + 16, r.offset);
  store_be32(p + 24, r.length);
}

void encode_simple_reply(uint32_t error, uint64_t handle,
                         std::span<std::byte, kSimpleReplySize> out) {
  store_be32(out.data(), kSimpleReplyMagic);
  store_be32(out.data() + 4, error);
  store_be64(out.data() + 8, handle);
}

void encode_structured_header(uint16_t flags, uint16_t type, uint64_t handle, uint32_t length,
                              std::span<std::byte, kStructuredHeaderSize> out) {
  std::byte* p = out.data();
  store_be32(p, kStructuredReplyMagic);
  store_be16(p + 4, flags);
  store_be16(p + 6, type);
  store_be64(p + 8, handle);
  store_be32(p + 16, length);
}

Bytes encode_block_status_chunk(uint64_t handle, uint32_t context_id, bool done,
                                std::span<const BlockStatusDescriptor> descriptors) {
  auto length = static_cast<uint32_t>(4 + 8 * descriptors.size());
  Bytes out(kStructuredHeaderSize);
  encode_structured_header(done ? kReplyFlagDone : 0, kReplyBlockStatus, handle, length,
                           std::span<std::byte, kStructuredHeaderSize>(out.data(), kStructuredHeaderSize));
  Writer w(out);
  w.u32(context_id);
  for (const auto& d : descriptors) w.u32(d.length).u32(d.status);
  return out;
}

Bytes encode_error_chunk(uint64_t handle, uint32_t error, std::string_view message) {
  message = message.substr(0, 4096);
  auto length = static_cast<uint32_t>(6 + message.size());
  Bytes out(kStructuredHeaderSize);
  encode_structured_header(kReplyFlagDone, kReplyError, handle, length,
                           std::span<std::byte, kStructuredHeaderSize>(out.data(), kStructuredHeaderSize));
  Writer(out).u32(error).u16(static_cast<uint16_t>(message.size())).str(message);
  return out;
}

}  // namespace volgate::nbd
