#pragma once
// The bytes of request payloads and read replies that all connections of one server may hold in
// memory at once. Each connection already bounds its own share (Session::kMaxBytesInFlight), but
// without a server-wide bound, many clients that send large READs and never read the replies
// could take all the host's memory.
//
// Taking and releasing bytes is one atomic operation each, from any thread, so the I/O path
// stays lock-free. Only a connection that finds the budget spent takes the mutex, to queue up
// until enough bytes come back (see take_or_wait).
#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>

namespace volgate::nbd {

class BufferBudget {
 public:
  // Something (a connection) waiting for bytes. Lives in its owner as long as the owner does,
  // so waiting allocates nothing.
  class Waiter {
   public:
    // `released` runs on whichever thread released bytes, with the budget's mutex held: it must
    // not call back into the budget, only hand the news to its owner's thread (post a wake-up).
    explicit Waiter(std::function<void()> released) : released_(std::move(released)) {}
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;

   private:
    friend class BufferBudget;
    // A callback rather than a virtual function: UBSan checks the dynamic type of a polymorphic
    // object through a pipe, and reports a false error when descriptors have run out, which
    // is a state this server must live through.
    std::function<void()> released_;
    Waiter* next_ = nullptr;
    Waiter* prev_ = nullptr;
    size_t wanted_ = 0;
    bool queued_ = false;
  };

  explicit BufferBudget(size_t limit) : limit_(limit) {}
  BufferBudget(const BufferBudget&) = delete;
  BufferBudget& operator=(const BufferBudget&) = delete;

  // Takes `bytes` if they fit in what is left.
  bool try_take(size_t bytes);
  // Takes `bytes` even past the limit. For a connection that holds nothing: letting it have one
  // request in flight whatever the others hold keeps every connection able to make progress,
  // so no set of connections can starve (or deadlock) another.
  void take_anyway(size_t bytes);
  // Gives back bytes taken before, and tells waiters whose wants now fit.
  void release(size_t bytes);

  // Takes `bytes` if they fit; if not, queues `waiter` (first come, first told) and returns
  // false: its callback runs once they may fit, after which it tries again. Queueing
  // before the second look means a release racing with this call cannot go unnoticed.
  bool take_or_wait(size_t bytes, Waiter& waiter);
  // Leaves the queue, if `waiter` is in it (it gave up, or got its bytes another way).
  void cancel_wait(Waiter& waiter);

  size_t limit() const { return limit_; }
  size_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  void tell_waiters_locked();
  void unlink_locked(Waiter& waiter);

  const size_t limit_;
  std::atomic<size_t> used_{0};
  // Read without the mutex by release(): zero on the fast path, where nobody waits.
  std::atomic<size_t> waiting_{0};
  std::mutex mutex_;
  Waiter* head_ = nullptr;  // the queue, oldest first
  Waiter* tail_ = nullptr;
};

}  // namespace volgate::nbd
