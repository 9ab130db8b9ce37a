#include "nbd/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/current_context.hpp"

namespace volgate::nbd {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;

namespace {

constexpr size_t kReceiveBufferSize = 256 * 1024;

// After a WRITE this large, the next header is read alone: the next request is likely another
// large write, whose payload then goes from the socket straight into its own buffer instead of
// filling the receive buffer behind the header and being copied out of it (up to 256 KiB a
// request). The recv count stays the same: the payload's own read comes next either way.
constexpr size_t kLargeWriteBytes = 64 * 1024;

uint32_t to_wire_error(std::error_code ec) { return nbd_error_of(ec.value()); }

const char* command_name(uint16_t type) {
  switch (type) {
    case kCmdRead: return "read";
    case kCmdWrite: return "write";
    case kCmdDisc: return "disconnect";
    case kCmdFlush: return "flush";
    case kCmdTrim: return "trim";
    case kCmdCache: return "cache";
    case kCmdWriteZeroes: return "write_zeroes";
    case kCmdBlockStatus: return "block_status";
    default: return "unknown command";
  }
}

}  // namespace

struct Session::Request {
  Session* session = nullptr;
  RequestHeader header{};
  std::chrono::steady_clock::time_point dispatched{};  // when timed (Session::timed_)
  Buffer data;  // WRITE payload, or READ result
  // Reply header: a simple reply (16 bytes), or a structured chunk header (20) plus, for
  // OFFSET_DATA, the 8-byte offset.
  std::array<std::byte, kStructuredHeaderSize + 8> head{};
  size_t head_size = 0;
  bool send_data = false;
  Bytes extra;  // block status or error chunk, already complete
};

Session::Session(Socket socket, const SessionShared& shared, SessionRegistry& registry,
                 std::string peer, ConnectionLimit::Slot slot)
    : socket_(std::move(socket)),
      shared_(shared),
      registry_(registry),
      peer_(std::move(peer)),
      slot_(std::move(slot)),
      negotiation_(shared.exports, shared.tls_mode),
      rx_(new std::byte[kReceiveBufferSize]),
      wake_(socket_.get_executor()),
      budget_waiter_([this] { budget_released(); }),
      handshake_timer_(socket_.get_executor()) {
  registry_.add(this);
}

Session::Session(Socket socket, const SessionShared& shared, SessionRegistry& registry,
                 std::string peer, Handshake handshake)
    : Session(std::move(socket), shared, registry, std::move(peer), std::move(handshake.slot)) {
  moved_in_ = true;
  negotiated_ = handshake.negotiated;
  tls_ = std::move(handshake.tls);
  std::copy(handshake.unparsed.begin(), handshake.unparsed.end(), rx_.get());  // often empty
  rx_end_ = handshake.unparsed.size();
  received_ = rx_end_;
}

Session::~Session() {
  shared_.buffers.cancel_wait(budget_waiter_);  // never queued by now; dangling, it would be fatal
  if (attached_) shared_.exports.detach(*attached_);
  if (poller_) registry_.remove_poller();
  registry_.remove(this);
}

void Session::start() {
  // start_write() tries sendmsg directly and must get EAGAIN rather than block the thread.
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  if (ec) spdlog::warn("{}: cannot make the socket non-blocking: {}", peer_, ec.message());
  // The coroutine frame owns a reference from the start: it begins running only later.
  asio::co_spawn(socket_.get_executor(), run(shared_from_this()), asio::detached);
}

void Session::shutdown() {
  // A released connection is the successor's: a shutdown() of the socket would end it there.
  if (released_ || stopping_ || receive_limit_) return;
  negotiation_.begin_shutdown();
  // The client may send requests once the export is chosen (GO answered, or EXPORT_NAME read).
  const bool handshake_over = negotiated_.chosen || negotiation_.result().chosen;
  if (!handshake_over) {
    stopping_ = true;  // a handshake has nothing in flight: it ends
  } else {
    // Every request the client has sent by now is in flight, whether we have parsed it, hold it
    // unparsed in rx_ or the kernel still queues it: those are read, served and answered, and
    // reading stops where they end (see transmit()). FIONREAD counts the kernel's part.
    int queued = 0;
    if (::ioctl(socket_.native_handle(), FIONREAD, &queued) != 0 || queued < 0) queued = 0;
    // Over TLS the kernel queues ciphertext, which is more than the plaintext it holds (record
    // headers and tags): the limit then lies past the end, and reading ends at the EOF that
    // shutting the receive side gives instead. A record cut in the middle decrypts to nothing.
    receive_limit_ = received_ + static_cast<uint64_t>(queued) + (tls_ ? tls_->pending() : 0);
  }
  // Ending the receive side wakes a pending read: it still gets what the kernel had queued,
  // then EOF (on a unix socket the client cannot add more; TCP may, and receive_limit_ ignores
  // it). Replies can still go out.
  boost::system::error_code ignored;
  socket_.shutdown(Socket::shutdown_receive, ignored);
  signal();
}

void Session::abort() {
  if (released_) return;  // as in shutdown()
  stopping_ = true;
  broken_ = true;
  close_socket();
  signal();
}

awaitable<void> Session::run(std::shared_ptr<Session> self) {
  (void)self;  // the session lives until this coroutine ends
  try {
    bool negotiated = moved_in_;
    if (!negotiated) {
      start_handshake_timer();
      negotiating_ = true;
      negotiated = co_await negotiate();
      negotiating_ = false;
      handshake_timer_.cancel();  // its handler may be queued already: hence negotiating_
    }
    // A session asked to pause in its handshake stays here: moving now would slip past the pause.
    if (negotiated && !handshake_timed_out_) {
      if ((moved_in_ || pause_ || !move_home()) && attach()) {
        while (co_await transmit())
          if (!co_await stay_paused()) break;
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("{}: session failed: {}", peer_, e.what());
  }
  // Wait for every request in flight: their completions reference this session.
  while (requests_in_flight_ > 0 || writing_ || write_posted_) co_await wait_until_signalled();
  if (pause_ && !pause_reported_) {
    pause_reported_ = true;
    pause_->closed();
  }
  if (moved_out_) co_return;  // the connection lives on in the session on the device's thread
  if (released_) {
    // The successor holds a duplicate of the descriptor: closing ours ends nothing, while
    // shutdown() (close_socket) would end the connection for both.
    boost::system::error_code ignored;
    socket_.close(ignored);
    co_return;
  }
  close_socket();
  spdlog::debug("{}: connection closed", peer_);
}

// ---------------------------------------------------------------------------------------------
// Receiving

awaitable<bool> Session::fill(size_t needed) {
  if (rx_end_ - rx_begin_ >= needed) co_return true;
  // About to wait for the client: send what is ready now rather than in a posted handler,
  // saving an event-loop turn per batch.
  start_write();
  if (rx_begin_ == rx_end_) {
    rx_begin_ = rx_end_ = 0;
  } else if (kReceiveBufferSize - rx_begin_ < needed) {
    std::memmove(rx_.get(), rx_.get() + rx_begin_, rx_end_ - rx_begin_);
    rx_end_ -= rx_begin_;
    rx_begin_ = 0;
  }
  // Read no further than `needed` when a large write's payload likely follows (see above).
  const size_t read_limit = awaiting_header_ && after_large_write_ ? rx_begin_ + needed : kReceiveBufferSize;
  while (rx_end_ - rx_begin_ < needed) {
    // Waiting for the next request header is where a pause for a hand-over stops reading.
    if (awaiting_header_ && pause_) {
      header_wait_interrupted_ = true;
      co_return false;
    }
    boost::system::error_code ec;
    size_t n = 0;
    if (tls_) {
      n = co_await tls_read_some(rx_.get() + rx_end_, read_limit - rx_end_, ec);
    } else {
      n = co_await socket_.async_read_some(
          asio::buffer(rx_.get() + rx_end_, read_limit - rx_end_),
          asio::redirect_error(use_awaitable, ec));
    }
    // interrupt_header_wait() cancelled the read; a resume() may have come since.
    if (ec == asio::error::operation_aborted && awaiting_header_) continue;
    if (ec || n == 0) co_return false;
    rx_end_ += n;
    received_ += n;
  }
  co_return true;
}

// Takes what the receive buffer holds first, then reads the rest straight into `out`, so a
// large WRITE payload is copied once.
awaitable<bool> Session::read_payload(std::byte* out, size_t length) {
  if (length == 0) co_return true;  // `out` may be null then (an empty vector's data())
  size_t buffered = std::min(length, rx_end_ - rx_begin_);
  std::memcpy(out, rx_.get() + rx_begin_, buffered);
  rx_begin_ += buffered;
  if (buffered == length) co_return true;
  boost::system::error_code ec;
  if (tls_) {
    // Decrypted straight into `out`, record by record.
    for (size_t done = buffered; done < length;) {
      size_t n = co_await tls_read_some(out + done, length - done, ec);
      if (ec || n == 0) co_return false;
      done += n;
      received_ += n;
    }
    co_return true;
  }
  // Read by hand rather than with asio::async_read, for two reasons. received_ must grow with
  // every piece: a shutdown() while the payload arrives computes where the client's stream ends
  // from it, and a count that lagged behind by the pieces read so far put that end too early
  // (requests sent before the stop were then never read). And async_read asks for 64 KiB at a
  // time, each piece an event-loop turn; here each recv takes all the kernel holds, and the
  // loop waits only when it holds nothing.
  for (size_t done = buffered; done < length;) {
    size_t n = socket_.read_some(asio::buffer(out + done, length - done), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      co_await socket_.async_wait(Socket::wait_read, asio::redirect_error(use_awaitable, ec));
      if (ec) co_return false;
      continue;
    }
    if (ec || n == 0) co_return false;
    done += n;
    received_ += n;
  }
  co_return true;
}

// Skips a payload we refuse, through the receive buffer, without holding it in memory.
awaitable<bool> Session::discard(uint64_t length) {
  while (length > 0) {
    if (rx_begin_ == rx_end_ && !co_await fill(1)) co_return false;
    size_t n = static_cast<size_t>(std::min<uint64_t>(length, rx_end_ - rx_begin_));
    rx_begin_ += n;
    length -= n;
  }
  co_return true;
}

awaitable<bool> Session::send(const Bytes& bytes) {
  if (tls_) co_return co_await tls_write_all(bytes.data(), bytes.size());
  boost::system::error_code ec;
  co_await asio::async_write(socket_, asio::buffer(bytes), asio::redirect_error(use_awaitable, ec));
  if (ec) spdlog::debug("{}: send failed: {}", peer_, ec.message());
  co_return !ec;
}

// ---------------------------------------------------------------------------------------------
// TLS: OpenSSL reads and writes the non-blocking socket itself; the reactor only waits for it.

awaitable<bool> Session::tls_wait(crypto::TlsStream::Status want) {
  boost::system::error_code ec;
  co_await socket_.async_wait(want == crypto::TlsStream::Status::want_write
                                  ? Socket::wait_write
                                  : Socket::wait_read,
                              asio::redirect_error(use_awaitable, ec));
  co_return !ec;
}

awaitable<size_t> Session::tls_read_some(std::byte* out, size_t length,
                                          boost::system::error_code& ec) {
  using Status = crypto::TlsStream::Status;
  size_t got = 0;
  for (;;) {
    auto result = tls_->read(out + got, length - got);
    if (result.status == Status::done) {
      got += result.bytes;
      // A read returns one record at most: take what OpenSSL already holds as well (its
      // read-ahead brings several records per recv), without asking the socket again.
      if (got < length && tls_->has_buffered_input()) continue;
      co_return got;
    }
    if (got > 0) co_return got;
    if (result.status == Status::want_read || result.status == Status::want_write) {
      if (!co_await tls_wait(result.status)) {
        ec = asio::error::operation_aborted;
        co_return 0;
      }
      continue;
    }
    if (result.status == Status::failed && !broken_)
      spdlog::warn("{}: {}, closing the connection", peer_, tls_->failure());
    ec = asio::error::eof;
    co_return 0;
  }
}

awaitable<bool> Session::tls_write_all(const std::byte* data, size_t length) {
  using Status = crypto::TlsStream::Status;
  while (length > 0) {
    auto result = tls_->write(data, length);
    if (result.status == Status::done) {
      data += result.bytes;
      length -= result.bytes;
    } else if (result.status == Status::want_read || result.status == Status::want_write) {
      if (!co_await tls_wait(result.status)) co_return false;
    } else {
      if (result.status == Status::failed) spdlog::warn("{}: {}", peer_, tls_->failure());
      co_return false;
    }
  }
  co_return true;
}

awaitable<bool> Session::start_tls() {
  using Status = crypto::TlsStream::Status;
  // The client waits for our ACK before its ClientHello: bytes already here came from a
  // client that does not follow the protocol, and would be read as plaintext options.
  if (rx_begin_ != rx_end_) {
    spdlog::warn("{}: data sent after NBD_OPT_STARTTLS before its reply, closing", peer_);
    co_return false;
  }
  try {
    tls_ = std::make_unique<crypto::TlsStream>(*shared_.tls, socket_.native_handle());
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", peer_, e.what());
    co_return false;
  }
  for (;;) {
    auto result = tls_->handshake();
    if (result.status == Status::done) break;
    if (result.status == Status::want_read || result.status == Status::want_write) {
      // The handshake timer closes the socket of a client that stalls here.
      if (!co_await tls_wait(result.status)) co_return false;
      continue;
    }
    // Garbage instead of a ClientHello, a wrong key, a refused certificate: one line. (Not
    // when the handshake timer or a server stop cut it: they say so themselves.)
    if (!handshake_timed_out_ && !stopping_)
      spdlog::warn("{}: {}, closing the connection", peer_,
                   tls_->failure().empty() ? "the client hung up in the TLS handshake" : tls_->failure());
    co_return false;
  }
  negotiation_.tls_started();
  spdlog::debug("{}: TLS started: {}", peer_, tls_->summary());
  co_return true;
}

awaitable<void> Session::wait_until_signalled() {
  signalled_ = false;
  start_write();  // replies held back while parsing a batch must not wait with us
  // Sending may already have finished what the caller waits for: let it look again.
  if (signalled_) co_return;
  waiting_ = true;
  wake_.expires_at(asio::steady_timer::time_point::max());
  boost::system::error_code ec;
  co_await wake_.async_wait(asio::redirect_error(use_awaitable, ec));
  waiting_ = false;
}

void Session::signal() {
  signalled_ = true;
  if (waiting_) wake_.cancel();
}

awaitable<bool> Session::reserve_buffer(size_t bytes) {
  BufferBudget& budget = shared_.buffers;
  bool paused = false;
  while (!stopping_ && !broken_) {
    // A connection that holds nothing gets its request whatever the others hold: clients that
    // never read their replies can spend the budget, but cannot stop anyone else.
    if (bytes_in_flight_ == 0) {
      budget.take_anyway(bytes);
      co_return true;
    }
    if (budget.try_take(bytes) || budget.take_or_wait(bytes, budget_waiter_)) co_return true;
    if (!paused) {
      spdlog::debug("{}: the buffer budget is spent ({} of {} bytes), reading paused", peer_,
                    budget.used(), budget.limit());
      paused = true;
    }
    // Woken by budget_released(), by one of our own requests finishing, or by a stop.
    co_await wait_until_signalled();
    budget.cancel_wait(budget_waiter_);
  }
  co_return false;
}

// On the thread that released bytes, with the budget's lock held: only hand the news over.
// The session is queued only while run() waits in reserve_buffer(), holding it alive; the
// weak pointer is for safety's sake (a throw here would end the process).
void Session::budget_released() {
  if (auto self = weak_from_this().lock())
    asio::post(wake_.get_executor(), [self = std::move(self)] { self->signal(); });
}

// ---------------------------------------------------------------------------------------------
// Handshake

void Session::start_handshake_timer() {
  if (shared_.handshake_timeout.count() <= 0) return;
  handshake_timer_.expires_after(shared_.handshake_timeout);
  handshake_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || !self->negotiating_) return;
    // A client that connects and never finishes the handshake would hold its connection (and
    // its place under --max-connections) for ever.
    self->handshake_timed_out_ = true;
    spdlog::warn("{}: no handshake within {:.3g} s{}, closing the connection", self->peer_,
                 std::chrono::duration<double>(self->shared_.handshake_timeout).count(),
                 self->tls_ && !self->tls_->established() ? " (stalled in the TLS handshake)" : "");
    self->broken_ = true;
    self->close_socket();
  });
}

awaitable<bool> Session::negotiate() {
  if (!co_await send(encode_greeting())) co_return false;
  if (!co_await fill(4)) co_return false;
  uint32_t client_flags = load_be32(rx_.get() + rx_begin_);
  rx_begin_ += 4;
  if (!negotiation_.accept_client_flags(client_flags)) {
    spdlog::warn("{}: refused client flags {:#x} (fixed newstyle only)", peer_, client_flags);
    co_return false;
  }

  Bytes payload;
  for (;;) {
    if (!co_await fill(kOptionHeaderSize)) co_return false;
    auto header = parse_option_header(
        std::span<const std::byte, kOptionHeaderSize>(rx_.get() + rx_begin_, kOptionHeaderSize));
    rx_begin_ += kOptionHeaderSize;
    if (!header) {
      spdlog::warn("{}: bad option magic, closing", peer_);
      co_return false;
    }

    Negotiation::Step step;
    if (header->length > Negotiation::kMaxOptionPayload) {
      // A client claiming megabytes of option data is not negotiating in good faith.
      if (header->length > 1024 * 1024) {
        spdlog::warn("{}: option {} with {} bytes of data, closing", peer_, header->option,
                     header->length);
        co_return false;
      }
      if (!co_await discard(header->length)) co_return false;
      step = negotiation_.handle_oversized(header->option);
    } else {
      payload.resize(header->length);
      if (!co_await read_payload(payload.data(), payload.size())) co_return false;
      step = negotiation_.handle(header->option, payload);
    }
    spdlog::debug("{}: option {} with {} bytes of data", peer_, header->option, header->length);
    if (!step.reply.empty() && !co_await send(step.reply)) co_return false;
    if (step.next == Negotiation::Next::close) co_return false;
    if (step.next == Negotiation::Next::start_tls) {
      if (!co_await start_tls()) co_return false;
      continue;
    }
    if (step.next == Negotiation::Next::transmission) break;
  }

  negotiated_ = negotiation_.result();
  co_return true;
}

bool Session::attach() {
  if (!shared_.exports.attach(*negotiated_.chosen)) {
    spdlog::info("{}: export '{}' was removed during the handshake, closing", peer_,
                 negotiated_.chosen->name);
    return false;
  }
  attached_ = negotiated_.chosen;
  counters_ = &attached_->counters->counters.this_thread_slot();
  timed_ = shared_.measure_latency && *shared_.measure_latency;
  front_.emplace(*negotiated_.chosen->device);
  if (front_->capabilities().fast_completions) {
    poller_ = true;
    registry_.add_poller();
  }
  spdlog::debug("{}: attached to export '{}'{}", peer_, negotiated_.chosen->name,
                negotiated_.structured_replies ? " (structured replies)" : "");
  return true;
}

bool Session::move_home() {
  asio::io_context* home_io = negotiated_.chosen->device->home_context();
  if (!shared_.homes || !home_io || home_io == &current_io_context()) return false;
  SessionHomes::Home* home = shared_.homes->find(home_io);
  if (!home) return false;  // unknown to the server: serve from here, with thread changes

  boost::system::error_code ec;
  const auto protocol = socket_.local_endpoint(ec).protocol();
  if (ec) return false;
  const int fd = socket_.release(ec);
  if (ec) return false;
  moved_out_ = true;
  Handshake handshake{negotiated_, {rx_.get() + rx_begin_, rx_.get() + rx_end_}, std::move(slot_),
                      std::move(tls_)};
  spdlog::debug("{}: moving to the thread of export '{}'", peer_, negotiated_.chosen->name);
  // Counted until registered there (or closed), so a server stopping meanwhile waits for it.
  home->arriving.fetch_add(1);
  // As when the server hands an accepted connection to a worker: the descriptor is taken up
  // by the home's own reactor, and the session made on that thread, which owns its registry.
  asio::post(*home_io, [fd, protocol, home, &shared = shared_, peer = peer_,
                        handshake = std::move(handshake)]() mutable {
    // Registered (or closed) before it stops counting as arriving.
    adopt(fd, protocol, *home->io, home->sessions, shared, std::move(peer), {}, std::move(handshake));
    home->arriving.fetch_sub(1);
  });
  return true;
}

void Session::adopt(int fd, const Socket::protocol_type& protocol, asio::io_context& io, SessionRegistry& registry,
                    const SessionShared& shared, std::string peer, ConnectionLimit::Slot slot) {
  adopt(fd, protocol, io, registry, shared, std::move(peer), std::move(slot), std::nullopt);
}

void Session::adopt(int fd, const Socket::protocol_type& protocol, asio::io_context& io, SessionRegistry& registry,
                    const SessionShared& shared, std::string peer, ConnectionLimit::Slot slot,
                    std::optional<Handshake> handshake) {
  Socket socket(io);
  boost::system::error_code ec;
  socket.assign(protocol, fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  // The socket's destructor closes the connection.
  if (shared.homes && shared.homes->server_stopping()) return;
  std::shared_ptr<Session> session =
      handshake ? std::shared_ptr<Session>(new Session(std::move(socket), shared, registry, std::move(peer),
                                                       std::move(*handshake)))
                : std::make_shared<Session>(std::move(socket), shared, registry, std::move(peer), std::move(slot));
  session->start();
  // Accepted, or arrived from another thread, after the pause reached this one.
  if (shared.homes)
    if (auto pause = shared.homes->pause()) session->pause(std::move(pause));
}

void Session::adopt_handed_over(int fd, const Socket::protocol_type& protocol, asio::io_context& io,
                                SessionRegistry& registry, const SessionShared& shared, std::string peer,
                                ConnectionLimit::Slot slot, NegotiatedSession negotiated,
                                std::vector<std::byte> unparsed) {
  if (unparsed.size() > kReceiveBufferSize) {  // more than a session of ours can have held
    ::close(fd);
    return;
  }
  adopt(fd, protocol, io, registry, shared, std::move(peer), {},
        Handshake{std::move(negotiated), std::move(unparsed), std::move(slot), nullptr});
}

// ---------------------------------------------------------------------------------------------
// Transmission

uint32_t Session::validate(const RequestHeader& h) const {
  uint16_t allowed_flags = kCmdFlagFua;
  switch (h.type) {
    case kCmdRead:
      if (negotiated_.structured_replies) allowed_flags |= kCmdFlagDf;
      break;
    case kCmdWriteZeroes:
      allowed_flags |= kCmdFlagNoHole | kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      allowed_flags |= kCmdFlagReqOne;
      break;
    case kCmdWrite:
    case kCmdDisc:
    case kCmdFlush:
    case kCmdTrim:
    case kCmdCache:
      break;
    default:
      return kEinval;
  }
  if (h.flags & ~allowed_flags) return kEinval;
  if (h.type == kCmdDisc || h.type == kCmdFlush) return 0;

  using backends::DeviceRequest;
  const DeviceRequest request = h.type == kCmdRead          ? DeviceRequest::read
                                : h.type == kCmdWrite       ? DeviceRequest::write
                                : h.type == kCmdTrim        ? DeviceRequest::trim
                                : h.type == kCmdWriteZeroes ? DeviceRequest::zero
                                : h.type == kCmdCache       ? DeviceRequest::cache
                                                            : DeviceRequest::block_status;
  // The device's own rules (read-only, range, alignment) are the front's; a read-only export
  // refuses a change before anything else, as the specification asks.
  const int refused = front_->refusal(request, h.offset, h.length);
  if (refused == EPERM) return kEperm;
  if (h.type == kCmdBlockStatus && !negotiated_.base_allocation) return kEinval;
  if (h.length == 0) return kEinval;
  if ((h.type == kCmdRead || h.type == kCmdWrite) && h.length > kMaxPayload)
    return h.type == kCmdRead && negotiated_.structured_replies ? kEoverflow : kEinval;
  return refused ? nbd_error_of(refused) : 0;
}

// Where the client's stream stands: bytes received and parsed (or skipped).
uint64_t Session::consumed() const { return received_ - (rx_end_ - rx_begin_); }

// True when a request of `bytes` starting where the stream stands was not wholly sent before
// shutdown(): it is not in flight, and is neither read nor served.
bool Session::beyond_receive_limit(uint64_t bytes) const {
  return receive_limit_ && (consumed() > *receive_limit_ || *receive_limit_ - consumed() < bytes);
}

awaitable<bool> Session::transmit() {
  while (!stopping_ && !broken_) {
    if (pause_) co_return true;
    if (beyond_receive_limit(kRequestHeaderSize)) break;  // every request in flight is read
    awaiting_header_ = true;
    const bool filled = co_await fill(kRequestHeaderSize);
    awaiting_header_ = false;
    if (header_wait_interrupted_) {
      header_wait_interrupted_ = false;
      co_return true;
    }
    if (!filled) break;
    auto header = parse_request(
        std::span<const std::byte, kRequestHeaderSize>(rx_.get() + rx_begin_, kRequestHeaderSize));
    if (!header) {
      spdlog::warn("{}: bad request magic, dropping the connection", peer_);
      broken_ = true;
      close_socket();
      break;
    }
    rx_begin_ += kRequestHeaderSize;
    if (header->type == kCmdWrite && beyond_receive_limit(header->length)) break;
    after_large_write_ = header->type == kCmdWrite && header->length >= kLargeWriteBytes;

    if (header->type == kCmdDisc) {
      stopping_ = true;  // answer what is in flight, then close
      break;
    }

    Request* request = acquire();
    request->header = *header;
    uint32_t error = validate(*header);
    // A READ's reply and a WRITE's payload are what a request buffers; the rest is small.
    const bool buffers = !error && (header->type == kCmdRead || header->type == kCmdWrite);
    if (buffers && !co_await reserve_buffer(header->length)) {
      recycle(request);  // stopping: the request was read but is neither served nor answered
      break;
    }
    if (header->type == kCmdWrite) {
      if (error) {
        if (!co_await discard(header->length)) {
          recycle(request);
          break;
        }
      } else {
        request->data = Buffer::allocate(header->length);
        bytes_in_flight_ += header->length;
        if (!co_await read_payload(request->data.data(), header->length)) {
          recycle(request);  // the client vanished mid-payload: nothing is written
          break;
        }
      }
    }
    reading_batch_ = true;
    if (error) {
      spdlog::debug("{}: refused {} flags {:#x} offset {} length {}: error {}", peer_,
                    command_name(header->type), header->flags, header->offset, header->length,
                    error);
      complete_with_error(request, error, "");
    } else {
      dispatch(request);
    }
    reading_batch_ = false;

    while (!stopping_ && !broken_ && !pause_ &&
           (requests_in_flight_ >= kMaxRequestsInFlight || bytes_in_flight_ >= kMaxBytesInFlight))
      co_await wait_until_signalled();
  }
  co_return false;
}

awaitable<bool> Session::stay_paused() {
  // Everything read is answered before the connection moves.
  while (requests_in_flight_ > 0 || writing_ || write_posted_) co_await wait_until_signalled();
  if (!pause_) co_return true;  // resumed meanwhile
  if (stopping_ || broken_) co_return false;
  pause_reported_ = true;
  if (tls_) {
    spdlog::info("{}: closing this TLS connection for the hand-over: its TLS state cannot move "
                 "to another process (the client may reconnect)", peer_);
    pause_->closed();
    stopping_ = true;
    co_return false;
  }
  boost::system::error_code ec;
  PausedConnection connection;
  connection.fd = socket_.native_handle();
  connection.family = socket_.local_endpoint(ec).protocol().family();
  connection.peer = peer_;
  connection.export_name = negotiated_.chosen->name;
  connection.structured_replies = negotiated_.structured_replies;
  connection.base_allocation = negotiated_.base_allocation;
  connection.unparsed.assign(rx_.get() + rx_begin_, rx_.get() + rx_end_);
  if (ec || !pause_->report(std::move(connection))) {
    spdlog::warn("{}: not paused in time for the hand-over, closing the connection", peer_);
    stopping_ = true;
    co_return false;
  }
  handed_over_ = true;
  while (pause_ && !released_ && !stopping_ && !broken_) co_await wait_until_signalled();
  if (released_) co_return false;
  handed_over_ = false;
  co_return !pause_ && !stopping_ && !broken_;
}

void Session::pause(std::shared_ptr<SessionPause> pause) {
  if (pause_ || moved_out_ || released_ || stopping_ || broken_) return;
  pause_ = std::move(pause);
  pause_reported_ = false;
  pause_->expect();
  interrupt_header_wait();
  signal();
}

void Session::resume() {
  if (!pause_) return;
  pause_.reset();
  signal();
}

void Session::release() {
  if (!handed_over_) return;  // not handed over: it closes when the server stops
  released_ = true;
  signal();
}

void Session::interrupt_header_wait() {
  if (!pause_ || !awaiting_header_ || writing_) return;
  boost::system::error_code ignored;
  socket_.cancel(ignored);
}

void Session::dispatch(Request* r) {
  const RequestHeader& h = r->header;
  if (timed_) r->dispatched = std::chrono::steady_clock::now();
  auto done = [r](std::error_code ec) { r->session->complete(r, ec); };
  const bool fua = h.flags & kCmdFlagFua;
  switch (h.type) {
    case kCmdRead:
      r->data = Buffer::allocate(h.length);
      bytes_in_flight_ += h.length;
      front_->read(h.offset, r->data.span(), done);
      break;
    case kCmdWrite:
      front_->write(h.offset, r->data.span(), {.fua = fua}, done);
      break;
    case kCmdFlush:
      front_->flush(done);
      break;
    case kCmdTrim:
      front_->trim(h.offset, h.length, {.fua = fua}, done);
      break;
    case kCmdWriteZeroes:
      front_->write_zeroes(h.offset, h.length,
                            {.may_trim = !(h.flags & kCmdFlagNoHole),
                             .fast_only = bool(h.flags & kCmdFlagFastZero),
                             .fua = fua},
                            done);
      break;
    case kCmdCache:
      front_->cache(h.offset, h.length, done);
      break;
    case kCmdBlockStatus:
      front_->block_status(h.offset, h.length, [r](std::error_code ec,
                                                    std::vector<backends::Extent> extents) {
        Session* s = r->session;
        if (ec) return s->complete(r, ec);
        std::vector<BlockStatusDescriptor> descriptors;
        const bool one = r->header.flags & kCmdFlagReqOne;
        uint64_t remaining = r->header.length;
        for (const auto& e : extents) {
          if (remaining == 0) break;
          auto length = static_cast<uint32_t>(std::min<uint64_t>(e.length, remaining));
          uint32_t status = (e.hole ? kStateHole : 0) | (e.zero ? kStateZero : 0);
          if (!descriptors.empty() && descriptors.back().status == status)
            descriptors.back().length += length;
          else
            descriptors.push_back({length, status});
          remaining -= length;
        }
        if (descriptors.empty()) return s->complete(r, backends::errno_code(EIO));
        if (one) descriptors.resize(1);
        s->count_answer(r, 0);
        r->extra = encode_block_status_chunk(r->header.handle, kBaseAllocationId, true,
                                             descriptors);
        r->head_size = 0;
        r->send_data = false;
        s->queue_reply(r);
      });
      break;
  }
}

void Session::complete(Request* r, std::error_code ec) {
  if (ec) {
    const uint32_t error = to_wire_error(ec);
    // ENOTSUP for FAST_ZERO is an expected answer, not a failure worth a log line.
    if (error != kEnotsup)
      spdlog::warn("{}: {} of {} bytes at {} failed: {}", peer_, command_name(r->header.type),
                   r->header.length, r->header.offset, ec.message());
    return complete_with_error(r, error, ec.message());
  }
  const RequestHeader& h = r->header;
  count_answer(r, 0);
  if (negotiated_.structured_replies && h.type == kCmdRead) {
    encode_structured_header(kReplyFlagDone, kReplyOffsetData, h.handle, 8 + h.length,
                             std::span<std::byte, kStructuredHeaderSize>(r->head.data(), kStructuredHeaderSize));
    store_be64(r->head.data() + kStructuredHeaderSize, h.offset);
    r->head_size = kStructuredHeaderSize + 8;
    r->send_data = true;
  } else {
    // Success without a payload is a simple reply even when structured replies are on: the
    // protocol allows either, and a client such as libnbd reads a simple reply in one receive
    // where a 20-byte structured chunk takes two (measured: fio's syscalls per 4 KiB write
    // fell from 5 to 4).
    encode_simple_reply(0, h.handle, std::span<std::byte, kSimpleReplySize>(r->head.data(), kSimpleReplySize));
    r->head_size = kSimpleReplySize;
    r->send_data = h.type == kCmdRead;
  }
  queue_reply(r);
}

void Session::count_answer(const Request* r, uint32_t error) {
  const RequestHeader& h = r->header;
  const RequestKind kind = request_kind(h.type);
  if (error) {
    ExportCounters::failed(*counters_, kind, error);
  } else {
    const bool ranged = kind != RequestKind::flush && kind != RequestKind::block_status;
    ExportCounters::answered(*counters_, kind, ranged ? h.length : 0);
  }
  // Only requests that reached the device were timed; a refused one says nothing of it.
  if (timed_ && r->dispatched != std::chrono::steady_clock::time_point{}) {
    const auto elapsed = std::chrono::steady_clock::now() - r->dispatched;
    if (kind == RequestKind::read) ExportCounters::took(*counters_, TimedKind::read, elapsed);
    else if (kind == RequestKind::write) ExportCounters::took(*counters_, TimedKind::write, elapsed);
    else if (kind == RequestKind::flush) ExportCounters::took(*counters_, TimedKind::flush, elapsed);
  }
}

void Session::complete_with_error(Request* r, uint32_t error, std::string_view message) {
  count_answer(r, error);
  r->send_data = false;
  if (negotiated_.structured_replies) {
    r->head_size = 0;
    r->extra = encode_error_chunk(r->header.handle, error, message);
  } else {
    // A simple reply to a failed READ carries no payload (the client knows from the error).
    encode_simple_reply(error, r->header.handle,
                        std::span<std::byte, kSimpleReplySize>(r->head.data(), kSimpleReplySize));
    r->head_size = kSimpleReplySize;
  }
  queue_reply(r);
}

// ---------------------------------------------------------------------------------------------
// Sending replies

void Session::queue_reply(Request* r) {
  if (broken_) return recycle(r);
  ready_.push_back(r);
  if (r->send_data) ready_payload_bytes_ += r->data.size();
  // Replies completed while the reader is parsing a batch go out when it next waits (fill),
  // in one sendmsg; those completed later, by the device, need a write of their own. Large
  // read payloads go at once, while the bytes just copied are still in the CPU cache.
  if (!reading_batch_ || ready_payload_bytes_ >= kEagerSendBytes) schedule_write();
}

// Starting the write from a posted handler lets every reply completed in this turn of the
// event loop (often a whole batch of requests) go out in one sendmsg.
void Session::schedule_write() {
  if (writing_ || write_posted_) return;
  if (reading_batch_) return start_write();  // the reader's turn already batches for us
  write_posted_ = true;
  asio::post(socket_.get_executor(), [this] {
    write_posted_ = false;
    start_write();
    signal();
  });
}

// Sends ready replies with a non-blocking sendmsg straight away; only what the socket cannot
// take now waits for the reactor. Fully sent replies are recycled at once, so a reader that is
// blocked on the in-flight limits can go on.
void Session::start_write() {
  while (!writing_ && !ready_.empty()) {
    if (broken_) {
      while (!ready_.empty()) {
        recycle(ready_.front());
        ready_.pop_front();
      }
      ready_payload_bytes_ = 0;
      return;
    }
    gather_replies();
    if (tls_) {
      tls_send_batch();
      continue;  // sent (then recycled), or writing_ while it waits for the socket
    }

    boost::system::error_code ec;
    size_t sent = socket_.write_some(iov_, ec);  // the socket is non-blocking: never waits
    if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {}, sent = 0;
    if (ec) {
      on_written(ec);
      return;
    }
    // Drop what went out; the rest (if any) is left for async_write.
    size_t first = 0;
    while (first < iov_.size() && sent >= iov_[first].size()) sent -= iov_[first++].size();
    if (first == iov_.size()) {
      for (Request* r : writing_batch_) recycle(r);
      writing_batch_.clear();
      continue;
    }
    iov_.erase(iov_.begin(), iov_.begin() + static_cast<ptrdiff_t>(first));
    iov_.front() += sent;
    writing_ = true;
    asio::async_write(socket_, iov_,
                      [this](const boost::system::error_code& e, size_t) { on_written(e); });
  }
}

void Session::gather_replies() {
  iov_.clear();
  writing_batch_.clear();
  constexpr size_t kMaxBatch = 64;  // well under IOV_MAX (1024) at three buffers a reply
  while (!ready_.empty() && writing_batch_.size() < kMaxBatch) {
    Request* r = ready_.front();
    ready_.pop_front();
    writing_batch_.push_back(r);
    if (r->head_size) iov_.emplace_back(r->head.data(), r->head_size);
    if (r->send_data) {
      iov_.emplace_back(r->data.data(), r->data.size());
      ready_payload_bytes_ -= r->data.size();
    }
    if (!r->extra.empty()) iov_.emplace_back(r->extra.data(), r->extra.size());
  }
  tls_piece_ = tls_offset_ = 0;
}

// OpenSSL has no gathering write, and each write makes at least one record and one send: the
// small pieces of a batch (reply headers, short reads, error chunks) are copied together into
// records of up to kTlsRecordBytes, while a large payload is encrypted straight from its
// buffer, after its first bytes have topped up the record in front of it.
void Session::tls_send_batch() {
  using Status = crypto::TlsStream::Status;
  constexpr size_t kTlsRecordBytes = 16 * 1024;  // TLS's largest record
  for (;;) {
    const std::byte* data;
    size_t length;
    const bool staged = tls_stage_sent_ < tls_stage_.size();
    if (staged) {
      data = tls_stage_.data() + tls_stage_sent_;
      length = tls_stage_.size() - tls_stage_sent_;
    } else {
      tls_stage_.clear();
      tls_stage_sent_ = 0;
      if (tls_piece_ == iov_.size()) break;  // the whole batch went out
      const size_t rest = iov_[tls_piece_].size() - tls_offset_;
      if (rest < kTlsRecordBytes) {
        // Gather small pieces, and the head of the next large one, into a record.
        while (tls_piece_ < iov_.size() && tls_stage_.size() < kTlsRecordBytes) {
          const auto* piece = static_cast<const std::byte*>(iov_[tls_piece_].data()) + tls_offset_;
          const size_t left = iov_[tls_piece_].size() - tls_offset_;
          const size_t take = std::min(left, kTlsRecordBytes - tls_stage_.size());
          tls_stage_.insert(tls_stage_.end(), piece, piece + take);
          tls_offset_ += take;
          if (tls_offset_ == iov_[tls_piece_].size()) ++tls_piece_, tls_offset_ = 0;
        }
        continue;
      }
      data = static_cast<const std::byte*>(iov_[tls_piece_].data()) + tls_offset_;
      length = rest;
    }
    auto result = tls_->write(data, length);
    if (result.status == Status::done) {
      if (staged) {
        tls_stage_sent_ += result.bytes;
      } else {
        tls_offset_ += result.bytes;
        if (tls_offset_ == iov_[tls_piece_].size()) ++tls_piece_, tls_offset_ = 0;
      }
      continue;
    }
    if (result.status == Status::want_read || result.status == Status::want_write) {
      // Retried with the same bytes once the socket is ready (OpenSSL requires it).
      writing_ = true;
      socket_.async_wait(result.status == Status::want_write ? Socket::wait_write : Socket::wait_read,
                         [this](const boost::system::error_code& ec) {
                           writing_ = false;
                           if (ec) return on_written(ec);
                           tls_send_batch();
                           // Done (or failed): go on with the next batch, as after a sendmsg.
                           if (!writing_) on_written({});
                         });
      return;
    }
    if (result.status == Status::failed) spdlog::warn("{}: {}", peer_, tls_->failure());
    tls_stage_.clear();
    tls_stage_sent_ = 0;
    writing_ = true;  // on_written() ends the batch as a failed write would
    on_written(asio::error::broken_pipe);
    return;
  }
  // Everything went out: recycle the batch, as a completed sendmsg does.
  for (Request* r : writing_batch_) recycle(r);
  writing_batch_.clear();
}

void Session::on_written(const boost::system::error_code& ec) {
  writing_ = false;
  interrupt_header_wait();
  for (Request* r : writing_batch_) recycle(r);
  writing_batch_.clear();
  if (ec && !broken_) {
    spdlog::debug("{}: sending replies failed: {}", peer_, ec.message());
    broken_ = true;
    close_socket();
  }
  start_write();
  signal();
}

Session::Request* Session::acquire() {
  Request* r;
  if (free_requests_.empty()) {
    all_requests_.push_back(std::make_unique<Request>());
    r = all_requests_.back().get();
    r->session = this;
  } else {
    r = free_requests_.back();
    free_requests_.pop_back();
  }
  ++requests_in_flight_;
  counters_->add(ExportCounters::kStarted);
  return r;
}

void Session::recycle(Request* r) {
  const size_t buffered = r->data.size();  // what reserve_buffer() took for it
  bytes_in_flight_ -= buffered;
  r->data = Buffer();
  shared_.buffers.release(buffered);
  r->extra.clear();
  r->head_size = 0;
  r->send_data = false;
  r->dispatched = {};
  counters_->add(ExportCounters::kFinished);
  free_requests_.push_back(r);
  --requests_in_flight_;
  signal();
}

void Session::close_socket() {
  // The protocol asks to end TLS before closing; a broken connection gets no more bytes.
  if (tls_ && !broken_) tls_->close_notify();
  boost::system::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
  socket_.close(ignored);
}

void SessionRegistry::add(Session* s) {
  sessions_.push_back(s);
  count_.store(sessions_.size(), std::memory_order_release);
}

void SessionRegistry::remove(Session* s) {
  sessions_.erase(std::remove(sessions_.begin(), sessions_.end(), s), sessions_.end());
  count_.store(sessions_.size(), std::memory_order_release);
}

void SessionRegistry::shutdown_all() {
  auto copy = sessions_;
  for (Session* s : copy) s->shutdown();
}

void SessionRegistry::abort_all() {
  auto copy = sessions_;
  for (Session* s : copy) s->abort();
}

void SessionRegistry::pause_all(const std::shared_ptr<SessionPause>& pause) {
  auto copy = sessions_;
  for (Session* s : copy) s->pause(pause);
}

void SessionRegistry::resume_all() {
  auto copy = sessions_;
  for (Session* s : copy) s->resume();
}

void SessionRegistry::release_all() {
  auto copy = sessions_;
  for (Session* s : copy) s->release();
}

void SessionRegistry::shutdown_export(const Export* e) {
  auto copy = sessions_;
  for (Session* s : copy)
    if (s->attached_export() == e) s->shutdown();
}

void SessionRegistry::abort_export(const Export* e) {
  auto copy = sessions_;
  for (Session* s : copy)
    if (s->attached_export() == e) s->abort();
}

void SessionHomes::add(asio::io_context* io) {
  if (find(io)) return;
  homes_.push_back(std::make_unique<Home>());
  homes_.back()->io = io;
}

SessionHomes::Home* SessionHomes::find(asio::io_context* io) const {
  for (const auto& home : homes_)
    if (home->io == io) return home.get();
  return nullptr;
}

bool SessionHomes::arrivals_pending() const {
  for (const auto& home : homes_)
    if (home->arriving.load() != 0) return true;
  return false;
}

void SessionHomes::set_pause(std::shared_ptr<SessionPause> pause) {
  std::lock_guard lock(pause_mutex_);
  pause_ = std::move(pause);
}

std::shared_ptr<SessionPause> SessionHomes::pause() const {
  std::lock_guard lock(pause_mutex_);
  return pause_;
}

bool SessionHomes::idle() const {
  for (const auto& home : homes_)
    if (!home->sessions.empty() || home->arriving.load() != 0) return false;
  return true;
}

}  // namespace volgate::nbd
