#pragma once
// One io_uring per io_context, living as an Asio service so that it is created on first use by
// a thread and destroyed with its io_context.
//
// Submissions are batched: operations prepared while handling one batch of network input are
// sent to the kernel in a single io_uring_enter, posted to run after the current handler.
// Completions are noticed through an eventfd registered with the ring, which the io_context
// watches like any socket, and are delivered on the io_context's thread.
#include <liburing.h>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>

namespace volgate::backends {

class IoUringQueue : public boost::asio::execution_context::service {
 public:
  // Something waiting for one CQE. The queue never owns it.
  class Operation {
   public:
    // `result` is the CQE's res: bytes transferred, or a negative errno.
    virtual void on_complete(int result) = 0;

   protected:
    ~Operation() = default;
  };

  static boost::asio::execution_context::id id;

  explicit IoUringQueue(boost::asio::io_context& context);
  ~IoUringQueue() override;

  // The queue of the calling worker thread's io_context.
  static IoUringQueue& for_current_thread();

  // Queues one SQE for `op`; `prepare(io_uring_sqe*)` fills it in (io_uring_prep_*).
  template <class Prepare>
  void submit(Operation* op, Prepare&& prepare) {
    io_uring_sqe* sqe = next_sqe();
    prepare(sqe);
    io_uring_sqe_set_data(sqe, op);
    ++in_flight_;
    schedule_submit();
  }

  unsigned in_flight() const { return in_flight_; }

 private:
  void shutdown() override;
  io_uring_sqe* next_sqe();
  void schedule_submit();
  void submit_now();
  void reap();
  void arm_wait();

  boost::asio::io_context& context_;
  io_uring ring_{};
  int eventfd_ = -1;
  boost::asio::posix::stream_descriptor event_;
  unsigned in_flight_ = 0;
  unsigned unsubmitted_ = 0;
  bool submit_scheduled_ = false;
  bool wait_armed_ = false;
};

}  // namespace volgate::backends
