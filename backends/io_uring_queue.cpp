#include "backends/io_uring_queue.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstdint>
#include <system_error>

#include "common/current_context.hpp"

namespace volgate::backends {

namespace {
constexpr unsigned kRingEntries = 256;

// liburing maps and unmaps the rings with raw system calls, which ThreadSanitizer does not
// intercept: a ring mapped where another thread's ring was (e.g. the one of the final flush's
// private io_context, unmapped since) inherits that ring's recorded accesses, and the first SQE
// written here is reported as racing with them. Under TSan, every ring's end is made to happen
// before every later ring's start, as the kernel orders the unmapping before the address's reuse.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
char ring_lifetimes;  // the synchronisation object of those edges
void ring_mapped() { __tsan_acquire(&ring_lifetimes); }
void ring_unmapping() { __tsan_release(&ring_lifetimes); }
#else
void ring_mapped() {}
void ring_unmapping() {}
#endif

}  // namespace

boost::asio::execution_context::id IoUringQueue::id;

IoUringQueue::IoUringQueue(boost::asio::io_context& context)
    : boost::asio::execution_context::service(context), context_(context), event_(context) {
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = kRingEntries * 4;  // completions may pile up while a batch is handled
  if (int rc = io_uring_queue_init_params(kRingEntries, &ring_, &params); rc < 0)
    throw std::system_error(-rc, std::generic_category(), "io_uring setup");
  ring_mapped();
  eventfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (eventfd_ < 0) {
    int error = errno;
    io_uring_queue_exit(&ring_);
    throw std::system_error(error, std::generic_category(), "eventfd");
  }
  if (int rc = io_uring_register_eventfd(&ring_, eventfd_); rc < 0) {
    ::close(eventfd_);
    io_uring_queue_exit(&ring_);
    throw std::system_error(-rc, std::generic_category(), "io_uring eventfd registration");
  }
  event_.assign(eventfd_);
}

IoUringQueue::~IoUringQueue() {
  ring_unmapping();
  io_uring_queue_exit(&ring_);
}

void IoUringQueue::shutdown() {
  boost::system::error_code ignored;
  event_.close(ignored);
}

IoUringQueue& IoUringQueue::for_current_thread() {
  return boost::asio::use_service<IoUringQueue>(current_io_context());
}

io_uring_sqe* IoUringQueue::next_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) {
    // The submission ring is full: hand what we have to the kernel now and continue.
    submit_now();
    sqe = io_uring_get_sqe(&ring_);
  }
  ++unsubmitted_;
  return sqe;
}

void IoUringQueue::schedule_submit() {
  if (submit_scheduled_) return;
  submit_scheduled_ = true;
  boost::asio::post(context_, [this] {
    submit_scheduled_ = false;
    submit_now();
    // Page-cache hits complete during submission; deliver them without an eventfd round trip.
    reap();
    arm_wait();
  });
}

void IoUringQueue::submit_now() {
  while (unsubmitted_ > 0) {
    int rc = io_uring_submit(&ring_);
    if (rc >= 0) {
      unsubmitted_ -= static_cast<unsigned>(rc) < unsubmitted_ ? static_cast<unsigned>(rc)
                                                               : unsubmitted_;
      if (rc == 0) break;
      continue;
    }
    if (rc == -EINTR) continue;
    if (rc == -EAGAIN || rc == -EBUSY) {
      // The kernel is short of resources or the completion ring is full: make room by
      // delivering completions, then retry on the next turn.
      reap();
      schedule_submit();
      return;
    }
    throw std::system_error(-rc, std::generic_category(), "io_uring_submit");
  }
}

void IoUringQueue::reap() {
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe) {
    auto* op = static_cast<Operation*>(io_uring_cqe_get_data(cqe));
    int result = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    --in_flight_;
    op->on_complete(result);  // may submit more work
  }
}

void IoUringQueue::arm_wait() {
  // Waiting only while something is in flight lets io_context::run() return once idle.
  if (wait_armed_ || in_flight_ == 0 || !event_.is_open()) return;
  wait_armed_ = true;
  event_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [this](const boost::system::error_code& ec) {
                      wait_armed_ = false;
                      if (ec) return;
                      uint64_t count;
                      [[maybe_unused]] ssize_t n = ::read(eventfd_, &count, sizeof count);
                      reap();
                      arm_wait();
                    });
}

}  // namespace volgate::backends
