#pragma once
// Counters that many threads add to and one reader sums now and then (a metrics scrape),
// without a lock or a shared atomic on the adding side.
//
// Each thread that adds gets a slot of its own, allocated the first time it adds to this set
// and kept for the set's life, so an addition is a plain load and store of a cache line no
// other thread writes (a relaxed atomic, so the reader's loads are no data race; on x86-64
// it compiles to an ordinary add, with no lock prefix). The reader adds the slots up. Threads
// beyond kSingleWriterSlots share one last slot with atomic additions: a process with that
// many threads has other problems, and the counts stay right.
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace volgate {

namespace detail {
// A small number for the calling thread, given out once per thread and never reused.
size_t this_thread_counter_index();
}  // namespace detail

template <size_t N>
class ThreadCounters {
 public:
  static constexpr size_t kCounters = N;
  static constexpr size_t kSingleWriterSlots = 255;

  ThreadCounters() = default;
  ThreadCounters(const ThreadCounters&) = delete;
  ThreadCounters& operator=(const ThreadCounters&) = delete;
  ~ThreadCounters() {
    for (auto& slot : slots_) delete slot.load(std::memory_order_acquire);
  }

  // The calling thread's slot: a caller that stays on one thread (an NBD session) may keep it
  // and add to it without looking it up again.
  class Slot;
  Slot& this_thread_slot() {
    const size_t index = detail::this_thread_counter_index();
    return slot(index < kSingleWriterSlots ? index : kSingleWriterSlots);
  }
  void add(size_t counter, uint64_t value = 1) { this_thread_slot().add(counter, value); }

  // The sum over every thread; counts added meanwhile may or may not be in it.
  uint64_t sum(size_t counter) const {
    uint64_t total = 0;
    for (const auto& s : slots_)
      if (const Slot* p = s.load(std::memory_order_acquire))
        total += p->values[counter].load(std::memory_order_relaxed);
    return total;
  }
  // Every counter's sum, read in one pass over the slots.
  std::array<uint64_t, N> sums() const {
    std::array<uint64_t, N> totals{};
    for (const auto& s : slots_)
      if (const Slot* p = s.load(std::memory_order_acquire))
        for (size_t i = 0; i < N; ++i) totals[i] += p->values[i].load(std::memory_order_relaxed);
    return totals;
  }

 private:

  Slot& slot(size_t index) {
    Slot* p = slots_[index].load(std::memory_order_acquire);
    if (p) [[likely]]
      return *p;
    // Once per thread and set: only the overflow slot can be raced for.
    auto fresh = std::make_unique<Slot>(index == kSingleWriterSlots);
    if (slots_[index].compare_exchange_strong(p, fresh.get(), std::memory_order_acq_rel)) return *fresh.release();
    return *p;
  }

  std::array<std::atomic<Slot*>, kSingleWriterSlots + 1> slots_{};
};

template <size_t N>
class alignas(64) ThreadCounters<N>::Slot {
 public:
  explicit Slot(bool shared) : shared_(shared) {}
  // Only from the thread the slot belongs to (any thread for the shared one).
  void add(size_t counter, uint64_t value = 1) {
    std::atomic<uint64_t>& c = values[counter];
    if (!shared_) [[likely]]
      c.store(c.load(std::memory_order_relaxed) + value, std::memory_order_relaxed);
    else
      c.fetch_add(value, std::memory_order_relaxed);
  }

  std::array<std::atomic<uint64_t>, N> values{};

 private:
  const bool shared_;
};

}  // namespace volgate
