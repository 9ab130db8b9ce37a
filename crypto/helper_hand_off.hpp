#pragma once
// One request's cipher work handed to a CryptoWorkers helper, and its outcome handed back to the
// I/O thread that asked, without allocating: the request object derives from HelperHandOff,
// which is the helper queue's link and holds the memory of the post back to the io_context.
// (Asio would allocate that post on the helper thread, where it keeps no recycled memory, and
// a type-erased job would allocate its captures: three allocations per large LUKS request.)
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <optional>
#include <system_error>

#include "crypto/crypto_workers.hpp"

namespace volgate::crypto {

class HelperHandOff : private CryptoWorkers::Job {
 public:
  // Functions of the derived request (which they get as `self` and cast back).
  using Work = void (*)(HelperHandOff& self);  // on the helper; may throw
  using Then = void (*)(HelperHandOff& self, std::error_code outcome);

  HelperHandOff() = default;
  HelperHandOff(const HelperHandOff&) = delete;
  HelperHandOff& operator=(const HelperHandOff&) = delete;

  // Runs work(*this) on a helper, then then(*this, outcome) on the calling thread's io_context,
  // which is kept from running out of work meanwhile. The outcome is EIO if work threw. One
  // hand-off at a time per object; `then` may start the next.
  void hand_to_helper(Work work, Then then);

 protected:
  ~HelperHandOff() = default;

 private:
  template <class T>
  class PostAllocator;
  struct PostBack;

  void run() noexcept override;  // on the helper
  void back_on_io_thread();

  Work work_ = nullptr;
  Then then_ = nullptr;
  boost::asio::io_context* io_ = nullptr;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> busy_;
  std::error_code outcome_;
  // Asio's operation for the post back, with the handler inside: a pointer and its own header.
  static constexpr size_t kPostBytes = 128;
  alignas(std::max_align_t) std::byte post_memory_[kPostBytes];
};

}  // namespace volgate::crypto
