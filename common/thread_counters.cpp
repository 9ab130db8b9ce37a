#include "common/thread_counters.hpp"

namespace volgate::detail {

size_t this_thread_counter_index() {
  static std::atomic<size_t> next{0};
  thread_local const size_t index = next.fetch_add(1, std::memory_order_relaxed);
  return index;
}

}  // namespace volgate::detail
