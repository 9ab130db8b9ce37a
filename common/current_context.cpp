#include "common/current_context.hpp"

#include <cstdio>
#include <cstdlib>

namespace volgate {
namespace {
thread_local boost::asio::io_context* this_thread_context = nullptr;
}

boost::asio::io_context& current_io_context() {
  if (!this_thread_context) {
    std::fputs("volgate: internal error: block device used outside a worker thread\n", stderr);
    std::abort();
  }
  return *this_thread_context;
}

bool has_current_io_context() { return this_thread_context != nullptr; }

CurrentContextGuard::CurrentContextGuard(boost::asio::io_context& context)
    : previous_(this_thread_context) {
  this_thread_context = &context;
}

CurrentContextGuard::~CurrentContextGuard() { this_thread_context = previous_; }

}  // namespace volgate
