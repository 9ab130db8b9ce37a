#include "crypto/helper_hand_off.hpp"

#include <boost/asio/post.hpp>
#include <new>

#include "common/current_context.hpp"

namespace volgate::crypto {

// Gives asio the hand-off's own memory for the operation of its post back; asio frees it
// before it calls the handler, so the handler may start the next hand-off. Something larger
// than the memory (another asio version) falls back to the heap.
template <class T>
class HelperHandOff::PostAllocator {
 public:
  using value_type = T;

  explicit PostAllocator(HelperHandOff* owner) : owner_(owner) {}
  template <class U>
  PostAllocator(const PostAllocator<U>& other) : owner_(other.owner_) {}

  T* allocate(size_t n) {
    if (n * sizeof(T) <= kPostBytes && alignof(T) <= alignof(std::max_align_t))
      return reinterpret_cast<T*>(owner_->post_memory_);
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, size_t) {
    if (reinterpret_cast<std::byte*>(p) != owner_->post_memory_) ::operator delete(p);
  }

  template <class U>
  bool operator==(const PostAllocator<U>& other) const { return owner_ == other.owner_; }
  template <class U>
  bool operator!=(const PostAllocator<U>& other) const { return owner_ != other.owner_; }

 private:
  template <class U>
  friend class PostAllocator;
  HelperHandOff* owner_;
};

struct HelperHandOff::PostBack {
  HelperHandOff* self;

  using allocator_type = PostAllocator<void>;
  allocator_type get_allocator() const noexcept { return allocator_type(self); }
  void operator()() const { self->back_on_io_thread(); }
};

void HelperHandOff::hand_to_helper(Work work, Then then) {
  work_ = work;
  then_ = then;
  io_ = &current_io_context();
  busy_.emplace(io_->get_executor());
  CryptoWorkers::instance().submit(*this);
}

void HelperHandOff::run() noexcept {
  outcome_ = {};
  try {
    work_(*this);
  } catch (const std::exception&) {  // the cipher failed (OpenSSL, libgcrypt) or memory ran out
    outcome_ = std::make_error_code(std::errc::io_error);
  }
  boost::asio::post(*io_, PostBack{this});
}

void HelperHandOff::back_on_io_thread() {
  busy_.reset();  // the io_context's own work count kept it running until here
  then_(*this, outcome_);
}

}  // namespace volgate::crypto
