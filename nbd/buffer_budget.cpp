#include "nbd/buffer_budget.hpp"

namespace volgate::nbd {

// The orderings between used_ and waiting_ are sequentially consistent on purpose: a waiter
// raises waiting_ and then looks at used_, a releaser lowers used_ and then looks at waiting_,
// and only a single total order guarantees that at least one of them sees the other's write
// (so a release never slips between a failed take and the queueing that follows it).

bool BufferBudget::try_take(size_t bytes) {
  size_t used = used_.load(std::memory_order_relaxed);
  do {
    if (used > limit_ || bytes > limit_ - used) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_seq_cst,
                                        std::memory_order_relaxed));
  return true;
}

void BufferBudget::take_anyway(size_t bytes) {
  used_.fetch_add(bytes, std::memory_order_seq_cst);
}

void BufferBudget::release(size_t bytes) {
  if (bytes == 0) return;
  used_.fetch_sub(bytes, std::memory_order_seq_cst);
  if (waiting_.load(std::memory_order_seq_cst) == 0) return;
  std::lock_guard lock(mutex_);
  tell_waiters_locked();
}

bool BufferBudget::take_or_wait(size_t bytes, Waiter& waiter) {
  std::lock_guard lock(mutex_);
  waiter.wanted_ = bytes;
  if (!waiter.queued_) {
    waiter.queued_ = true;
    waiter.next_ = nullptr;
    waiter.prev_ = tail_;
    (tail_ ? tail_->next_ : head_) = &waiter;
    tail_ = &waiter;
    waiting_.fetch_add(1, std::memory_order_seq_cst);
  }
  if (!try_take(bytes)) return false;
  unlink_locked(waiter);
  return true;
}

void BufferBudget::cancel_wait(Waiter& waiter) {
  std::lock_guard lock(mutex_);
  if (!waiter.queued_) return;
  unlink_locked(waiter);
  // What it would have taken may now be enough for someone behind it.
  tell_waiters_locked();
}

// Tells every queued waiter whose wants fit in what is free, oldest first. Not strictly first
// come, first served: one large want at the head (perhaps of a client that never reads its
// replies) must not hold back the small ones behind it. A large want is not starved either:
// its connection's own requests finish, and a connection holding nothing takes anyway.
void BufferBudget::tell_waiters_locked() {
  const size_t used = used_.load(std::memory_order_seq_cst);
  size_t free = used >= limit_ ? 0 : limit_ - used;
  for (Waiter* w = head_; w && free > 0;) {
    Waiter* next = w->next_;
    if (w->wanted_ <= free) {
      free -= w->wanted_;
      unlink_locked(*w);
      w->released_();
    }
    w = next;
  }
}

void BufferBudget::unlink_locked(Waiter& waiter) {
  (waiter.prev_ ? waiter.prev_->next_ : head_) = waiter.next_;
  (waiter.next_ ? waiter.next_->prev_ : tail_) = waiter.prev_;
  waiter.next_ = waiter.prev_ = nullptr;
  waiter.queued_ = false;
  waiting_.fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace volgate::nbd
