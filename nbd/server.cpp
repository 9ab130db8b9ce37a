#include "nbd/server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <cctype>
#include <csignal>
#include <cstring>
#include <future>
#include <system_error>

#include "common/adaptive_polling.hpp"
#include "common/current_context.hpp"

namespace volgate::nbd {

namespace asio = boost::asio;
using generic_stream = asio::generic::stream_protocol;

namespace {

// Room for a few of the largest read replies (the block size maximum is 32 MiB, but QEMU and
// fio rarely go past 1-2 MiB).
constexpr int kSendBufferSize = 4 * 1024 * 1024;

[[noreturn]] void fail(const boost::system::error_code& ec, const std::string& what) {
  throw std::system_error(ec.value(), std::generic_category(), what);
}

// A unix socket path left behind by a server that died is removed; one a live server still
// listens on is an error, and so is any path that is not a socket.
void clear_stale_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode))
    throw std::system_error(EEXIST, std::generic_category(), path + " exists and is not a socket");
  asio::io_context probe_io;
  asio::local::stream_protocol::socket probe(probe_io);
  boost::system::error_code ec;
  probe.connect(asio::local::stream_protocol::endpoint(path), ec);
  if (!ec)
    throw std::system_error(EADDRINUSE, std::generic_category(),
                            path + ": another server is listening there");
  ::unlink(path.c_str());
}

// The socket file bind() created goes to `group` with mode 0660, for a client that runs as
// another user in that group (libvirt's QEMU runs as libvirt-qemu). Group first: at no moment
// may the wider mode apply to the wrong group. The directory holding the socket must not be
// writable by others (they could swap the path between bind and chmod); lchown and the lstat
// check keep a symlink planted there from redirecting either call.
void share_with_group(const std::string& path, gid_t group) {
  auto failed = [&](const char* what) {
    const int err = errno;
    ::unlink(path.c_str());
    throw std::system_error(err, std::generic_category(),
                            std::string(what) + " " + path + " for --socket-group");
  };
  if (::lchown(path.c_str(), static_cast<uid_t>(-1), group) != 0) failed("changing the group of");
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) failed("checking");
  if (!S_ISSOCK(st.st_mode)) {
    errno = EEXIST;
    failed("checking");
  }
  if (::chmod(path.c_str(), 0660) != 0) failed("changing the mode of");
}

// Loopback: 127.0.0.0/8, ::1, and ::ffff:127.x.y.z.
bool is_loopback(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  return address.is_loopback();
}

// Out of descriptors or memory: accepting again at once would fail the same way, for ever.
bool is_resource_shortage(const boost::system::error_code& ec) {
  return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
         ec == asio::error::no_memory || ec.value() == ENFILE;
}

// "tcp#3 127.0.0.1:40312" or "unix#4 pid 1234 uid 64055": numbered in the order accepted,
// with who is at the other end, so a log line names the client.
std::string describe_peer(generic_stream::socket& socket, bool tcp, uint64_t number) {
  std::string text = (tcp ? "tcp#" : "unix#") + std::to_string(number);
  boost::system::error_code ec;
  if (tcp) {
    auto remote = socket.remote_endpoint(ec);
    if (ec || remote.size() > sizeof(sockaddr_storage)) return text;
    asio::ip::tcp::endpoint endpoint;
    std::memcpy(endpoint.data(), remote.data(), remote.size());
    const auto address = endpoint.address();
    text += address.is_v6() ? " [" + address.to_string() + "]:" : " " + address.to_string() + ":";
    return text + std::to_string(endpoint.port());
  }
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0)
    text += " pid " + std::to_string(credentials.pid) + " uid " + std::to_string(credentials.uid);
  return text;
}

// For a line that a LogThrottle let through: how many events it stands for.
std::string times_since_last_line(uint64_t events) {
  return events > 1 ? " " + std::to_string(events) + " times since the last such line" : "";
}

// Percent-encodes a socket path for the query part of an NBD URI.
std::string uri_escape(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || std::strchr("-._~/:@", c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// A TCP client whose host vanished (powered off, cut off the network) sends no FIN: its
// connection, and its slot under --max-connections, would stay for good, and its export could
// not be removed without force. Keepalive probes after a minute of silence find such a peer
// within two more (QEMU's host answers them whatever its guest does); TCP_USER_TIMEOUT ends a
// connection whose replies go unacknowledged as long.
void detect_dead_tcp_peer(int fd) {
  const int on = 1, idle_s = 60, interval_s = 10, probes = 6;
  const unsigned user_timeout_ms = (idle_s + interval_s * probes) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

}  // namespace

Server::Server(ExportTable exports, unsigned threads, std::chrono::microseconds poll_max,
               ServerLimits limits, ServerTls tls)
    : exports_(std::move(exports)),
      tls_(std::move(tls)),
      poll_max_(poll_max),
      buffers_(limits.max_buffer_bytes),
      connection_limit_(limits.max_connections),
      shared_{exports_, buffers_, limits.handshake_timeout, &homes_, tls_.mode,
              tls_.credentials.get(), &measure_latency_},
      signals_([this, threads]() -> asio::io_context& {
        for (unsigned i = 0; i < std::max(threads, 1u); ++i)
          workers_.push_back(std::make_unique<Worker>());
        return workers_.front()->io;
      }()),
      drain_timer_(workers_.front()->io),
      idle_check_(workers_.front()->io),
      final_flush_timeout_(limits.final_flush_timeout),
      drain_timeout_(limits.drain_timeout),
      in_flight_grace_(limits.in_flight_grace) {
  if (tls_.mode != TlsMode::off && !tls_.credentials)
    throw std::invalid_argument("TLS needs credentials");
  // OpenSSL writes TLS records with write(), which raises SIGPIPE (ending the process) when the
  // client is gone; Asio's own sends use MSG_NOSIGNAL. A failed write is an error we handle.
  if (tls_.mode != TlsMode::off) ::signal(SIGPIPE, SIG_IGN);
  // Devices of exports added later serve from the worker that accepted their connection.
  for (const auto& e : *exports_.all())
    if (auto* home = e->device->home_context()) homes_.add(home);
  // Asio makes a worker's reactor (an epoll, an eventfd and a timerfd) with the first socket
  // there, and throws, ending the process, if descriptors have run out by then. Make them now.
  for (auto& w : workers_) {
    generic_stream::socket make_socket_service(w->io);
    asio::steady_timer make_timer_service(w->io);
  }
}

Server::~Server() { remove_socket_files(); }

void Server::remove_socket_files() {
  for (auto& l : listeners_)
    if (!l->unix_path.empty()) ::unlink(l->unix_path.c_str());
}

void Server::listen_unix(const std::string& path, std::optional<gid_t> group) {
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    throw std::system_error(ENAMETOOLONG, std::generic_category(), path);
  clear_stale_socket(path);
  auto listener = std::make_unique<Listener>(workers_.front()->io, path, false);
  listener->where = path;
  generic_stream::endpoint endpoint{asio::local::stream_protocol::endpoint(path)};
  boost::system::error_code ec;
  listener->acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    // Whoever may connect may read and write every export: the socket file is born 0600 (bind
    // applies the umask), so there is no moment at which a wider mode lets anyone in. The umask
    // is the process's; a file another thread creates meanwhile comes out narrower, never wider.
    const mode_t old_umask = ::umask(0177);
    listener->acceptor.bind(endpoint, ec);
    ::umask(old_umask);
  }
  if (!ec && group) share_with_group(path, *group);
  if (!ec) listener->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail(ec, "listening on " + path);
  listeners_.push_back(std::move(listener));
}

void Server::listen_tcp(const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) fail(ec, "listen address '" + host + "'");
  asio::ip::tcp::endpoint tcp_endpoint(address, port);
  generic_stream::endpoint endpoint{tcp_endpoint};
  auto listener = std::make_unique<Listener>(workers_.front()->io, "", true);
  listener->acceptor.open(endpoint.protocol(), ec);
  if (!ec) listener->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) listener->acceptor.bind(endpoint, ec);
  if (!ec) listener->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail(ec, "listening on " + host + ":" + std::to_string(port));
  describe_tcp_listener(*listener);
  listeners_.push_back(std::move(listener));
}

void Server::describe_tcp_listener(Listener& listener) {
  // The bound address, with the port the kernel chose when asked for port 0.
  auto bound = listener.acceptor.local_endpoint();
  asio::ip::tcp::endpoint actual;
  std::memcpy(actual.data(), bound.data(), std::min<size_t>(bound.size(), sizeof(sockaddr_in6)));
  const auto address = actual.address();
  std::string host = address.to_string();
  listener.where = (address.is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(actual.port());
  listener.uri_base = (tls_.mode == TlsMode::require ? "nbds://" : "nbd://") + listener.where + "/";
  if (!is_loopback(address) && tls_.mode == TlsMode::off)
    spdlog::warn("listening on {}, which is not a loopback address, without TLS: anyone who can "
                 "reach it can read and write every export, LUKS exports decrypted; use --tls "
                 "require, prefer a unix socket or 127.0.0.1, or firewall the port",
                 listener.where);
  else if (!is_loopback(address) && tls_.mode == TlsMode::on)
    spdlog::warn("listening on {}, which is not a loopback address, with --tls on: clients may "
                 "still choose clear text; use --tls require to refuse them", listener.where);
}

void Server::adopt_listener(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  int type = 0, listening = 0;
  socklen_t option_length = sizeof type;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
      ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &option_length) != 0)
    throw std::system_error(errno, std::generic_category(), "a handed-over listening socket");
  option_length = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &option_length) != 0 ||
      type != SOCK_STREAM || !listening ||
      (address.ss_family != AF_UNIX && address.ss_family != AF_INET && address.ss_family != AF_INET6))
    throw std::system_error(EINVAL, std::generic_category(),
                            "a handed-over descriptor is not a listening stream socket");
  const bool tcp = address.ss_family != AF_UNIX;
  std::string path;
  if (!tcp) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&address);
    path.assign(un->sun_path, ::strnlen(un->sun_path, length - offsetof(sockaddr_un, sun_path)));
  }
  auto listener = std::make_unique<Listener>(workers_.front()->io, path, tcp);
  boost::system::error_code ec;
  listener->acceptor.assign(generic_stream(address.ss_family, SOCK_STREAM), fd, ec);
  if (ec) fail(ec, "a handed-over listening socket");
  if (tcp) describe_tcp_listener(*listener);
  else listener->where = path;
  listeners_.push_back(std::move(listener));
}

std::vector<std::string> Server::uris() const {
  std::vector<std::string> out;
  for (const auto& l : listeners_)
    for (const auto& e : *exports_.all())
      out.push_back(l->tcp ? l->uri_base + e->name
                           : (tls_.mode == TlsMode::require ? "nbds+unix:///" : "nbd+unix:///") +
                                 e->name + "?socket=" + uri_escape(l->unix_path));
  return out;
}

void Server::accept_next(Listener& listener) {
  listener.acceptor.async_accept([this, &listener](const boost::system::error_code& ec,
                                                   generic_stream::socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    if (handing_over_) {
      // Accepted just before the pause cancelled accepting: it pauses in its handshake like
      // the others (see Session::adopt). Accepting itself waits for the hand-over's outcome.
      if (!ec) hand_to_worker(listener, std::move(socket));
      return;
    }
    if (ec) return on_accept_failed(listener, ec);
    listener.pause = std::chrono::milliseconds(0);
    hand_to_worker(listener, std::move(socket));
    accept_next(listener);
  });
}

void Server::on_accept_failed(Listener& listener, const boost::system::error_code& ec) {
  if (!is_resource_shortage(ec)) {
    // A client that gave up while queued (ECONNABORTED) and the like: nothing to wait for.
    if (uint64_t failures = accept_failed_log_.count())
      spdlog::warn("accepting on {} failed{}: {}", listener.where, times_since_last_line(failures),
                   ec.message());
    return accept_next(listener);
  }
  // Out of descriptors (or memory): the connection stays queued and the listener readable, so
  // accepting again at once fails again at once, a core's worth of times a second. Pause until
  // connections close; the queued clients wait meanwhile (or give up).
  listener.pause = listener.pause.count() == 0
                       ? kFirstAcceptPause
                       : std::min(listener.pause * 2, kLongestAcceptPause);
  if (uint64_t failures = accept_failed_log_.count())
    spdlog::warn("accepting on {} failed{}: {}; pausing accepts for {} ms at a time while this lasts",
                 listener.where, times_since_last_line(failures), ec.message(), listener.pause.count());
  listener.retry.expires_after(listener.pause);
  listener.retry.async_wait([this, &listener](const boost::system::error_code& e) {
    if (!e && !stopping_) accept_next(listener);
  });
}

void Server::hand_to_worker(Listener& listener, generic_stream::socket socket) {
  std::string peer = describe_peer(socket, listener.tcp, ++accepted_);
  std::optional<ConnectionLimit::Slot> slot = connection_limit_.try_open();
  if (!slot) {
    if (uint64_t refused = refused_log_.count())
      spdlog::warn("{}: closed at once: {} connections are open, the most allowed "
                   "(--max-connections){}",
                   peer, connection_limit_.max(),
                   refused > 1 ? "; " + std::to_string(refused) + " refused since the last such line" : "");
    return;  // the socket's destructor closes the connection
  }
  Worker& worker = *workers_[next_worker_++ % workers_.size()];
  boost::system::error_code ignored;
  if (listener.tcp) {
    socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    detect_dead_tcp_peer(socket.native_handle());
  }
  // A 1 MiB read reply should fit the socket in one sendmsg rather than trickle out
  // through several reactor wake-ups; the kernel caps this at net.core.wmem_max.
  socket.set_option(asio::socket_base::send_buffer_size(kSendBufferSize), ignored);
  // The descriptor moves to the worker's own reactor; the session is created on the
  // worker's thread, which owns its registry.
  generic_stream protocol = socket.local_endpoint(ignored).protocol();
  int fd = socket.release(ignored);
  // During a hand-over's pause the new session pauses too, and the pause waits for it.
  std::shared_ptr<SessionPause> pause = homes_.pause();
  if (pause) pause->begin_pending();
  asio::post(worker.io, [this, &worker, protocol, fd, peer = std::move(peer),
                         slot = std::move(*slot), pause]() mutable {
    Session::adopt(fd, protocol, worker.io, worker.sessions, shared_, std::move(peer), std::move(slot));
    if (pause) pause->end_pending();
  });
}

std::vector<PausedConnection> Server::pause_for_handover(std::chrono::steady_clock::time_point deadline) {
  auto pause = std::make_shared<SessionPause>();
  pause->begin_pending();  // until every thread has been asked to pause its sessions
  asio::post(workers_.front()->io, [this, pause] {
    handing_over_ = true;
    homes_.set_pause(pause);
    boost::system::error_code ignored;
    // Connections that arrive from now on wait in the listen queue, for the successor.
    for (auto& l : listeners_) {
      l->acceptor.cancel(ignored);
      l->retry.cancel();
    }
    // Posted from here, after every connection this thread handed to a worker so far: each
    // reaches its worker's registry before the pause does.
    auto ask = [&pause](asio::io_context& io, SessionRegistry& sessions) {
      pause->begin_pending();
      asio::post(io, [&sessions, pause] {
        sessions.pause_all(pause);
        pause->end_pending();
      });
    };
    for (auto& w : workers_) ask(w->io, w->sessions);
    for (auto& home : homes_.all()) ask(*home->io, home->sessions);
    pause->end_pending();
  });
  auto connections = pause->wait(deadline, [this] { return !homes_.arrivals_pending(); });
  if (size_t late = pause->missing())
    spdlog::warn("hand-over: {} connection{} did not pause within the time allowed and will be closed",
                 late, late == 1 ? "" : "s");
  return connections;
}

void Server::resume_after_handover() {
  asio::post(workers_.front()->io, [this] {
    if (!handing_over_) return;
    handing_over_ = false;
    homes_.set_pause(nullptr);
    for (auto& w : workers_) asio::post(w->io, [&w = *w] { w.sessions.resume_all(); });
    for (auto& home : homes_.all()) asio::post(*home->io, [&home = *home] { home.sessions.resume_all(); });
    if (stop_put_off_) return begin_stop();
    for (auto& l : listeners_) accept_next(*l);
  });
}

void Server::finish_handover() {
  asio::post(workers_.front()->io, [this] {
    handing_over_ = false;
    stop_put_off_ = false;
    handed_over_ = true;
    // Released before the stop's shutdown_all reaches them (both are posted from here, in this
    // order): a released session never touches its socket again.
    for (auto& w : workers_) asio::post(w->io, [&w = *w] { w.sessions.release_all(); });
    for (auto& home : homes_.all()) asio::post(*home->io, [&home = *home] { home.sessions.release_all(); });
    homes_.set_pause(nullptr);
    boost::system::error_code ignored;
    for (auto& l : listeners_) {
      l->unix_path.clear();  // the successor's now: ~Server must not remove it
      l->acceptor.close(ignored);
    }
    begin_stop();
  });
}

std::vector<int> Server::listening_descriptors() {
  std::vector<int> fds;
  for (auto& l : listeners_) fds.push_back(l->acceptor.native_handle());
  return fds;
}

bool Server::adopt_connection(PausedConnection c) {
  std::shared_ptr<const Export> chosen = exports_.find(c.export_name);
  std::optional<ConnectionLimit::Slot> slot = connection_limit_.try_open();
  if (!chosen || !slot) {
    spdlog::warn("{}: handed over for export '{}', {}; closing it", c.peer, c.export_name,
                 chosen ? "but --max-connections are open" : "which is not served here");
    ::close(c.fd);
    return false;
  }
  NegotiatedSession negotiated{chosen, c.structured_replies, c.base_allocation, false};
  // Straight to the device's own thread when it has one, as Session::move_home would.
  // (The server's constructor knew every export's home: the successor adds none before this.)
  SessionHomes::Home* home = nullptr;
  if (auto* home_io = chosen->device->home_context()) home = homes_.find(home_io);
  asio::io_context* io = nullptr;
  SessionRegistry* registry = nullptr;
  if (home) {
    io = home->io;
    registry = &home->sessions;
    home->arriving.fetch_add(1);
  } else {
    Worker& worker = *workers_[next_worker_++ % workers_.size()];
    io = &worker.io;
    registry = &worker.sessions;
  }
  asio::post(*io, [this, io, registry, home, fd = c.fd, protocol = generic_stream(c.family, SOCK_STREAM),
                   peer = c.peer + " (handed over)", slot = std::move(*slot),
                   negotiated = std::move(negotiated), unparsed = std::move(c.unparsed)]() mutable {
    Session::adopt_handed_over(fd, protocol, *io, *registry, shared_, std::move(peer), std::move(slot),
                               std::move(negotiated), std::move(unparsed));
    if (home) home->arriving.fetch_sub(1);
  });
  return true;
}

bool Server::run() {
  signals_.add(SIGINT);
  signals_.add(SIGTERM);
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received {}, finishing in-flight requests", signo == SIGINT ? "SIGINT" : "SIGTERM");
    begin_stop();
  });
  for (auto& l : listeners_) accept_next(*l);

  for (auto& w : workers_) {
    w->keep_alive.emplace(asio::make_work_guard(w->io));
    w->thread = std::thread([this, &w = *w, poll_max = poll_max_] {
      {
        CurrentContextGuard current(w.io);
        run_with_adaptive_polling(w.io, poll_max, [&w] { return w.sessions.wants_polling(); }, &w.polled_ns);
      }
      stop_deadline_.worker_ended();
    });
    clockid_t clock{};
    if (::pthread_getcpuclockid(w->thread.native_handle(), &clock) == 0) {
      std::lock_guard lock(metrics_mutex_);
      w->cpu_clock = clock;
    }
  }
  // Each worker returns once the server stopped and its last session is gone; worker 0 also
  // waits for the sessions on device threads (cancel_drain_timer_when_idle), but one that
  // moved there just before the stop may still be on its way or winding down.
  std::vector<std::thread*> threads;
  for (auto& w : workers_) threads.push_back(&w->thread);
  if (const size_t left = stop_deadline_.join_or_leave(threads); left > 0) {
    // A device holds those workers for requests its storage has not answered: what they carry
    // is lost either way. The exports that can still be flushed are; the process must end.
    spdlog::error("{} worker thread{} still waiting for the storage {:g} s after the stop began: "
                  "requests in flight to an export whose storage does not answer",
                  left, left == 1 ? " is" : "s are",
                  static_cast<double>((drain_timeout_ + in_flight_grace_).count()) / 1000);
    flush_all();  // the exports whose storage answers get their last flush
    storage_unanswered_ = true;
    return false;
  }
  while (!homes_.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // Handlers the stop queued on the device threads (shutdown_all, abort_all) refer to homes_,
  // which goes with the server while those threads live on: let each thread run them first.
  for (auto& home : homes_.all()) {
    std::promise<void> ran;
    asio::post(*home->io, [&ran] { ran.set_value(); });
    ran.get_future().wait();
  }
  // Handed over: everything was flushed in the pause, nothing written since, and the devices
  // are the successor's to use (an iSCSI device of ours has gone dormant).
  return handed_over_ || flush_all();
}

void Server::report_metrics(MetricsReport& report) const {
  ExportCounters::declare(report);
  for (const auto& e : *exports_.all()) {
    e->counters->report(report, e->name);
    e->device->report_metrics(report, {{"export", e->name}});
  }
  constexpr const char* kCpu = "volgate_worker_cpu_seconds_total";
  constexpr const char* kCpuHelp =
      "CPU time of each NBD worker thread, busy-polling included (see volgate_worker_poll_seconds_total).";
  constexpr const char* kPoll = "volgate_worker_poll_seconds_total";
  constexpr const char* kPollHelp =
      "Time each NBD worker spent busy-polling for its next event (--poll-max-us) rather than serving.";
  report.declare(kCpu, MetricType::counter, kCpuHelp);
  report.declare(kPoll, MetricType::counter, kPollHelp);
  std::lock_guard lock(metrics_mutex_);
  for (size_t i = 0; i < workers_.size(); ++i) {
    const Worker& w = *workers_[i];
    const MetricLabels labels{{"worker", std::to_string(i)}};
    timespec cpu{};
    // A thread that has ended has no clock any more: its sample is left out.
    if (w.cpu_clock && !stopping_.load() && ::clock_gettime(*w.cpu_clock, &cpu) == 0)
      report.add(kCpu, MetricType::counter, kCpuHelp, labels,
                 static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) / 1e9);
    report.add(kPoll, MetricType::counter, kPollHelp, labels,
               static_cast<double>(w.polled_ns.load(std::memory_order_relaxed)) / 1e9);
  }
}

void Server::stop() {
  asio::post(workers_.front()->io, [this] { begin_stop(); });
}

void Server::begin_stop() {
  if (stopping_) return;
  if (handing_over_) {
    // Paused connections may be the successor's already: they must not be touched until the
    // hand-over's outcome is known (it comes within its deadline).
    if (!stop_put_off_) spdlog::info("stopping once the hand-over in progress has ended");
    stop_put_off_ = true;
    return;
  }
  stopping_ = true;
  stop_deadline_.begin(drain_timeout_ + in_flight_grace_);
  boost::system::error_code ignored;
  signals_.cancel(ignored);
  for (auto& l : listeners_) {
    l->acceptor.close(ignored);
    l->retry.cancel();
  }
  for (auto& callback : on_stop_) callback();
  for (auto& w : workers_)
    asio::post(w->io, [&w = *w] {
      w.sessions.shutdown_all();
      w.keep_alive.reset();
    });
  for (auto& home : homes_.all())
    asio::post(*home->io, [&home = *home] { home.sessions.shutdown_all(); });
  // Clients that stop reading their replies must not hold the process hostage.
  drain_timer_.expires_after(drain_timeout_);
  drain_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    spdlog::warn("clients still connected after {:g} s, closing their connections",
                 static_cast<double>(drain_timeout_.count()) / 1000);
    for (auto& w : workers_) asio::post(w->io, [&w = *w] { w.sessions.abort_all(); });
    for (auto& home : homes_.all())
      asio::post(*home->io, [&home = *home] { home.sessions.abort_all(); });
  });
  // The drain timer must not keep worker 0 alive once its sessions are gone.
  asio::post(workers_.front()->io, [this] { cancel_drain_timer_when_idle(); });
}

void Server::cancel_drain_timer_when_idle() {
  bool idle = homes_.idle();
  for (auto& w : workers_) idle = idle && w->sessions.size() == 0;
  if (idle) {
    drain_timer_.cancel();
    return;
  }
  idle_check_.expires_after(std::chrono::milliseconds(20));
  idle_check_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) cancel_drain_timer_when_idle();
  });
}

void Server::close_sessions_of(const Export& e, bool hard) {
  const Export* target = &e;  // compared, never followed: the caller holds the export
  for (auto& w : workers_)
    asio::post(w->io, [&w = *w, target, hard] {
      hard ? w.sessions.abort_export(target) : w.sessions.shutdown_export(target);
    });
  for (auto& home : homes_.all())
    asio::post(*home->io, [&home = *home, target, hard] {
      hard ? home.sessions.abort_export(target) : home.sessions.shutdown_export(target);
    });
}

size_t Server::connection_count() const {
  size_t count = 0;
  for (const auto& w : workers_) count += w->sessions.size();
  for (const auto& home : homes_.all()) count += home->sessions.size();
  return count;
}

bool Server::flush_all() {
  // One last flush of every device (on a private io_context: the workers are gone).
  const FlushOutcome outcome = flush_exports(*exports_.all(), final_flush_timeout_);
  for (const auto& [name, ec] : outcome.failed)
    spdlog::error("export '{}': final flush failed: {}", name, ec.message());
  for (const auto& name : outcome.unanswered)
    spdlog::error("export '{}': final flush not done within {:g} s: the storage did not answer, and "
                  "writes acknowledged since the client's last flush may be lost",
                  name, static_cast<double>(final_flush_timeout_.count()) / 1000);
  storage_unanswered_ = !outcome.unanswered.empty();
  return outcome.ok();
}

}  // namespace volgate::nbd
