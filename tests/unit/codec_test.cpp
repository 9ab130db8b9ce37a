#include "nbd/codec.hpp"

#include <gtest/gtest.h>

using namespace volgate::nbd;

namespace {

Bytes option_header(uint64_t magic, uint32_t option, uint32_t length) {
  Bytes b;
  Writer(b).u64(magic).u32(option).u32(length);
  return b;
}

Bytes export_query(std::string_view name, std::vector<uint16_t> infos) {
  Bytes b;
  Writer w(b);
  w.u32(static_cast<uint32_t>(name.size())).str(name).u16(static_cast<uint16_t>(infos.size()));
  for (auto i : infos) w.u16(i);
  return b;
}

}  // namespace

TEST(Codec, BigEndianRoundTrip) {
  std::byte buf[8];
  store_be64(buf, 0x0102030405060708);
  EXPECT_EQ(std::to_integer<int>(buf[0]), 1);
  EXPECT_EQ(std::to_integer<int>(buf[7]), 8);
  EXPECT_EQ(load_be64(buf), 0x0102030405060708u);
  store_be32(buf, 0xdeadbeef);
  EXPECT_EQ(load_be32(buf), 0xdeadbeefu);
  store_be16(buf, 0xabcd);
  EXPECT_EQ(load_be16(buf), 0xabcdu);
}

TEST(Codec, Greeting) {
  Bytes g = encode_greeting();
  ASSERT_EQ(g.size(), 18u);
  EXPECT_EQ(load_be64(g.data()), kInitMagic);
  EXPECT_EQ(load_be64(g.data() + 8), kOptionMagic);
  EXPECT_EQ(load_be16(g.data() + 16), kFlagFixedNewstyle | kFlagNoZeroes);
}

TEST(Codec, OptionHeader) {
  Bytes good = option_header(kOptionMagic, kOptGo, 42);
  auto h = parse_option_header(std::span<const std::byte, 16>(good.data(), 16));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->option, kOptGo);
  EXPECT_EQ(h->length, 42u);
  Bytes bad = option_header(kInitMagic, kOptGo, 42);
  EXPECT_FALSE(parse_option_header(std::span<const std::byte, 16>(bad.data(), 16)));
}

TEST(Codec, ExportQuery) {
  auto q = parse_export_query(export_query("disk", {kInfoName, kInfoBlockSize}));
  ASSERT_TRUE(q);
  EXPECT_EQ(q->name, "disk");
  EXPECT_EQ(q->info_requests, (std::vector<uint16_t>{kInfoName, kInfoBlockSize}));
  auto empty = parse_export_query(export_query("", {}));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->name, "");
}

TEST(Codec, ExportQueryMalformed) {
  Bytes good = export_query("disk", {1, 2});
  // Every truncation is invalid.
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_FALSE(parse_export_query(std::span(good.data(), n))) << "length " << n;
  // Trailing bytes are invalid.
  Bytes longer = good;
  longer.push_back(std::byte{0});
  EXPECT_FALSE(parse_export_query(longer));
  // A name length beyond the payload, or beyond 4096, is invalid.
  Bytes huge;
  Writer(huge).u32(0xffffffff).u16(0);
  EXPECT_FALSE(parse_export_query(huge));
  Bytes too_long;
  Writer(too_long).u32(5000).str(std::string(5000, 'a')).u16(0);
  EXPECT_FALSE(parse_export_query(too_long));
  // Names must not contain NUL.
  Bytes nul;
  Writer(nul).u32(3).str(std::string("a\0b", 3)).u16(0);
  EXPECT_FALSE(parse_export_query(nul));
}

TEST(Codec, MetaContextQuery) {
  Bytes b;
  Writer(b).u32(4).str("disk").u32(2).u32(15).str("base:allocation").u32(5).str("base:");
  auto q = parse_meta_context_query(b);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->export_name, "disk");
  EXPECT_EQ(q->queries, (std::vector<std::string>{"base:allocation", "base:"}));
  for (size_t n = 0; n < b.size(); ++n)
    EXPECT_FALSE(parse_meta_context_query(std::span(b.data(), n))) << "length " << n;
  Bytes lying_count;
  Writer(lying_count).u32(0).u32(1000000);
  EXPECT_FALSE(parse_meta_context_query(lying_count));
}

TEST(Codec, OptionReply) {
  Bytes data;
  Writer(data).str("hello");
  Bytes r = encode_option_reply(kOptList, kRepServer, data);
  ASSERT_EQ(r.size(), 25u);
  EXPECT_EQ(load_be64(r.data()), kOptionReplyMagic);
  EXPECT_EQ(load_be32(r.data() + 8), uint32_t{kOptList});
  EXPECT_EQ(load_be32(r.data() + 12), uint32_t{kRepServer});
  EXPECT_EQ(load_be32(r.data() + 16), 5u);
  Bytes e = encode_option_error(kOptGo, kRepErrUnknown, std::string(10000, 'x'));
  EXPECT_EQ(load_be32(e.data() + 16), kMaxStringLength);  // messages are capped
}

TEST(Codec, RequestRoundTrip) {
  RequestHeader in{kCmdFlagFua, kCmdWrite, 0x1122334455667788, 1ull << 40, 65536};
  std::array<std::byte, kRequestHeaderSize> wire;
  encode_request(in, wire);
  auto out = parse_request(wire);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->flags, in.flags);
  EXPECT_EQ(out->type, in.type);
  EXPECT_EQ(out->handle, in.handle);
  EXPECT_EQ(out->offset, in.offset);
  EXPECT_EQ(out->length, in.length);
}

TEST(Codec, RequestBadMagic) {
  std::array<std::byte, kRequestHeaderSize> wire{};
  EXPECT_FALSE(parse_request(wire));
  encode_request({0, kCmdRead, 1, 0, 512}, wire);
  wire[3] ^= std::byte{1};
  EXPECT_FALSE(parse_request(wire));
}

TEST(Codec, Replies) {
  std::array<std::byte, kSimpleReplySize> simple;
  encode_simple_reply(kEio, 99, simple);
  EXPECT_EQ(load_be32(simple.data()), kSimpleReplyMagic);
  EXPECT_EQ(load_be32(simple.data() + 4), uint32_t{kEio});
  EXPECT_EQ(load_be64(simple.data() + 8), 99u);

  std::array<std::byte, kStructuredHeaderSize> structured;
  encode_structured_header(kReplyFlagDone, kReplyOffsetData, 7, 4104, structured);
  EXPECT_EQ(load_be32(structured.data()), kStructuredReplyMagic);
  EXPECT_EQ(load_be16(structured.data() + 4), kReplyFlagDone);
  EXPECT_EQ(load_be16(structured.data() + 6), uint16_t{kReplyOffsetData});
  EXPECT_EQ(load_be64(structured.data() + 8), 7u);
  EXPECT_EQ(load_be32(structured.data() + 16), 4104u);
}

TEST(Codec, BlockStatusChunk) {
  std::vector<BlockStatusDescriptor> d{{4096, kStateHole | kStateZero}, {8192, 0}};
  Bytes c = encode_block_status_chunk(5, kBaseAllocationId, true, d);
  ASSERT_EQ(c.size(), kStructuredHeaderSize + 4 + 16);
  EXPECT_EQ(load_be16(c.data() + 6), uint16_t{kReplyBlockStatus});
  EXPECT_EQ(load_be32(c.data() + 16), 20u);
  EXPECT_EQ(load_be32(c.data() + 20), kBaseAllocationId);
  EXPECT_EQ(load_be32(c.data() + 24), 4096u);
  EXPECT_EQ(load_be32(c.data() + 28), 3u);
  EXPECT_EQ(load_be32(c.data() + 32), 8192u);
  EXPECT_EQ(load_be32(c.data() + 36), 0u);
}

TEST(Codec, ErrorChunk) {
  Bytes c = encode_error_chunk(9, kEinval, "bad");
  ASSERT_EQ(c.size(), kStructuredHeaderSize + 6 + 3);
  EXPECT_EQ(load_be16(c.data() + 4), kReplyFlagDone);
  EXPECT_EQ(load_be16(c.data() + 6), uint16_t{kReplyError});
  EXPECT_EQ(load_be32(c.data() + 16), 9u);
  EXPECT_EQ(load_be32(c.data() + 20), uint32_t{kEinval});
  EXPECT_EQ(load_be16(c.data() + 24), 3u);
}
