#pragma once
// The first half of a hand-over to another process (see Server::pause_for_handover): every
// session stops reading at a request boundary, answers everything it had read, and reports
// what the successor needs to go on with its connection where it stopped.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace volgate::nbd {

// A connection paused at a request boundary, with nothing in flight.
struct PausedConnection {
  // The paused session's own descriptor: the session keeps it open (and idle) until the server
  // is told how the hand-over ended. The successor gets a duplicate (SCM_RIGHTS).
  int fd = -1;
  int family = 0;           // AF_UNIX, AF_INET or AF_INET6
  std::string peer;         // for the log: "unix#4 pid 1234 uid 0"
  std::string export_name;  // the export the client chose in its handshake
  bool structured_replies = false;
  bool base_allocation = false;
  // What the client had sent past the last request served: part of a request header, or
  // whole requests already read from the socket. The successor parses these first.
  std::vector<std::byte> unparsed;
};

// Collects the sessions' reports; shared between the sessions (which report on their own
// threads) and the thread that waits for them.
class SessionPause {
 public:
  // A session will report (a connection, or that it closed).
  void expect();
  // Takes a paused connection. False once the wait is over: the session then closes instead
  // (it was not handed over, and the client sees its connection end).
  bool report(PausedConnection connection);
  // An expected session ended without a connection to hand over (the client went away, or
  // its connection runs TLS, whose state cannot move).
  void closed();
  // Work that may still bring sessions to pause (connections moving between threads, posted
  // pause requests) starts and ends; the wait is over only when none is pending.
  void begin_pending();
  void end_pending();

  // Until every expected session reported, nothing is pending and `quiet()` (sessions on their
  // way between threads, which the caller counts), or until `deadline`. Returns the
  // connections reported by then; later reports are refused (see report()).
  std::vector<PausedConnection> wait(std::chrono::steady_clock::time_point deadline,
                                     const std::function<bool()>& quiet);
  // Sessions that were expected and had not reported when the wait ended.
  size_t missing() const;

 private:
  bool settled() const { return reported_ == expected_ && pending_ == 0; }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  size_t expected_ = 0;
  size_t reported_ = 0;
  size_t pending_ = 0;
  bool over_ = false;
  std::vector<PausedConnection> connections_;
};

}  // namespace volgate::nbd
