// Fuzz target: one whole NBD connection, handshake and transmission, as the server runs it.
//
// The input is everything a client sends. A real Session (the same code `volgate serve` runs)
// reads it from one end of a socketpair while this harness writes the input into the other end,
// closes it, and drains whatever the server answers. Four small exports stand behind it: a
// memory disk, a read-only one, and LUKS2 (4096-byte sectors) and LUKS1 (512) containers on
// memory, so the encrypted data path with its helper threads is fuzzed too. They live for the
// whole run, so earlier inputs' writes stay in them.
//
// What must hold for every input: no crash, no sanitizer report, no hang, and the session ends
// once the client's side is closed. Built two ways (see CMakeLists.txt): with libFuzzer for
// campaigns (scripts/fuzz.sh), and with a small main that replays the stored corpus as a unit
// test.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "backends/memory_device.hpp"
#include "common/current_context.hpp"
#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"
#include "crypto/secure_bytes.hpp"
#include "nbd/export.hpp"
#include "nbd/server.hpp"
#include "nbd/session.hpp"

namespace {

using namespace volgate;

// A LUKS container of `type` with about 1 MiB of payload, formatted and unlocked on memory.
std::shared_ptr<backends::BlockDevice> luks_on_memory(const std::string& type, uint32_t sector,
                                                      uint64_t header_bytes) {
  auto base = std::make_shared<backends::MemoryDevice>(header_bytes + (1 << 20), false);
  crypto::LuksFormatOptions options;
  options.type = type;
  options.sector_size = sector;
  options.pbkdf = "pbkdf2";
  options.pbkdf_iterations = 1000;  // the minimum: no timing benchmark at start
  crypto::SecureBytes passphrase(4);
  std::memcpy(passphrase.data(), "fuzz", 4);
  auto container = crypto::LuksContainer::format(*base, options, passphrase);
  return std::make_shared<crypto::LuksDevice>(base, container.unlock(passphrase));
}

// Exports that live for the whole process: building them per input would dominate the run.
const nbd::ExportTable& exports() {
  static const nbd::ExportTable table = [] {
    nbd::ExportTable t;
    t.add({"disk", "a 1 MiB memory disk", std::make_shared<backends::MemoryDevice>(1 << 20, false)});
    t.add({"ro", "a read-only memory disk", std::make_shared<backends::MemoryDevice>(256 << 10, true)});
    t.add({"luks", "LUKS2 on memory", luks_on_memory("luks2", 4096, 16 << 20)});
    t.add({"luks1", "LUKS1 on memory", luks_on_memory("luks1", 512, 2 << 20)});
    return t;
  }();
  return table;
}

// Reads and drops what the server sent, without blocking. Returns the bytes read, or -1 once
// the server has closed the connection.
ssize_t drain(int fd) {
  static std::vector<std::byte> sink(1 << 20);
  ssize_t total = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, sink.data(), sink.size(), MSG_DONTWAIT);
    if (n > 0) {
      total += n;
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return -1;
    return total;
  }
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "nbd_session_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The server logs every protocol violation; at fuzzing rates that is all the run would do.
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) fail("socketpair failed");
  const int client = fds[1];
  ::fcntl(client, F_SETFL, ::fcntl(client, F_GETFL) | O_NONBLOCK);

  boost::asio::io_context io;
  volgate::CurrentContextGuard current(io);  // where devices send their completions
  nbd::SessionRegistry registry;
  // The server's default budget; no handshake timeout, so that a run does not depend on time.
  static nbd::BufferBudget buffers(nbd::ServerLimits::kDefaultMaxBufferBytes);
  static const nbd::SessionShared shared{exports(), buffers, std::chrono::milliseconds(0), nullptr};
  nbd::Session::adopt(fds[0], boost::asio::generic::stream_protocol(AF_UNIX, 0), io, registry,
                      shared, "fuzz");

  // Feed the input, then keep draining replies until the server closes the connection: the
  // session must notice the closed client side, finish what it has in flight and end.
  size_t sent = 0;
  bool client_open_for_writing = true;
  // A hang is no byte moving either way for this long (handlers that keep running without
  // moving bytes would be a livelock, so they do not count); long inputs may take seconds.
  constexpr auto kStall = std::chrono::seconds(20);
  auto deadline = std::chrono::steady_clock::now() + kStall;
  for (;;) {
    bool bytes_moved = false;
    if (sent < size) {
      const ssize_t n = ::send(client, data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        bytes_moved = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        sent = size;  // the server hung up: the rest of the input would never be read
      }
    }
    if (sent == size && client_open_for_writing) {
      ::shutdown(client, SHUT_WR);
      client_open_for_writing = false;
    }
    const ssize_t received = drain(client);
    bytes_moved = bytes_moved || received > 0;
    if (io.stopped()) io.restart();
    const bool handlers_ran = io.poll() > 0;
    if (received < 0 && registry.empty()) break;
    if (bytes_moved) deadline = std::chrono::steady_clock::now() + kStall;
    else if (std::chrono::steady_clock::now() > deadline)
      fail("the session made no progress for 20 s (and did not end after the client closed)");
    // Nothing happened: wait for the server's reactor (a completion or the socket) a little.
    if (!bytes_moved && !handlers_ran) {
      if (io.stopped()) io.restart();
      io.run_one_for(std::chrono::milliseconds(1));
    }
  }
  // Let any handler still queued (none should hold the session) run out.
  io.restart();
  io.run();
  ::close(client);
  return 0;
}
