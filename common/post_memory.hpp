#pragma once
// Memory for one boost::asio::post at a time, inside the object that posts (a request).
//
// A post from a thread that runs no io_context (a cipher helper, librbd's finisher) makes asio
// allocate its operation with the heap, since it keeps recycled memory only for its own
// threads; a request that posts its completion back to its I/O thread from there would
// allocate once per request. Here asio takes the operation's memory from the request instead.
// Asio frees it before it calls the handler, so the handler may post again (or destroy the
// request). An operation larger than the memory (another asio version) uses the heap.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstddef>
#include <new>
#include <utility>

namespace volgate {

class PostMemory {
 public:
  PostMemory() = default;
  PostMemory(const PostMemory&) = delete;
  PostMemory& operator=(const PostMemory&) = delete;

  // boost::asio::post(io, handler), with the operation in this memory. One at a time: the
  // memory is free again once the handler has begun.
  template <class Handler>
  void post(boost::asio::io_context& io, Handler&& handler) {
    boost::asio::post(io, WithMemory<std::decay_t<Handler>>{std::forward<Handler>(handler), this});
  }

 private:
  // The operation holds the handler (with this pointer) and asio's own header.
  static constexpr size_t kBytes = 128;

  template <class T>
  class Allocator {
   public:
    using value_type = T;
    explicit Allocator(PostMemory* memory) : memory_(memory) {}
    template <class U>
    Allocator(const Allocator<U>& other) : memory_(other.memory_) {}

    T* allocate(size_t n) {
      if (n * sizeof(T) <= kBytes && alignof(T) <= alignof(std::max_align_t))
        return reinterpret_cast<T*>(memory_->bytes_);
      return static_cast<T*>(::operator new(n * sizeof(T)));
    }
    void deallocate(T* p, size_t) {
      if (reinterpret_cast<std::byte*>(p) != memory_->bytes_) ::operator delete(p);
    }
    template <class U>
    bool operator==(const Allocator<U>& other) const { return memory_ == other.memory_; }
    template <class U>
    bool operator!=(const Allocator<U>& other) const { return memory_ != other.memory_; }

   private:
    template <class U>
    friend class Allocator;
    PostMemory* memory_;
  };

  template <class Handler>
  struct WithMemory {
    Handler handler;
    PostMemory* memory;
    using allocator_type = Allocator<void>;
    allocator_type get_allocator() const noexcept { return allocator_type(memory); }
    void operator()() { handler(); }
  };

  alignas(std::max_align_t) std::byte bytes_[kBytes];
};

}  // namespace volgate
