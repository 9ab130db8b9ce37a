#include "nbd/negotiation.hpp"

#include "backends/device_front.hpp"

namespace volgate::nbd {
namespace {

Negotiation::Step reply(Bytes bytes, Negotiation::Next next = Negotiation::Next::more_options) {
  return {std::move(bytes), next};
}

Negotiation::Step error(uint32_t option, uint32_t type, std::string_view message) {
  return reply(encode_option_error(option, type, message));
}

void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

Bytes info_reply(uint32_t option, uint16_t info_type, const Bytes& body) {
  Bytes data;
  Writer(data).u16(info_type);
  append(data, body);
  return encode_option_reply(option, kRepInfo, data);
}

}  // namespace

bool Negotiation::accept_client_flags(uint32_t flags) {
  if (!(flags & kClientFixedNewstyle)) return false;  // we speak fixed newstyle only
  if (flags & ~(kClientFixedNewstyle | kClientNoZeroes)) return false;
  no_zeroes_ = flags & kClientNoZeroes;
  return true;
}

Negotiation::Step Negotiation::handle(uint32_t option, std::span<const std::byte> payload) {
  if (shutting_down_ && option != kOptAbort)
    return error(option, kRepErrShutdown, "server is shutting down");
  if (tls_mode_ == TlsMode::require && !session_.tls && option != kOptStartTls &&
      option != kOptAbort) {
    // EXPORT_NAME cannot be answered with an error: hanging up is the only refusal.
    if (option == kOptExportName) return {{}, Next::close};
    return error(option, kRepErrTlsReqd, "this server requires TLS: send NBD_OPT_STARTTLS first");
  }
  switch (option) {
    case kOptExportName:
      return export_name(payload);
    case kOptAbort:
      return reply(encode_option_reply(option, kRepAck), Next::close);
    case kOptList:
      return list(option, payload);
    case kOptStartTls:
      return start_tls(option, payload);
    case kOptInfo:
    case kOptGo:
      return info_or_go(option, payload);
    case kOptStructuredReply:
      return structured_reply(option, payload);
    case kOptListMetaContext:
    case kOptSetMetaContext:
      return meta_context(option, payload);
    default:
      return error(option, kRepErrUnsup, "unknown option " + std::to_string(option));
  }
}

Negotiation::Step Negotiation::start_tls(uint32_t option, std::span<const std::byte> payload) {
  if (tls_mode_ == TlsMode::off) return error(option, kRepErrUnsup, "TLS is not enabled on this server");
  if (!payload.empty()) return error(option, kRepErrInvalid, "NBD_OPT_STARTTLS takes no data");
  if (session_.tls) return error(option, kRepErrInvalid, "TLS is already on");
  return reply(encode_option_reply(option, kRepAck), Next::start_tls);
}

void Negotiation::tls_started() {
  session_ = NegotiatedSession{};
  session_.tls = true;
  meta_context_export_.reset();
}

Negotiation::Step Negotiation::handle_oversized(uint32_t option) {
  // EXPORT_NAME cannot be answered with an error: the only way to refuse it is to hang up.
  if (option == kOptExportName) return {{}, Next::close};
  if (tls_mode_ == TlsMode::require && !session_.tls && option != kOptStartTls && option != kOptAbort)
    return error(option, kRepErrTlsReqd, "this server requires TLS: send NBD_OPT_STARTTLS first");
  return error(option, kRepErrTooBig, "option payload too large");
}

Negotiation::Step Negotiation::export_name(std::span<const std::byte> payload) {
  if (payload.size() > kMaxStringLength) return {{}, Next::close};
  std::string name(reinterpret_cast<const char*>(payload.data()), payload.size());
  auto chosen = exports_.find(name);
  if (!chosen || name.find('\0') != std::string::npos) return {{}, Next::close};
  enter_transmission(chosen);
  const backends::DeviceFront front(*chosen->device);
  Bytes out;
  Writer w(out);
  w.u64(front.size()).u16(transmission_flags(front.capabilities(), session_.structured_replies));
  if (!no_zeroes_) w.zeroes(124);
  return reply(std::move(out), Next::transmission);
}

Negotiation::Step Negotiation::list(uint32_t option, std::span<const std::byte> payload) {
  if (!payload.empty()) return error(option, kRepErrInvalid, "NBD_OPT_LIST takes no data");
  Bytes out;
  for (const auto& e : *exports_.all()) {
    Bytes data;
    Writer(data).u32(static_cast<uint32_t>(e->name.size())).str(e->name).str(e->description);
    append(out, encode_option_reply(option, kRepServer, data));
  }
  append(out, encode_option_reply(option, kRepAck));
  return reply(std::move(out));
}

Negotiation::Step Negotiation::info_or_go(uint32_t option, std::span<const std::byte> payload) {
  auto query = parse_export_query(payload);
  if (!query) return error(option, kRepErrInvalid, "malformed export query");
  auto chosen = exports_.find(query->name);
  if (!chosen)
    return error(option, kRepErrUnknown,
                 query->name.empty() ? "there is no default export: name one"
                                     : "no export named '" + query->name + "'");

  // What the connection will be served with: the device as its front offers it.
  const backends::DeviceFront front(*chosen->device);
  const auto& caps = front.capabilities();
  Bytes out;
  Bytes body;
  Writer(body).u64(front.size()).u16(transmission_flags(caps, session_.structured_replies));
  append(out, info_reply(option, kInfoExport, body));
  for (uint16_t requested : query->info_requests) {
    body.clear();
    if (requested == kInfoName) {
      Writer(body).str(chosen->name);
      append(out, info_reply(option, kInfoName, body));
    } else if (requested == kInfoDescription) {
      Writer(body).str(chosen->description);
      append(out, info_reply(option, kInfoDescription, body));
    }
    // Unknown information types are ignored, as the specification asks.
  }
  // Block sizes go out whether asked or not: the specification allows it, and clients that
  // ignore them still behave, while clients that honour them avoid misaligned requests.
  BlockSizes sizes = block_sizes(caps);
  body.clear();
  Writer(body).u32(sizes.minimum).u32(sizes.preferred).u32(sizes.maximum);
  append(out, info_reply(option, kInfoBlockSize, body));
  append(out, encode_option_reply(option, kRepAck));

  if (option == kOptInfo) return reply(std::move(out));
  enter_transmission(std::move(chosen));
  return reply(std::move(out), Next::transmission);
}

Negotiation::Step Negotiation::structured_reply(uint32_t option,
                                                std::span<const std::byte> payload) {
  if (!payload.empty())
    return error(option, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
  if (session_.structured_replies)
    return error(option, kRepErrInvalid, "structured replies are already on");
  session_.structured_replies = true;
  return reply(encode_option_reply(option, kRepAck));
}

Negotiation::Step Negotiation::meta_context(uint32_t option, std::span<const std::byte> payload) {
  if (!session_.structured_replies)
    return error(option, kRepErrInvalid, "metadata contexts need structured replies first");
  auto query = parse_meta_context_query(payload);
  if (!query) return error(option, kRepErrInvalid, "malformed metadata context query");
  auto target = exports_.find(query->export_name);
  if (!target) return error(option, kRepErrUnknown, "no export named '" + query->export_name + "'");

  const bool listing = option == kOptListMetaContext;
  bool matched = false;
  if (listing && query->queries.empty()) matched = true;  // list everything we know
  for (const std::string& q : query->queries) {
    if (q.find(':') == std::string::npos)
      return error(option, kRepErrInvalid, "metadata query '" + q + "' has no namespace");
    if (q == kBaseAllocation || (listing && q == "base:")) matched = true;
  }

  Bytes out;
  if (matched) {
    Bytes data;
    Writer(data).u32(listing ? 0 : kBaseAllocationId).str(kBaseAllocation);
    append(out, encode_option_reply(option, kRepMetaContext, data));
  }
  append(out, encode_option_reply(option, kRepAck));
  if (!listing) {
    session_.base_allocation = matched;
    meta_context_export_ = std::move(target);
  }
  return reply(std::move(out));
}

void Negotiation::enter_transmission(std::shared_ptr<const Export> chosen) {
  // Contexts chosen for another export do not carry over.
  if (meta_context_export_ != chosen) session_.base_allocation = false;
  session_.chosen = std::move(chosen);
}

}  // namespace volgate::nbd
