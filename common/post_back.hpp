#pragma once
// The way back to the io_context that issued a request, for the thread that finishes it
// elsewhere (a cipher helper, librbd's finisher): keeps that io_context running until the
// answer arrives, and posts the answer without allocating.
//
// A post from a thread that runs no io_context makes asio allocate its operation with the
// heap, since it keeps recycled memory only for its own threads: once per request. Here asio
// takes the operation's memory from the request instead, and frees it before it calls the
// handler, so the handler may expect() and post again (or destroy the request). An operation
// larger than the memory (another asio version) uses the heap.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstddef>
#include <new>
#include <optional>
#include <utility>

namespace volgate {

class PostBack {
 public:
  PostBack() = default;
  PostBack(const PostBack&) = delete;
  PostBack& operator=(const PostBack&) = delete;

  // Before the request leaves for the other thread: `io` will not run out of work (and return
  // from run()) before the handler of the post() that answers it has begun.
  void expect(boost::asio::io_context& io) {
    io_ = &io;
    busy_.emplace(io.get_executor());
  }

  // From any thread, once per expect(): runs handler() on the io_context.
  template <class Handler>
  void post(Handler&& handler) {
    // The handler may run at once and let go of busy_; were that the io_context's last work,
    // its thread could return from run() and destroy it while post() is still waking it. A
    // second unit of work, given up only once post() has returned, rules that out.
    const auto posting = *busy_;
    boost::asio::post(*io_, WithMemory<std::decay_t<Handler>>{std::forward<Handler>(handler), this});
  }

 private:
  // The operation holds the handler (with this pointer) and asio's own header.
  static constexpr size_t kBytes = 128;

  template <class T>
  class Allocator {
   public:
    using value_type = T;
    explicit Allocator(PostBack* owner) : owner_(owner) {}
    template <class U>
    Allocator(const Allocator<U>& other) : owner_(other.owner_) {}

    T* allocate(size_t n) {
      if (n * sizeof(T) <= kBytes && alignof(T) <= alignof(std::max_align_t))
        return reinterpret_cast<T*>(owner_->memory_);
      return static_cast<T*>(::operator new(n * sizeof(T)));
    }
    void deallocate(T* p, size_t) {
      if (reinterpret_cast<std::byte*>(p) != owner_->memory_) ::operator delete(p);
    }
    template <class U>
    bool operator==(const Allocator<U>& other) const { return owner_ == other.owner_; }
    template <class U>
    bool operator!=(const Allocator<U>& other) const { return owner_ != other.owner_; }

   private:
    template <class U>
    friend class Allocator;
    PostBack* owner_;
  };

  template <class Handler>
  struct WithMemory {
    Handler handler;
    PostBack* owner;
    using allocator_type = Allocator<void>;
    allocator_type get_allocator() const noexcept { return allocator_type(owner); }
    void operator()() {
      owner->busy_.reset();  // asio counts the running handler as work until it returns
      handler();
    }
  };

  boost::asio::io_context* io_ = nullptr;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> busy_;
  alignas(std::max_align_t) std::byte memory_[kBytes];
};

}  // namespace volgate
