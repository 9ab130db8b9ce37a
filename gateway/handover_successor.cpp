#include "gateway/handover_successor.hpp"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/untrusted_json.hpp"

namespace volgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using control::Json;

UniqueFd connect_unix(const std::string& path) {
  sockaddr_un address{};
  if (path.size() >= sizeof address.sun_path)
    throw HandoverError("--take-over " + path + ": the path is too long for a unix socket");
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw HandoverError(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    throw HandoverError("--take-over " + path + ": no gateway answers there (" + std::strerror(errno) + ")");
  return fd;
}

void write_all(int fd, std::string_view text, Clock::time_point deadline) {
  while (!text.empty()) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) throw HandoverError("hand-over: timed out sending the request");
      ::poll(&p, 1, static_cast<int>(left));
      continue;
    }
    if (n < 0) throw HandoverError(std::string("hand-over: sending the request: ") + std::strerror(errno));
    text.remove_prefix(static_cast<size_t>(n));
  }
}

// One byte at a time: the answer's header is followed at once by the state, whose descriptors
// come with its first byte and would be lost to a read that went past the header.
std::string read_http_header(int fd, Clock::time_point deadline) {
  std::string header;
  while (!header.ends_with("\r\n\r\n")) {
    if (header.size() > 16 * 1024) throw HandoverError("hand-over: the gateway's answer has an oversized header");
    char c = 0;
    ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
    if (n == 1) {
      header += c;
      continue;
    }
    if (n == 0) throw HandoverError("hand-over: the gateway closed the connection without an answer");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) throw HandoverError(std::string("hand-over: reading the answer: ") + std::strerror(errno));
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) throw HandoverError("hand-over: the gateway did not answer the request in time");
    ::poll(&p, 1, static_cast<int>(left));
  }
  return header;
}

// The error message of a refusal: the JSON body's, or the status line.
std::string refusal_message(int fd, const std::string& header, Clock::time_point deadline) {
  const std::string status_line = header.substr(0, header.find("\r\n"));
  std::string lower = header;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t at = lower.find("\r\ncontent-length:");
  size_t length = 0;
  if (at != std::string::npos) {
    const char* begin = header.c_str() + at + 17;
    while (*begin == ' ') ++begin;
    std::from_chars(begin, header.c_str() + header.size(), length);
  }
  std::string body;
  while (body.size() < std::min<size_t>(length, 64 * 1024)) {
    char buffer[4096];
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    ssize_t n = ::recv(fd, buffer, std::min(sizeof buffer, length - body.size()), 0);
    if (n <= 0) break;
    body.append(buffer, static_cast<size_t>(n));
  }
  try {
    if (auto message = control::error_message_from_json(parse_untrusted_json_as<Json>(body))) return *message;
  } catch (const std::exception&) {
  }
  return status_line;
}

// The running gateway said it keeps its connections: nothing to wait for.
struct TakenBack : HandoverError {
  using HandoverError::HandoverError;
};

UniqueFd ask(const std::string& control_path) {
  UniqueFd fd = connect_unix(control_path);
  const auto deadline = Clock::now() + HandoverSuccessor::kRequestTimeout;
  const WipingString body = handover::offer_to_json().dump();
  std::string request = "POST /v1/handover HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n"
                        "Upgrade: volgate-handover\r\nContent-Type: application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + std::string(body.data(), body.size());
  write_all(fd.get(), request, deadline);
  const std::string header = read_http_header(fd.get(), deadline);
  if (!header.starts_with("HTTP/1.1 101"))
    throw HandoverError("the running gateway refused the hand-over: " + refusal_message(fd.get(), header, deadline));
  return fd;
}

}  // namespace

HandoverSuccessor::HandoverSuccessor(const std::string& control_path) : channel_(ask(control_path)) {
  HandoverMessage message = channel_.receive(Clock::now() + kRequestTimeout);
  if (handover::type_of(message.body) != "state")
    throw HandoverError("hand-over: expected the running gateway's state first");
  descriptors_ = std::move(message.descriptors);
  state_ = handover::state_from_json(message.body);
  predecessor_ = static_cast<pid_t>(state_.pid);
  const size_t expected = state_.nbd_listeners + 1 + (state_.metrics ? 1 : 0);
  if (descriptors_.size() != expected)
    throw HandoverError("hand-over: the state came with " + std::to_string(descriptors_.size()) +
                        " descriptors, not the " + std::to_string(expected) + " it names");
}

std::vector<UniqueFd> HandoverSuccessor::take_nbd_listeners() {
  std::vector<UniqueFd> out;
  for (size_t i = 0; i < state_.nbd_listeners; ++i) out.push_back(std::move(descriptors_[i]));
  return out;
}

UniqueFd HandoverSuccessor::take_control_listener() { return std::move(descriptors_[state_.nbd_listeners]); }

UniqueFd HandoverSuccessor::take_metrics_listener() {
  return state_.metrics ? std::move(descriptors_[state_.nbd_listeners + 1]) : UniqueFd();
}

void HandoverSuccessor::abort(const std::string& message) {
  try {
    Json j = handover::message("abort");
    j["message"] = WipingString(message.data(), message.size());
    channel_.send(j, Clock::now() + std::chrono::seconds(5));
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());
  }
}

bool HandoverSuccessor::predecessor_alive() const {
  // A zombie (dead, not yet reaped by its parent) still answers kill(pid, 0), so its state is
  // read too. Reaped between the two, it has no stat file any more: gone, not alive (taking that
  // for "alive" made a successor give up on connections it had been handed).
  // EPERM: it exists, as another user's process.
  const auto exists = [this] { return ::kill(predecessor_, 0) == 0 || errno == EPERM; };
  if (predecessor_ <= 0 || !exists()) return false;
  std::ifstream stat("/proc/" + std::to_string(predecessor_) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return exists();
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z';
}

// For the tests of a predecessor killed in the middle of a hand-over: the successor stops
// itself (SIGSTOP) before the step named in VOLGATE_TEST_HANDOVER_STOP_AT ("ready" or
// "adopted"), for the test to act and then let it go on (SIGCONT).
static void stop_before_for_test(std::string_view step) {
  const char* at = std::getenv("VOLGATE_TEST_HANDOVER_STOP_AT");
  if (at && step == at) ::raise(SIGSTOP);
}

std::vector<nbd::PausedConnection> HandoverSuccessor::take_connections() {
  stop_before_for_test("ready");
  std::vector<nbd::PausedConnection> connections;
  std::vector<UniqueFd> sockets;  // closed (never shut down) unless adopted
  auto with_sockets = [&] {
    for (size_t i = 0; i < connections.size(); ++i) connections[i].fd = sockets[i].release();
    return std::move(connections);
  };
  // Without a word from the predecessor: serve what came if it died, else give up.
  auto predecessor_silent = [&](const HandoverError& e) {
    for (int i = 0; i < 100 && predecessor_alive(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (predecessor_alive()) throw HandoverError(std::string(e.what()) + " (the running gateway is still alive: "
                                                 "it keeps its connections)");
    spdlog::warn("hand-over: the running gateway (pid {}) died before it committed; serving its exports with the "
                 "{} connection{} it handed over", predecessor_, connections.size(), connections.size() == 1 ? "" : "s");
    return with_sockets();
  };

  auto taken_back = [](const HandoverMessage& m) {
    return TakenBack("the running gateway took its connections back (" + handover::reason_of(m.body) + ")");
  };

  try {
    channel_.send(handover::message("ready"), Clock::now() + std::chrono::seconds(5));
    const auto deadline = Clock::now() + kConnectionsTimeout;
    for (;;) {
      HandoverMessage m = channel_.receive(deadline);
      const std::string type = handover::type_of(m.body);
      if (type == "paused") break;
      if (type == "resume") throw taken_back(m);
      if (type != "connection") throw HandoverError("hand-over: an unexpected '" + type + "' message");
      if (m.descriptors.size() != 1) throw HandoverError("hand-over: a connection came without its socket");
      connections.push_back(handover::connection_from_json(m.body));
      sockets.push_back(std::move(m.descriptors.front()));
    }
    stop_before_for_test("adopted");
    channel_.send(handover::message("adopted"), Clock::now() + std::chrono::seconds(5));
    HandoverMessage m = channel_.receive(Clock::now() + kCommitTimeout);
    const std::string type = handover::type_of(m.body);
    if (type == "commit") return with_sockets();
    if (type == "resume") throw taken_back(m);
    throw HandoverError("hand-over: an unexpected '" + type + "' message");
  } catch (const TakenBack&) {
    throw;
  } catch (const HandoverError& e) {
    // A send fails on a socket the predecessor closed, before its last words are read: it may
    // have said why it took everything back.
    try {
      HandoverMessage m = channel_.receive(Clock::now() + std::chrono::milliseconds(100));
      if (handover::type_of(m.body) == "resume") throw taken_back(m);
    } catch (const TakenBack&) {
      throw;
    } catch (const HandoverError&) {
    }
    return predecessor_silent(e);
  }
}

}  // namespace volgate::gateway
