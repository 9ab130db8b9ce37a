#include "backends/nbd_device.hpp"

#include <libnbd.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "backends/network_device_thread.hpp"
#include "common/current_context.hpp"
#include "common/per_thread_pool.hpp"
#include "common/post_back.hpp"

namespace volgate::backends {
namespace {

// libnbd refuses reads and writes above 64 MiB; our own front-ends send at most 32 MiB.
constexpr uint64_t kMaxIoBytes = 32u << 20;
// Trims, zeroes and cache hints carry a 32-bit length on the wire.
constexpr uint64_t kMaxEffectBytes = 1u << 30;
// How long reconnection attempts wait between tries once the first one failed.
constexpr auto kFirstRetry = std::chrono::milliseconds(100);
constexpr auto kMaxRetry = std::chrono::seconds(1);

// nbds://: TLS required, with the credentials the export names (libnbd reads the files during
// the handshake). -1 with libnbd's error set.
int require_tls(nbd_handle* h, const NbdOptions& o) {
  if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) == -1) return -1;
  if (!o.tls_certificates.empty() && nbd_set_tls_certificates(h, o.tls_certificates.c_str()) == -1) return -1;
  if (!o.tls_psk_file.empty() && nbd_set_tls_psk_file(h, o.tls_psk_file.c_str()) == -1) return -1;
  if (!o.tls_username.empty() && nbd_set_tls_username(h, o.tls_username.c_str()) == -1) return -1;
  return 0;
}

// The upstream's answer when a connection broke under a request: worth sending again.
bool connection_error(int error) { return error == ENOTCONN || error == ESHUTDOWN; }

}  // namespace

// One address nbd://HOST resolved to.
struct NbdDevice::Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
};

namespace {

std::string numeric_host(const NbdDevice::Address& address) {
  char host[NI_MAXHOST];
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&address.storage), address.length, host, sizeof host,
                    nullptr, 0, NI_NUMERICHOST) != 0)
    return "?";
  return host;
}

}  // namespace

struct NbdDevice::Request {
  Kind kind;
  uint64_t offset;
  uint64_t length;
  std::byte* data = nullptr;  // read and write only
  uint32_t flags = 0;         // LIBNBD_CMD_FLAG_*
  Completion done;
  ExtentsCompletion extents_done;
  std::vector<Extent> extents;
  boost::asio::io_context* caller = nullptr;
  PostBack post_back;  // to the caller's io_context, when it is not the device's own
  size_t outstanding = 0;
  int error = 0;
};

// One libnbd command: a request, or the piece of one that fits the upstream's limits.
struct NbdDevice::Part {
  NbdDevice* device = nullptr;
  Request* request = nullptr;
  Kind kind = Kind::read;
  uint64_t offset = 0;
  uint64_t length = 0;
  Connection* connection = nullptr;  // while libnbd holds it
  Part* prev = nullptr;              // in connection->parts
  Part* next = nullptr;
};

// One upstream connection: a libnbd handle and the descriptor we wait on for it.
struct NbdDevice::Connection {
  enum class State { down, connecting, up };

  Connection(NbdDevice& device, size_t index)
      : device(device), index(index), socket(device.io_), timer(device.io_) {}

  NbdDevice& device;
  const size_t index;
  bool enabled = false;   // used at all (more than one only with multi-conn)
  bool starting = false;  // its first connect: failures go to the opener
  State state = State::down;
  nbd_handle* handle = nullptr;
  boost::asio::posix::stream_descriptor socket;  // libnbd's descriptor, never closed by us
  int wrapped_fd = -1;
  uint64_t generation = 0;  // waits armed before a change of descriptor are stale
  bool reading = false;     // a wait is armed
  bool writing = false;
  bool dirty = false;       // libnbd may have work: look again before sleeping
  boost::asio::steady_timer timer;  // connect deadline, or the next reconnection attempt
  std::chrono::milliseconds retry_after = kFirstRetry;
  std::string last_error;
  Part* parts = nullptr;  // commands in flight
  size_t in_flight = 0;
  bool was_up = false;              // has been up once: later ups are reconnections
  uint64_t attempt = 0;             // connect() calls: deadlines of earlier attempts are stale
  Clock::time_point deadline{};     // of this attempt (connect-timeout)
  bool resolving = false;           // nbd://: a resolution of the name runs for it
  std::vector<Address> addresses;   // nbd://: this attempt's, tried in turn
  size_t next_address = 0;
  Clock::time_point lost_at{};
  bool reported_lost = false;

  void link(Part* part) {
    part->connection = this;
    part->prev = nullptr;
    part->next = parts;
    if (parts) parts->prev = part;
    parts = part;
    ++in_flight;
  }
  void unlink(Part* part) {
    if (part->prev) part->prev->next = part->next;
    else parts = part->next;
    if (part->next) part->next->prev = part->prev;
    part->connection = nullptr;
    part->prev = part->next = nullptr;
    --in_flight;
  }

  // Wraps libnbd's current descriptor for Asio, which must never close it.
  void wrap(int fd) {
    ++generation;
    reading = writing = false;
    boost::system::error_code ec;
    if (socket.is_open()) socket.release();
    wrapped_fd = -1;
    if (fd < 0) return;
    socket.assign(fd, ec);
    if (!ec) wrapped_fd = fd;
    else last_error = "cannot watch the connection's socket: " + ec.message();
  }

  // Drops the handle; commands libnbd still held never complete, so they are answered here.
  void close() {
    wrap(-1);
    timer.cancel();
    if (handle) {
      if (state == State::up) nbd_aio_disconnect(handle, 0);  // a courtesy: sent if it fits now
      nbd_close(handle);
      handle = nullptr;
    }
    while (parts) {
      Part* part = parts;
      unlink(part);
      device.finished_.emplace_back(part, ENOTCONN);
    }
    state = State::down;
  }
};

std::shared_ptr<NbdDevice> NbdDevice::open(const NbdOptions& options) {
  // volgate connects nbd:// upstreams to the addresses it resolved itself, and this libnbd
  // (1.14) then knows no host name to check an x509 certificate against: refused rather than
  // half-verified. A pre-shared key, or x509 over a unix socket, has no host name to check.
  if (options.tls && options.socket.empty() && options.tls_psk_file.empty())
    throw std::runtime_error("nbd upstream " + options.uri +
                             ": x509 TLS to a TCP upstream is not supported (its certificate's host name "
                             "could not be checked): use tls-psk-file= or nbds+unix://");
  std::shared_ptr<NbdDevice> device(new NbdDevice(options));
  device->start(options.connections);
  return device;
}

NbdDevice::NbdDevice(const NbdOptions& options) : options_(options), give_up_timer_(io_) {
  for (size_t i = 0; i < std::max(1u, options.connections); ++i)
    connections_.push_back(std::make_unique<Connection>(*this, i));
}

NbdDevice::~NbdDevice() { stop(); }

void NbdDevice::start(size_t connections) {
  resolver_link_->device = this;
  keep_running_.emplace(io_.get_executor());
  thread_ = start_network_device_thread(io_, "volgate-nbd");

  // Connects `count` connections from `first` on, and waits for all of them to settle.
  auto connect_some = [this](size_t first, size_t count) {
    {
      std::lock_guard lock(start_mutex_);
      start_pending_ = count;
    }
    boost::asio::post(io_, [this, first, count] {
      for (size_t i = first; i < first + count; ++i) {
        connections_[i]->enabled = true;
        connections_[i]->starting = true;
        connect(*connections_[i]);
      }
      settle();
    });
    std::unique_lock lock(start_mutex_);
    // The device's own timer ends every attempt after connect-timeout; this is a backstop.
    bool settled = start_cv_.wait_for(lock, options_.connect_timeout + std::chrono::seconds(5),
                                      [this] { return start_pending_ == 0; });
    if (!settled && start_error_.empty())
      start_error_ = "no answer within " + std::to_string(options_.connect_timeout.count()) + " s";
    if (!start_error_.empty()) {
      std::string why = start_error_;
      lock.unlock();
      stop();
      throw std::runtime_error("nbd upstream " + options_.uri + ": " + why);
    }
  };

  connect_some(0, 1);
  size_t wanted = std::min(connections, connections_.size());
  if (wanted > 1 && !caps_.can_multi_conn) {
    spdlog::info("nbd upstream {}: the server does not advertise multi-conn, so 1 connection "
                 "instead of the {} asked for",
                 options_.uri, wanted);
  } else if (wanted > 1) {
    connect_some(1, wanted - 1);
  }
}

void NbdDevice::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(resolver_link_->mutex);
    resolver_link_->device = nullptr;  // a resolution still running answers nobody
  }
  boost::asio::post(io_, [this] {
    stopping_ = true;
    give_up_timer_.cancel();
    // Nothing should be waiting (the server drains before it stops), but never leave a caller
    // without an answer.
    fail_waiting(errno_code(EIO));
    for (auto& connection : connections_) {
      connection->close();
      connection->timer.cancel();
    }
    settle();
    keep_running_.reset();
  });
  thread_.join();
}

// ---- requests, on any thread ----

NbdDevice::Request* NbdDevice::new_request(Kind kind, uint64_t offset, uint64_t length) {
  auto* request = PerThreadPool<Request>::make();
  request->kind = kind;
  request->offset = offset;
  request->length = length;
  return request;
}

void NbdDevice::submit(Request* request) {
  boost::asio::io_context& caller = current_io_context();
  request->caller = &caller;
  if (&caller == &io_) return begin(request);
  request->post_back.expect(caller);
  boost::asio::post(io_, [this, request] { begin(request); });
}

void NbdDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  auto* request = new_request(Kind::read, offset, data.size());
  request->data = data.data();
  request->done = std::move(done);
  submit(request);
}

void NbdDevice::write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
                      Completion done) {
  auto* request = new_request(Kind::write, offset, data.size());
  // libnbd only reads from it; its API takes a const pointer too.
  request->data = const_cast<std::byte*>(data.data());
  if (flags.fua) request->flags |= LIBNBD_CMD_FLAG_FUA;  // only where the upstream has FUA
  request->done = std::move(done);
  submit(request);
}

void NbdDevice::flush(Completion done) {
  auto* request = new_request(Kind::flush, 0, 0);
  request->done = std::move(done);
  submit(request);
}

void NbdDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  auto* request = new_request(Kind::trim, offset, length);
  request->done = std::move(done);
  submit(request);
}

void NbdDevice::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) {
  // An upstream without WRITE_ZEROES: the device front writes them.
  if (!upstream_zero_) return done(errno_code(ENOTSUP));
  auto* request = new_request(Kind::zero, offset, length);
  if (!flags.may_trim) request->flags |= LIBNBD_CMD_FLAG_NO_HOLE;
  if (flags.fast_only) request->flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
  if (flags.fua) request->flags |= LIBNBD_CMD_FLAG_FUA;
  request->done = std::move(done);
  submit(request);
}

void NbdDevice::block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) {
  auto* request = new_request(Kind::block_status, offset, std::min(length, kMaxEffectBytes));
  request->extents_done = std::move(done);
  submit(request);
}

void NbdDevice::cache(uint64_t offset, uint64_t length, Completion done) {
  auto* request = new_request(Kind::cache, offset, length);
  request->done = std::move(done);
  submit(request);
}

// ---- the device's thread ----

NbdDevice::Part* NbdDevice::new_part(Request* request, uint64_t offset, uint64_t length) {
  std::unique_ptr<Part> part;
  if (free_parts_.empty()) {
    part = std::make_unique<Part>();
  } else {
    part = std::move(free_parts_.back());
    free_parts_.pop_back();
  }
  part->device = this;
  part->request = request;
  part->kind = request->kind;
  part->offset = offset;
  part->length = length;
  return part.release();
}

void NbdDevice::free_part(Part* part) {
  // Bounded: requests in flight are bounded by the front-ends, and so their parts.
  free_parts_.emplace_back(part);
}

void NbdDevice::begin(Request* request) {
  if (stopping_) {
    request->error = EIO;
    return finish(request);
  }
  uint64_t chunk = kMaxEffectBytes;
  if (request->kind == Kind::read || request->kind == Kind::write)
    chunk = max_io_bytes_;
  const bool whole = request->kind == Kind::flush || request->kind == Kind::block_status;
  const uint64_t parts = whole ? 1 : (request->length + chunk - 1) / chunk;
  if (parts == 0) return finish(request);
  request->outstanding = parts;
  if (whole) {
    issue(new_part(request, request->offset, request->length));
  } else {
    for (uint64_t at = 0; at < request->length; at += chunk)
      issue(new_part(request, request->offset + at, std::min(chunk, request->length - at)));
  }
  settle();
}

NbdDevice::Connection* NbdDevice::pick_connection() {
  Connection* best = nullptr;
  const size_t count = connections_.size();
  for (size_t i = 0; i < count; ++i) {
    Connection& c = *connections_[(next_connection_ + i) % count];
    if (c.state != Connection::State::up) continue;
    if (!best || c.in_flight < best->in_flight) best = &c;
  }
  if (best) next_connection_ = best->index + 1;
  return best;
}

void NbdDevice::issue(Part* part) {
  if (stopping_) {
    finished_.emplace_back(part, EIO);
    return;
  }
  Connection* connection = pick_connection();
  if (!connection) {
    if (failing_fast_ || options_.reconnect_delay.count() == 0) finished_.emplace_back(part, EIO);
    else waiting_.push_back(part);
    return;
  }
  Request& request = *part->request;
  if (part->kind == Kind::block_status) request.extents.clear();  // a retry starts afresh
  connection->link(part);
  connection->dirty = true;
  nbd_handle* h = connection->handle;
  nbd_completion_callback completed{
      .callback = [](void* user_data, int* error) {
        // libnbd calls this with its handle lock held (from inside nbd_aio_* or
        // nbd_aio_notify_*, on this thread): it only notes the outcome for settle().
        auto* p = static_cast<Part*>(user_data);
        p->connection->unlink(p);
        p->device->finished_.emplace_back(p, *error);
        return 1;  // retire the command: nobody asks libnbd about it later
      },
      .user_data = part,
      .free = nullptr};
  const bool moves_data = part->kind == Kind::read || part->kind == Kind::write;
  std::byte* data = moves_data && request.data ? request.data + (part->offset - request.offset) : nullptr;
  int64_t cookie = -1;
  switch (part->kind) {
    case Kind::read:
      cookie = nbd_aio_pread(h, data, part->length, part->offset, completed, 0);
      break;
    case Kind::write:
      cookie = nbd_aio_pwrite(h, data, part->length,
                              part->offset, completed, request.flags);
      break;
    case Kind::flush:
      cookie = nbd_aio_flush(h, completed, 0);
      break;
    case Kind::trim:
      cookie = nbd_aio_trim(h, part->length, part->offset, completed, 0);
      break;
    case Kind::zero:
      cookie = nbd_aio_zero(h, part->length, part->offset, completed, request.flags);
      break;
    case Kind::cache:
      cookie = nbd_aio_cache(h, part->length, part->offset, completed, 0);
      break;
    case Kind::block_status: {
      nbd_extent_callback extents{
          .callback = [](void* user_data, const char* context, uint64_t, uint32_t* entries,
                         size_t count, int*) {
            if (std::strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) return 0;
            auto* p = static_cast<Part*>(user_data);
            for (size_t i = 0; i + 1 < count; i += 2)
              p->request->extents.push_back({entries[i], (entries[i + 1] & LIBNBD_STATE_HOLE) != 0,
                                             (entries[i + 1] & LIBNBD_STATE_ZERO) != 0});
            return 0;
          },
          .user_data = part,
          .free = nullptr};
      cookie = nbd_aio_block_status(h, part->length, part->offset, extents, completed, 0);
      break;
    }
  }
  if (cookie == -1) {
    // Not queued: libnbd will not call back. A handle that died under us is a lost
    // connection (pump() notices), anything else the request's own fault.
    int error = nbd_get_errno();
    std::string why = nbd_get_error() ? nbd_get_error() : "";
    const bool dead = nbd_aio_is_dead(h) || nbd_aio_is_closed(h);
    spdlog::debug("nbd upstream {}: command not sent: {}", options_.uri, why);
    connection->unlink(part);
    finished_.emplace_back(part, dead ? ENOTCONN : (error ? error : EIO));
    // Lost now, before the part is sent again: left "up", this connection would be picked for
    // the retry and refuse it again, forever (seen when an upstream died under fio).
    if (dead) connection_lost(*connection, why.empty() ? "the connection died" : why);
  }
}

void NbdDevice::part_done(Part* part, int error) {
  Request* request = part->request;
  if (error && connection_error(error) && options_.reconnect_delay.count() > 0 && !failing_fast_ &&
      !stopping_)
    return issue(part);  // again, on another connection or once this one is back
  if (error) {
    if (connection_error(error)) error = EIO;
    if (!request->error) request->error = error;
  }
  free_part(part);
  if (--request->outstanding == 0) finish(request);
}

void NbdDevice::finish(Request* request) {
  std::error_code ec = request->error ? errno_code(request->error) : std::error_code{};
  if (!ec && request->kind == Kind::block_status) {
    // The server may describe beyond the range asked; never more than that goes back.
    uint64_t covered = 0;
    size_t keep = 0;
    for (; keep < request->extents.size() && covered < request->length; ++keep) {
      Extent& e = request->extents[keep];
      e.length = std::min(e.length, request->length - covered);
      covered += e.length;
    }
    request->extents.resize(keep);
    std::erase_if(request->extents, [](const Extent& e) { return e.length == 0; });
    if (request->extents.empty()) ec = errno_code(EIO);  // "never nothing"
  }
  auto deliver = [request, ec] {  // on the thread that made the request
    if (request->kind == Kind::block_status) {
      ExtentsCompletion done = std::move(request->extents_done);
      std::vector<Extent> extents = std::move(request->extents);
      PerThreadPool<Request>::destroy(request);
      done(ec, std::move(extents));
    } else {
      Completion done = std::move(request->done);
      PerThreadPool<Request>::destroy(request);
      done(ec);
    }
  };
  if (request->caller == &io_) return deliver();
  request->post_back.post(std::move(deliver));
}

void NbdDevice::fail_waiting(std::error_code ec) {
  for (Part* part : std::exchange(waiting_, {})) finished_.emplace_back(part, ec.value());
}

// ---- connections, on the device's thread ----

void NbdDevice::connect(Connection& c) {
  c.last_error.clear();
  c.state = Connection::State::connecting;
  ++c.attempt;
  c.deadline = Clock::now() + options_.connect_timeout;
  arm_deadline(c);
  if (!options_.socket.empty()) return open_handle(c, nullptr);
  resolve(c);  // nbd://HOST: the name first, every attempt (it may have moved)
}

void NbdDevice::arm_deadline(Connection& c) {
  c.timer.expires_at(c.deadline);
  c.timer.async_wait([this, &c, attempt = c.attempt](boost::system::error_code ec) {
    if (ec || c.attempt != attempt || c.state != Connection::State::connecting) return;
    connect_failed(c, (c.resolving && !c.handle ? "resolving '" + options_.host + "' took longer than " : "no answer within ") +
                          std::to_string(options_.connect_timeout.count()) + " s (connect-timeout)",
                   false);
    settle();
  });
}

void NbdDevice::resolve(Connection& c) {
  // One resolution per connection at a time: an attempt that finds one running (its own
  // attempt gave up on it) takes its answer.
  if (c.resolving) return;
  c.resolving = true;
  std::string host = options_.host;
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::thread([link = resolver_link_, &c, host, port = std::to_string(options_.port)] {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
    std::string error = rc == 0 ? "" : rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    std::vector<Address> addresses;
    for (addrinfo* a = found; a; a = a->ai_next) {
      if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
      Address address;
      std::memcpy(&address.storage, a->ai_addr, a->ai_addrlen);
      address.length = a->ai_addrlen;
      addresses.push_back(address);
    }
    if (found) ::freeaddrinfo(found);
    if (rc == 0 && addresses.empty()) error = "no address";
    std::lock_guard lock(link->mutex);
    if (!link->device) return;
    NbdDevice* device = link->device;
    boost::asio::post(device->io_, [device, &c, addresses = std::move(addresses), error]() mutable {
      device->resolved(c, std::move(addresses), error);
    });
  }).detach();
}

void NbdDevice::resolved(Connection& c, std::vector<Address> addresses, const std::string& error) {
  c.resolving = false;
  // The attempt that asked may have ended meanwhile (connect-timeout); a later one takes it.
  if (stopping_ || c.state != Connection::State::connecting || c.handle) return;
  if (!error.empty()) {
    connect_failed(c, "cannot resolve '" + options_.host + "': " + error, false);
    return settle();
  }
  c.addresses = std::move(addresses);
  c.next_address = 0;
  open_handle(c, &c.addresses[c.next_address++]);
  settle();
}

void NbdDevice::open_handle(Connection& c, const Address* address) {
  c.handle = nbd_create();
  if (!c.handle) return connect_failed(c, nbd_get_error(), false);
  nbd_set_handle_name(c.handle, ("volgate-" + std::to_string(c.index)).c_str());
  // Read buffers are the front-end's, and a failed read's buffer is never sent: libnbd's
  // zeroing of each before the read (its default, against leaking memory) is a memset of
  // every byte read for nothing.
  nbd_set_pread_initialize(c.handle, false);
  int r = options_.tls ? require_tls(c.handle, options_) : 0;
  if (r != -1) r = nbd_add_meta_context(c.handle, LIBNBD_CONTEXT_BASE_ALLOCATION);
  if (r != -1 && address) {
    r = nbd_set_export_name(c.handle, options_.export_name.c_str());
    if (r != -1) r = nbd_aio_connect(c.handle, reinterpret_cast<const sockaddr*>(&address->storage), address->length);
  } else if (r != -1) {
    r = nbd_aio_connect_uri(c.handle, options_.uri.c_str());
  }
  if (r == -1) return connect_failed(c, nbd_get_error());
  c.dirty = true;
}

bool NbdDevice::pump(Connection& c) {
  if (!c.handle) return false;
  nbd_handle* h = c.handle;
  if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
    std::string why = c.last_error.empty() ? "the server closed the connection" : c.last_error;
    if (c.state == Connection::State::connecting) connect_failed(c, why);
    else connection_lost(c, why);
    return true;
  }
  if (c.state == Connection::State::connecting && nbd_aio_is_ready(h)) {
    connection_up(c);
    return true;
  }
  const int fd = nbd_aio_get_fd(h);
  if (fd < 0) return false;
  // While connecting, libnbd may close a socket and open another (the next address of a
  // host), possibly under the same number: wrap it afresh at every step until it is up.
  if (fd != c.wrapped_fd || c.state == Connection::State::connecting) c.wrap(fd);
  const unsigned direction = nbd_aio_get_direction(h);
  // Asio's epoll is edge-triggered, but libnbd reads one reply per notification and may leave
  // more in the socket: ask the socket itself (level-triggered) before sleeping on it.
  pollfd p{fd, static_cast<short>(((direction & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                                  ((direction & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)),
           0};
  if (p.events == 0 || ::poll(&p, 1, 0) <= 0) return false;
  int r = 0;
  if ((direction & LIBNBD_AIO_DIRECTION_READ) && (p.revents & (POLLIN | POLLHUP | POLLERR)))
    r = nbd_aio_notify_read(h);
  else if ((direction & LIBNBD_AIO_DIRECTION_WRITE) && (p.revents & (POLLOUT | POLLHUP | POLLERR)))
    r = nbd_aio_notify_write(h);
  else
    return false;
  if (r == -1) c.last_error = nbd_get_error();
  return true;
}

void NbdDevice::arm(Connection& c) {
  if (!c.handle || c.wrapped_fd < 0) return;
  const unsigned direction = nbd_aio_get_direction(c.handle);
  auto wait = [this, &c](boost::asio::posix::descriptor_base::wait_type type, bool& armed) {
    armed = true;
    c.socket.async_wait(type, [this, &c, &armed, generation = c.generation](boost::system::error_code ec) {
      if (generation != c.generation) return;  // a descriptor since replaced or dropped
      armed = false;
      if (ec) return;
      c.dirty = true;
      settle();
    });
  };
  if ((direction & LIBNBD_AIO_DIRECTION_READ) && !c.reading)
    wait(boost::asio::posix::descriptor_base::wait_read, c.reading);
  if ((direction & LIBNBD_AIO_DIRECTION_WRITE) && !c.writing)
    wait(boost::asio::posix::descriptor_base::wait_write, c.writing);
}

void NbdDevice::settle() {
  if (settling_) return;  // called back from a completion: the loop below goes on
  settling_ = true;
  for (size_t round = 0;; ++round) {
    bool moved = false;
    // part_done() may add to finished_ (a request's flush, a completion's new request).
    for (size_t i = 0; i < finished_.size(); ++i) {
      auto [part, error] = finished_[i];
      part_done(part, error);
      moved = true;
    }
    finished_.clear();
    for (auto& c : connections_) {
      if (!c->dirty) continue;
      c->dirty = pump(*c);
      moved = moved || c->dirty;
    }
    if (!moved) break;
    if (round == 1000) {
      // Busy upstreams: let the other handlers on this thread (sessions) run in between.
      for (auto& c : connections_) c->dirty = true;
      boost::asio::post(io_, [this] { settle(); });
      break;
    }
  }
  for (auto& c : connections_) arm(*c);
  settling_ = false;
}

void NbdDevice::read_upstream_facts(Connection& c) {
  nbd_handle* h = c.handle;
  int64_t size = nbd_get_size(h);
  size_.store(size < 0 ? 0 : static_cast<uint64_t>(size), std::memory_order_relaxed);
  DeviceCapabilities caps;
  caps.read_only = options_.read_only || nbd_is_read_only(h) == 1;
  caps.can_flush = nbd_can_flush(h) == 1;
  caps.can_fua = nbd_can_fua(h) == 1;
  caps.can_trim = nbd_can_trim(h) == 1;
  caps.can_zero = nbd_can_zero(h) == 1;
  caps.can_fast_zero = nbd_can_fast_zero(h) == 1;
  caps.can_cache = nbd_can_cache(h) == 1;
  caps.can_block_status = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  caps.can_multi_conn = nbd_can_multi_conn(h) == 1;
  caps.fast_completions = false;  // a round trip to another process or host
  const int64_t minimum = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
  const int64_t preferred = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
  const int64_t maximum = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  caps.min_block_size = minimum > 0 ? static_cast<uint32_t>(minimum) : 1;
  caps.preferred_block_size =
      std::max<uint32_t>(caps.min_block_size, preferred > 0 ? static_cast<uint32_t>(preferred) : 4096);
  uint64_t max_io = maximum > 0 ? std::min<uint64_t>(maximum, kMaxIoBytes) : kMaxIoBytes;
  max_io_bytes_ = std::max<uint64_t>(max_io / caps.min_block_size * caps.min_block_size, caps.min_block_size);
  upstream_zero_ = caps.can_zero;
  caps_ = caps;
  spdlog::info("nbd upstream {}: {} bytes{}, block sizes {}/{}/{}{}{}{}{}{}", options_.uri,
               size_.load(std::memory_order_relaxed), caps.read_only ? ", read-only" : "",
               caps.min_block_size, caps.preferred_block_size, max_io_bytes_,
               caps.can_trim ? ", trim" : "", caps.can_zero ? ", zero" : "",
               caps.can_fua ? ", fua" : "", caps.can_block_status ? ", block status" : "",
               caps.can_multi_conn ? ", multi-conn" : "");
}

void NbdDevice::connection_up(Connection& c) {
  c.state = Connection::State::up;
  c.timer.cancel();
  c.retry_after = kFirstRetry;
  up_.fetch_add(1, std::memory_order_relaxed);
  if (c.starting) {
    if (c.index == 0) read_upstream_facts(c);
    c.starting = false;
    std::lock_guard lock(start_mutex_);
    --start_pending_;
    start_cv_.notify_all();
  } else {
    reconnected(c);
  }
  c.was_up = true;
  failing_fast_ = false;
  give_up_timer_.cancel();
  // Whatever waited for a connection goes now (onto this one, or shared out).
  for (Part* part : std::exchange(waiting_, {})) issue(part);
}

void NbdDevice::reconnected(Connection& c) {
  int64_t size = nbd_get_size(c.handle);
  if (size >= 0 && static_cast<uint64_t>(size) != this->size()) {
    spdlog::warn("nbd upstream {}: the export's size changed from {} to {} bytes", options_.uri,
                 this->size(), size);
    size_.store(static_cast<uint64_t>(size), std::memory_order_relaxed);
  }
  if (c.reported_lost) {
    auto outage = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - c.lost_at);
    spdlog::info("nbd upstream {}: connection {} re-established after {:.1f} s", options_.uri,
                 c.index, outage.count() / 1000.0);
    c.reported_lost = false;
  }
}

void NbdDevice::connection_lost(Connection& c, const std::string& why) {
  up_.fetch_sub(1, std::memory_order_relaxed);
  c.close();  // its commands come back as ENOTCONN: sent again or failed below
  c.lost_at = Clock::now();
  c.reported_lost = true;
  const bool none_left = up_.load(std::memory_order_relaxed) == 0;
  if (options_.reconnect_delay.count() == 0) {
    spdlog::warn("nbd upstream {}: connection {} lost ({}); reconnecting, requests fail with EIO "
                 "meanwhile (no reconnect-delay)",
                 options_.uri, c.index, why);
  } else {
    spdlog::warn("nbd upstream {}: connection {} lost ({}); reconnecting, requests wait up to {} s",
                 options_.uri, c.index, why, options_.reconnect_delay.count());
  }
  if (none_left && !stopping_) {
    lost_since_ = c.lost_at;
    if (options_.reconnect_delay.count() == 0) {
      failing_fast_ = true;
      fail_waiting(errno_code(EIO));
    } else {
      give_up_timer_.expires_after(options_.reconnect_delay);
      give_up_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec || up_.load(std::memory_order_relaxed) > 0 || stopping_) return;
        spdlog::warn("nbd upstream {}: no connection for {} s (reconnect-delay): requests fail with "
                     "EIO until it is back",
                     options_.uri, options_.reconnect_delay.count());
        failing_fast_ = true;
        fail_waiting(errno_code(EIO));
        settle();
      });
    }
  }
  if (!stopping_) {
    c.retry_after = kFirstRetry;
    c.timer.expires_after(std::chrono::milliseconds(0));
    c.timer.async_wait([this, &c](boost::system::error_code ec) {
      if (ec || stopping_ || c.handle) return;
      connect(c);
      settle();
    });
  }
}

void NbdDevice::connect_failed(Connection& c, const std::string& why, bool try_next) {
  c.close();
  if (try_next && !stopping_ && c.next_address < c.addresses.size()) {
    // The name's next address, within the same attempt and deadline (as libnbd does).
    spdlog::debug("nbd upstream {}: connection {}: address {} of {} ({}) failed ({}); trying the next",
                  options_.uri, c.index, c.next_address, c.addresses.size(),
                  numeric_host(c.addresses[c.next_address - 1]), why);
    c.state = Connection::State::connecting;
    c.last_error.clear();
    arm_deadline(c);
    return open_handle(c, &c.addresses[c.next_address++]);
  }
  c.addresses.clear();
  c.next_address = 0;
  if (c.starting) {
    c.starting = false;
    std::lock_guard lock(start_mutex_);
    if (start_error_.empty()) start_error_ = why;
    --start_pending_;
    start_cv_.notify_all();
    return;
  }
  if (stopping_) return;
  spdlog::debug("nbd upstream {}: connection {} not re-established yet: {}", options_.uri, c.index, why);
  schedule_reconnect(c);
}

void NbdDevice::schedule_reconnect(Connection& c) {
  c.timer.expires_after(c.retry_after);
  c.retry_after = std::min<std::chrono::milliseconds>(c.retry_after * 2, kMaxRetry);
  c.timer.async_wait([this, &c](boost::system::error_code ec) {
    if (ec || stopping_ || c.handle) return;
    connect(c);
    settle();
  });
}

}  // namespace volgate::backends
