// The hand-over's pieces that need no second process: the channel (framing, descriptors,
// bounds, deadlines), the state's JSON both ways, and the pause collector.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "gateway/handover_channel.hpp"
#include "gateway/handover_state.hpp"
#include "nbd/session_pause.hpp"

namespace volgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using control::Json;

struct ChannelPair {
  ChannelPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    a.emplace(UniqueFd(fds[0]));
    raw_b = fds[1];
    b.emplace(UniqueFd(fds[1]));
  }
  std::optional<HandoverChannel> a, b;
  int raw_b = -1;
};

Clock::time_point soon() { return Clock::now() + std::chrono::seconds(5); }

TEST(HandoverChannel, MessagesCarryJsonAndDescriptors) {
  ChannelPair p;
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  Json message = handover::message("connection");
  message["unparsed"] = WipingString(100'000, 'x');  // several sendmsg calls' worth
  const int sent = pipe_fds[1];
  p.a->send(message, std::span<const int>(&sent, 1), soon());
  p.a->send(handover::message("paused"), soon());

  HandoverMessage first = p.b->receive(soon());
  EXPECT_EQ(handover::type_of(first.body), "connection");
  EXPECT_EQ(first.body["unparsed"].get_ref<const WipingString&>().size(), 100'000u);
  ASSERT_EQ(first.descriptors.size(), 1u);
  // The received descriptor is the same pipe: what goes in one end comes out of the other.
  ASSERT_EQ(::write(first.descriptors[0].get(), "z", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(pipe_fds[0], &c, 1), 1);
  EXPECT_EQ(c, 'z');
  HandoverMessage second = p.b->receive(soon());
  EXPECT_EQ(handover::type_of(second.body), "paused");
  EXPECT_TRUE(second.descriptors.empty());
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST(HandoverChannel, RefusesOversizedAndMalformedMessages) {
  {
    ChannelPair p;
    const unsigned char huge[4] = {0x7f, 0xff, 0xff, 0xff};
    ASSERT_EQ(::write(p.raw_b, huge, 4), 4);  // b's raw end writes to a
    EXPECT_THROW(p.a->receive(soon()), HandoverError);
  }
  {
    ChannelPair p;
    const unsigned char frame[] = {0, 0, 0, 3, '[', '[', '['};
    ASSERT_EQ(::write(p.raw_b, frame, sizeof frame), static_cast<ssize_t>(sizeof frame));
    EXPECT_THROW(p.a->receive(soon()), HandoverError);
  }
  {
    ChannelPair p;
    const unsigned char frame[] = {0, 0, 0, 2, '[', ']'};  // JSON, but not an object
    ASSERT_EQ(::write(p.raw_b, frame, sizeof frame), static_cast<ssize_t>(sizeof frame));
    EXPECT_THROW(p.a->receive(soon()), HandoverError);
  }
}

TEST(HandoverChannel, EndOfStreamAndDeadlinesAreErrors) {
  ChannelPair p;
  const auto started = Clock::now();
  EXPECT_THROW(p.a->receive(Clock::now() + std::chrono::milliseconds(100)), HandoverError);
  EXPECT_GE(Clock::now() - started, std::chrono::milliseconds(100));
  p.b.reset();  // the peer goes away
  try {
    p.a->receive(soon());
    FAIL() << "received from a closed peer";
  } catch (const HandoverError& e) {
    EXPECT_NE(std::string(e.what()).find("closed the connection"), std::string::npos) << e.what();
  }
  EXPECT_THROW(p.a->send(handover::message("ready"), soon()), HandoverError);
}

TEST(HandoverState, RoundTripsWithVolumeKeysAndAbsolutePaths) {
  handover::State state;
  state.pid = 4242;
  state.settings = {3, 20, 77, "64M", 9, {"require", "/etc/pki/volgate", "", true}};
  state.nbd_listeners = 2;
  state.metrics = true;
  handover::ExportDefinition plain;
  plain.name = "plain";
  plain.target.backend = ExportSpec::Backend::file;
  plain.target.path = "/srv/a.img";
  handover::ExportDefinition encrypted;
  encrypted.name = "enc";
  encrypted.target = plain.target;
  encrypted.read_only = true;
  crypto::SecureBytes key(64);
  for (size_t i = 0; i < key.size(); ++i) key.data()[i] = std::byte(i);
  encrypted.luks = control::LuksKey{control::LuksKey::Kind::volume_key, std::move(key)};
  state.exports.push_back(std::move(plain));
  state.exports.push_back(std::move(encrypted));

  const handover::State back = handover::state_from_json(handover::state_to_json(state));
  EXPECT_EQ(back.pid, 4242);
  EXPECT_EQ(back.settings.threads, 3u);
  EXPECT_EQ(back.settings.max_buffer_bytes, "64M");
  EXPECT_EQ(back.settings.tls.mode, "require");
  EXPECT_TRUE(back.settings.tls.verify_peer);
  EXPECT_EQ(back.nbd_listeners, 2u);
  EXPECT_TRUE(back.metrics);
  ASSERT_EQ(back.exports.size(), 2u);
  EXPECT_EQ(back.exports[0].name, "plain");
  EXPECT_FALSE(back.exports[0].luks);
  EXPECT_EQ(back.exports[1].target.path, "/srv/a.img");
  EXPECT_TRUE(back.exports[1].read_only);
  ASSERT_TRUE(back.exports[1].luks);
  ASSERT_EQ(back.exports[1].luks->bytes.size(), 64u);
  EXPECT_EQ(back.exports[1].luks->bytes.data()[63], std::byte(63));

  ExportSpec relative;
  relative.path = "images/x.img";
  relative.iscsi.chap_secret_file = "secret";
  const ExportSpec absolute = handover::with_absolute_paths(relative);
  EXPECT_EQ(absolute.path.front(), '/');
  EXPECT_TRUE(absolute.path.ends_with("/images/x.img"));
  EXPECT_TRUE(absolute.iscsi.chap_secret_file.ends_with("/secret"));
  EXPECT_TRUE(absolute.iscsi.mutual_chap_secret_file.empty());
}

TEST(HandoverState, RefusesAnotherVersionAndMissingFields) {
  handover::State state;
  Json json = handover::state_to_json(state);
  json["version"] = handover::kVersion + 1;
  try {
    handover::state_from_json(json);
    FAIL() << "read a state of another version";
  } catch (const HandoverError& e) {
    EXPECT_NE(std::string(e.what()).find("state version"), std::string::npos) << e.what();
  }
  json = handover::state_to_json(state);
  json.erase("settings");
  EXPECT_THROW(handover::state_from_json(json), HandoverError);
  EXPECT_EQ(handover::offered_versions(handover::offer_to_json()), std::vector<int>{handover::kVersion});
  EXPECT_THROW(handover::offered_versions(Json::object()), HandoverError);
}

TEST(HandoverState, ConnectionsKeepTheirUnparsedBytes) {
  nbd::PausedConnection c;
  c.family = AF_UNIX;
  c.peer = "unix#3 pid 1 uid 0";
  c.export_name = "disk";
  c.structured_replies = true;
  c.unparsed = {std::byte{0x25}, std::byte{0x60}, std::byte{0x95}};
  const nbd::PausedConnection back = handover::connection_from_json(handover::connection_to_json(c));
  EXPECT_EQ(back.family, AF_UNIX);
  EXPECT_EQ(back.export_name, "disk");
  EXPECT_TRUE(back.structured_replies);
  EXPECT_FALSE(back.base_allocation);
  EXPECT_EQ(back.unparsed, c.unparsed);
  EXPECT_EQ(back.fd, -1);  // descriptors travel beside the JSON
}

TEST(SessionPause, WaitsForEveryExpectedSessionAndRefusesLateOnes) {
  nbd::SessionPause pause;
  pause.expect();
  pause.expect();
  pause.expect();
  std::thread reporters([&] {
    nbd::PausedConnection c;
    c.export_name = "a";
    EXPECT_TRUE(pause.report(c));
    pause.closed();  // one client went away meanwhile
  });
  auto connections = pause.wait(Clock::now() + std::chrono::milliseconds(200), [] { return true; });
  reporters.join();
  ASSERT_EQ(connections.size(), 1u);
  EXPECT_EQ(pause.missing(), 1u);  // the third never reported: the deadline ended the wait
  nbd::PausedConnection late;
  EXPECT_FALSE(pause.report(late));  // it closes instead of being handed over
}

TEST(SessionPause, PendingWorkHoldsTheWait) {
  nbd::SessionPause pause;
  pause.begin_pending();
  std::thread worker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pause.expect();
    pause.end_pending();
    EXPECT_TRUE(pause.report({}));
  });
  auto connections = pause.wait(Clock::now() + std::chrono::seconds(5), [] { return true; });
  worker.join();
  EXPECT_EQ(connections.size(), 1u);
  EXPECT_EQ(pause.missing(), 0u);
}

}  // namespace
}  // namespace volgate::gateway
