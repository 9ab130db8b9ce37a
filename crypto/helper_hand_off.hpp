#pragma once
// One request's cipher work handed to a CryptoWorkers helper, and its outcome handed back to the
// I/O thread that asked, without allocating: the request object derives from HelperHandOff,
// which is the helper queue's link and holds the way back to the io_context
// (common/post_back.hpp). A type-erased job and asio's post from the helper made three
// allocations per large LUKS request.
#include <system_error>

#include "common/post_back.hpp"
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
  void run() noexcept override;  // on the helper

  Work work_ = nullptr;
  Then then_ = nullptr;
  std::error_code outcome_;
  PostBack post_back_;
};

}  // namespace volgate::crypto
