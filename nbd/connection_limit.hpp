#pragma once
// How many client connections a server holds at once. Every connection costs a descriptor, a
// receive buffer and a session, whatever it does; the limit keeps a flood of them from using
// up the process's descriptors (which would stop the server accepting anyone) or its memory.
//
// An accepted connection holds a Slot for its whole life, handshake included, and takes it
// along when it moves to its device's thread; the slot is given back when the last holder goes.
#include <atomic>
#include <cstddef>
#include <optional>

namespace volgate::nbd {

class ConnectionLimit {
 public:
  class Slot {
   public:
    Slot() = default;  // holds nothing
    Slot(Slot&& other) noexcept : open_(other.open_) { other.open_ = nullptr; }
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { release(); }

   private:
    friend class ConnectionLimit;
    explicit Slot(std::atomic<size_t>* open) : open_(open) {}
    void release();
    std::atomic<size_t>* open_ = nullptr;
  };

  explicit ConnectionLimit(size_t max) : max_(max) {}

  // A slot for one more connection, or nothing when `max` are open already. Safe from any
  // thread; slots may be given back on any thread.
  std::optional<Slot> try_open();

  size_t max() const { return max_; }
  size_t open() const { return open_.load(std::memory_order_relaxed); }

 private:
  const size_t max_;
  std::atomic<size_t> open_{0};
};

}  // namespace volgate::nbd
