#include "nbd/negotiation.hpp"

#include <gtest/gtest.h>

#include "backends/memory_device.hpp"

using namespace volgate::nbd;
using volgate::backends::MemoryDevice;

namespace {

struct OptionReplyView {
  uint32_t option;
  uint32_t type;
  Bytes data;
};

// Splits a byte stream of option replies into its messages.
std::vector<OptionReplyView> replies(const Bytes& stream) {
  std::vector<OptionReplyView> out;
  size_t pos = 0;
  while (pos < stream.size()) {
    EXPECT_GE(stream.size() - pos, kOptionReplyHeaderSize);
    EXPECT_EQ(load_be64(stream.data() + pos), kOptionReplyMagic);
    uint32_t length = load_be32(stream.data() + pos + 16);
    out.push_back({load_be32(stream.data() + pos + 8), load_be32(stream.data() + pos + 12),
                   Bytes(stream.begin() + pos + 20, stream.begin() + pos + 20 + length)});
    pos += kOptionReplyHeaderSize + length;
  }
  return out;
}

Bytes export_query(std::string_view name, std::vector<uint16_t> infos = {}) {
  Bytes b;
  Writer w(b);
  w.u32(static_cast<uint32_t>(name.size())).str(name).u16(static_cast<uint16_t>(infos.size()));
  for (auto i : infos) w.u16(i);
  return b;
}

Bytes meta_query(std::string_view name, std::vector<std::string> queries) {
  Bytes b;
  Writer w(b);
  w.u32(static_cast<uint32_t>(name.size())).str(name).u32(static_cast<uint32_t>(queries.size()));
  for (auto& q : queries) w.u32(static_cast<uint32_t>(q.size())).str(q);
  return b;
}

class NegotiationTest : public ::testing::Test {
 protected:
  NegotiationTest() {
    exports_.add({"first", "memory 1 MiB", std::make_shared<MemoryDevice>(1 << 20, false)});
    exports_.add({"ro", "read-only", std::make_shared<MemoryDevice>(2 << 20, true)});
  }
  ExportTable exports_;
  Negotiation n_{exports_};
};

}  // namespace

TEST_F(NegotiationTest, ClientFlags) {
  EXPECT_TRUE(n_.accept_client_flags(kClientFixedNewstyle | kClientNoZeroes));
  Negotiation other(exports_);
  EXPECT_FALSE(other.accept_client_flags(0));  // not fixed newstyle
  Negotiation third(exports_);
  EXPECT_FALSE(third.accept_client_flags(kClientFixedNewstyle | 0x4));  // unknown bit
}

TEST_F(NegotiationTest, UnknownOptionIsUnsupportedAndHarmless) {
  auto step = n_.handle(999, {});
  EXPECT_EQ(step.next, Negotiation::Next::more_options);
  auto r = replies(step.reply);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].type, uint32_t{kRepErrUnsup});
  EXPECT_EQ(r[0].option, 999u);
}

// TLS off: STARTTLS is refused as unsupported (not TLS_REQD, not INVALID), with a message,
// and the handshake goes on in the clear.
TEST_F(NegotiationTest, StartTlsIsUnsupported) {
  auto step = n_.handle(kOptStartTls, {});
  EXPECT_EQ(step.next, Negotiation::Next::more_options);
  auto r = replies(step.reply);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].option, uint32_t{kOptStartTls});
  EXPECT_EQ(r[0].type, uint32_t{kRepErrUnsup});
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(r[0].data.data()), r[0].data.size()),
            "TLS is not enabled on this server");
  auto go = n_.handle(kOptGo, export_query("first"));
  EXPECT_EQ(go.next, Negotiation::Next::transmission);
  EXPECT_EQ(replies(go.reply).back().type, uint32_t{kRepAck});
}

TEST_F(NegotiationTest, ListNamesEveryExport) {
  auto r = replies(n_.handle(kOptList, {}).reply);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].type, uint32_t{kRepServer});
  EXPECT_EQ(load_be32(r[0].data.data()), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(r[0].data.data() + 4), 5), "first");
  EXPECT_EQ(r[2].type, uint32_t{kRepAck});
  Bytes junk(3);
  EXPECT_EQ(replies(n_.handle(kOptList, junk).reply)[0].type, uint32_t{kRepErrInvalid});
}

TEST_F(NegotiationTest, InfoReportsWithoutEnteringTransmission) {
  auto step = n_.handle(kOptInfo, export_query("ro", {kInfoName, kInfoDescription, 77}));
  EXPECT_EQ(step.next, Negotiation::Next::more_options);
  auto r = replies(step.reply);
  ASSERT_EQ(r.size(), 5u);  // EXPORT, NAME, DESCRIPTION, BLOCK_SIZE, ACK
  EXPECT_EQ(load_be16(r[0].data.data()), uint16_t{kInfoExport});
  EXPECT_EQ(load_be64(r[0].data.data() + 2), 2u << 20);
  uint16_t flags = load_be16(r[0].data.data() + 10);
  EXPECT_TRUE(flags & kFlagReadOnly);
  EXPECT_FALSE(flags & kFlagSendTrim);
  EXPECT_EQ(load_be16(r[1].data.data()), uint16_t{kInfoName});
  EXPECT_EQ(load_be16(r[2].data.data()), uint16_t{kInfoDescription});
  EXPECT_EQ(load_be16(r[3].data.data()), uint16_t{kInfoBlockSize});
  EXPECT_EQ(load_be32(r[3].data.data() + 2), 1u);
  EXPECT_EQ(load_be32(r[3].data.data() + 6), 4096u);
  EXPECT_EQ(load_be32(r[3].data.data() + 10), kMaxPayload);
  EXPECT_EQ(r[4].type, uint32_t{kRepAck});
}

TEST_F(NegotiationTest, GoToDefaultExport) {
  auto step = n_.handle(kOptGo, export_query(""));
  EXPECT_EQ(step.next, Negotiation::Next::transmission);
  EXPECT_EQ(n_.result().chosen->name, "first");
  auto r = replies(step.reply);
  EXPECT_EQ(r.back().type, uint32_t{kRepAck});
}

TEST_F(NegotiationTest, GoUnknownAndMalformed) {
  auto r = replies(n_.handle(kOptGo, export_query("nope")).reply);
  EXPECT_EQ(r[0].type, uint32_t{kRepErrUnknown});
  Bytes truncated = export_query("first");
  truncated.pop_back();
  EXPECT_EQ(replies(n_.handle(kOptGo, truncated).reply)[0].type, uint32_t{kRepErrInvalid});
  EXPECT_EQ(n_.result().chosen, nullptr);
}

TEST_F(NegotiationTest, ExportNameReply) {
  ASSERT_TRUE(n_.accept_client_flags(kClientFixedNewstyle));  // zeroes wanted
  std::string name = "first";
  auto step = n_.handle(kOptExportName, std::span(reinterpret_cast<const std::byte*>(name.data()), name.size()));
  EXPECT_EQ(step.next, Negotiation::Next::transmission);
  ASSERT_EQ(step.reply.size(), 8u + 2 + 124);
  EXPECT_EQ(load_be64(step.reply.data()), 1u << 20);

  Negotiation n2(exports_);
  ASSERT_TRUE(n2.accept_client_flags(kClientFixedNewstyle | kClientNoZeroes));
  EXPECT_EQ(n2.handle(kOptExportName, std::span(reinterpret_cast<const std::byte*>(name.data()), name.size()))
                .reply.size(),
            10u);
  std::string missing = "missing";
  auto refused = n2.handle(kOptExportName, std::span(reinterpret_cast<const std::byte*>(missing.data()), missing.size()));
  EXPECT_EQ(refused.next, Negotiation::Next::close);
  EXPECT_TRUE(refused.reply.empty());
}

TEST_F(NegotiationTest, StructuredRepliesOnceAndWithoutData) {
  EXPECT_EQ(replies(n_.handle(kOptStructuredReply, Bytes(1)).reply)[0].type, uint32_t{kRepErrInvalid});
  EXPECT_EQ(replies(n_.handle(kOptStructuredReply, {}).reply)[0].type, uint32_t{kRepAck});
  EXPECT_EQ(replies(n_.handle(kOptStructuredReply, {}).reply)[0].type, uint32_t{kRepErrInvalid});
  EXPECT_TRUE(n_.result().structured_replies);
}

TEST_F(NegotiationTest, MetaContextNeedsStructuredReplies) {
  auto r = replies(n_.handle(kOptSetMetaContext, meta_query("first", {"base:allocation"})).reply);
  EXPECT_EQ(r[0].type, uint32_t{kRepErrInvalid});
}

TEST_F(NegotiationTest, SetAndListMetaContext) {
  n_.handle(kOptStructuredReply, {});
  auto listed = replies(n_.handle(kOptListMetaContext, meta_query("first", {})).reply);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].type, uint32_t{kRepMetaContext});
  EXPECT_EQ(listed[1].type, uint32_t{kRepAck});

  auto none = replies(n_.handle(kOptSetMetaContext, meta_query("first", {"qemu:dirty-bitmap:x"})).reply);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].type, uint32_t{kRepAck});

  auto bad = replies(n_.handle(kOptSetMetaContext, meta_query("first", {"nonamespace"})).reply);
  EXPECT_EQ(bad[0].type, uint32_t{kRepErrInvalid});

  auto set = replies(n_.handle(kOptSetMetaContext, meta_query("first", {"base:allocation"})).reply);
  ASSERT_EQ(set.size(), 2u);
  EXPECT_EQ(load_be32(set[0].data.data()), kBaseAllocationId);
  n_.handle(kOptGo, export_query("first"));
  EXPECT_TRUE(n_.result().base_allocation);
}

TEST_F(NegotiationTest, MetaContextForAnotherExportDoesNotCarryOver) {
  n_.handle(kOptStructuredReply, {});
  n_.handle(kOptSetMetaContext, meta_query("ro", {"base:allocation"}));
  n_.handle(kOptGo, export_query("first"));
  EXPECT_FALSE(n_.result().base_allocation);
}

TEST_F(NegotiationTest, ShutdownRefusesOptionsButAbort) {
  n_.begin_shutdown();
  EXPECT_EQ(replies(n_.handle(kOptGo, export_query("first")).reply)[0].type,
            uint32_t{kRepErrShutdown});
  auto abort = n_.handle(kOptAbort, {});
  EXPECT_EQ(abort.next, Negotiation::Next::close);
  EXPECT_EQ(replies(abort.reply)[0].type, uint32_t{kRepAck});
}

TEST_F(NegotiationTest, OversizedPayload) {
  EXPECT_EQ(replies(n_.handle_oversized(kOptGo).reply)[0].type, uint32_t{kRepErrTooBig});
  EXPECT_EQ(n_.handle_oversized(kOptExportName).next, Negotiation::Next::close);
}

TEST_F(NegotiationTest, ListAndGoSeeExportsAddedAndRemovedMidHandshake) {
  exports_.add({"late", "added while negotiating", std::make_shared<MemoryDevice>(1 << 20, false)});
  auto r = replies(n_.handle(kOptList, {}).reply);
  ASSERT_EQ(r.size(), 4u);  // first, ro, late, ACK
  EXPECT_EQ(std::string(reinterpret_cast<char*>(r[2].data.data() + 4), 4), "late");

  ASSERT_EQ(exports_.remove("first", false).outcome, ExportTable::Removal::Outcome::removed);
  EXPECT_EQ(replies(n_.handle(kOptList, {}).reply).size(), 3u);
  // The default export went with "first": the empty name is an error, not another export.
  auto step = n_.handle(kOptGo, export_query(""));
  EXPECT_EQ(step.next, Negotiation::Next::more_options);
  auto refused = replies(step.reply);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].type, uint32_t{kRepErrUnknown});
  EXPECT_EQ(n_.handle(kOptGo, export_query("late")).next, Negotiation::Next::transmission);
}

// --tls on: STARTTLS is acknowledged and the session must run the handshake; what was
// negotiated in clear (structured replies, metadata contexts) does not survive it.
TEST_F(NegotiationTest, StartTlsOnForgetsWhatWasNegotiatedInClear) {
  Negotiation n(exports_, TlsMode::on);
  ASSERT_EQ(replies(n.handle(kOptStructuredReply, {}).reply)[0].type, uint32_t{kRepAck});
  ASSERT_EQ(replies(n.handle(kOptSetMetaContext, meta_query("first", {"base:allocation"})).reply)
                .front()
                .type,
            uint32_t{kRepMetaContext});
  auto step = n.handle(kOptStartTls, {});
  EXPECT_EQ(step.next, Negotiation::Next::start_tls);
  auto r = replies(step.reply);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].type, uint32_t{kRepAck});
  n.tls_started();
  auto go = n.handle(kOptGo, export_query("first"));
  EXPECT_EQ(go.next, Negotiation::Next::transmission);
  EXPECT_TRUE(n.result().tls);
  EXPECT_FALSE(n.result().structured_replies);
  EXPECT_FALSE(n.result().base_allocation);
}

// --tls on: a client that never asks for TLS is served in clear.
TEST_F(NegotiationTest, TlsOnStillServesClearText) {
  Negotiation n(exports_, TlsMode::on);
  auto list = replies(n.handle(kOptList, {}).reply);
  EXPECT_EQ(list.size(), 3u);  // two exports and the ACK
  auto go = n.handle(kOptGo, export_query("first"));
  EXPECT_EQ(go.next, Negotiation::Next::transmission);
  EXPECT_FALSE(n.result().tls);
}

// STARTTLS with data is invalid, and a second STARTTLS once TLS is up too.
TEST_F(NegotiationTest, StartTlsWithDataOrTwiceIsInvalid) {
  Negotiation n(exports_, TlsMode::require);
  Bytes junk{std::byte{1}};
  auto with_data = n.handle(kOptStartTls, junk);
  EXPECT_EQ(with_data.next, Negotiation::Next::more_options);
  EXPECT_EQ(replies(with_data.reply)[0].type, uint32_t{kRepErrInvalid});
  ASSERT_EQ(n.handle(kOptStartTls, {}).next, Negotiation::Next::start_tls);
  n.tls_started();
  auto again = n.handle(kOptStartTls, {});
  EXPECT_EQ(again.next, Negotiation::Next::more_options);
  EXPECT_EQ(replies(again.reply)[0].type, uint32_t{kRepErrInvalid});
}

// --tls require (FORCEDTLS): before TLS every option but STARTTLS and ABORT gets TLS_REQD,
// nothing is listed, EXPORT_NAME closes; after it, everything works and TLS_REQD never comes.
TEST_F(NegotiationTest, TlsRequireRefusesEverythingButStartTlsBeforeTls) {
  Negotiation n(exports_, TlsMode::require);
  const std::pair<uint32_t, Bytes> options[] = {
      {kOptList, {}},
      {kOptInfo, export_query("first")},
      {kOptGo, export_query("first")},
      {kOptStructuredReply, {}},
      {kOptListMetaContext, meta_query("first", {})},
      {kOptSetMetaContext, meta_query("first", {"base:allocation"})},
      {999, {}},
  };
  for (const auto& [option, payload] : options) {
    auto step = n.handle(option, payload);
    EXPECT_EQ(step.next, Negotiation::Next::more_options) << option;
    auto r = replies(step.reply);
    ASSERT_EQ(r.size(), 1u) << option;  // no NBD_REP_SERVER line leaks an export name
    EXPECT_EQ(r[0].option, option);
    EXPECT_EQ(r[0].type, uint32_t{kRepErrTlsReqd}) << option;
  }
  EXPECT_EQ(n.handle_oversized(kOptList).reply.size() > 0, true);
  EXPECT_EQ(replies(n.handle_oversized(kOptList).reply)[0].type, uint32_t{kRepErrTlsReqd});
  Negotiation export_name(exports_, TlsMode::require);
  auto closed = export_name.handle(kOptExportName, Bytes{std::byte{'f'}});
  EXPECT_EQ(closed.next, Negotiation::Next::close);
  EXPECT_TRUE(closed.reply.empty());

  ASSERT_EQ(n.handle(kOptStartTls, {}).next, Negotiation::Next::start_tls);
  n.tls_started();
  auto list = replies(n.handle(kOptList, {}).reply);
  EXPECT_EQ(list.size(), 3u);
  EXPECT_EQ(list.back().type, uint32_t{kRepAck});
  for (const auto& [option, payload] : options) {
    auto r = replies(n.handle(option, payload).reply);
    for (const auto& reply : r) EXPECT_NE(reply.type, uint32_t{kRepErrTlsReqd}) << option;
    if (option == kOptGo) break;  // in transmission now
  }
  EXPECT_EQ(n.result().chosen->name, "first");
}

// ABORT needs no TLS.
TEST_F(NegotiationTest, TlsRequireLetsAbortThrough) {
  Negotiation n(exports_, TlsMode::require);
  auto step = n.handle(kOptAbort, {});
  EXPECT_EQ(step.next, Negotiation::Next::close);
  EXPECT_EQ(replies(step.reply)[0].type, uint32_t{kRepAck});
}
