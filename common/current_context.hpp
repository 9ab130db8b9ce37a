#pragma once
// Each worker thread runs one io_context and marks it as "current". Block devices use it to
// find the executor on which a caller expects its completion, without threading an executor
// argument through every call (the way a Seastar shard knows its reactor).
#include <boost/asio/io_context.hpp>

namespace volgate {

// The io_context the calling thread runs; aborts with a message if the thread has none, since
// that is a programming error (a device called from outside any worker).
boost::asio::io_context& current_io_context();
bool has_current_io_context();

// Marks `context` as the current one for this thread for the guard's lifetime.
class CurrentContextGuard {
 public:
  explicit CurrentContextGuard(boost::asio::io_context& context);
  ~CurrentContextGuard();
  CurrentContextGuard(const CurrentContextGuard&) = delete;
  CurrentContextGuard& operator=(const CurrentContextGuard&) = delete;

 private:
  boost::asio::io_context* previous_;
};

}  // namespace volgate
